"""Request schemas of the Prefect-client routes, and the shape of the events Prefect's SDK sends."""

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from ..fields import Str

# Prefect's SDK names the limits in its concurrency events by resource id: this prefix, then the limit's id.
LIMIT_RESOURCE_PREFIX = "prefect.concurrency-limit."
LIMIT_EVENTS = ("prefect.concurrency-limit.acquired", "prefect.concurrency-limit.released")


class CsrfTokenQuerySchema(Schema):
    client = Str(required=True, validate=validate.Length(min=1, max=255), metadata={"description": "Client id"})


class RelatedSchema(Schema):
    class Meta:
        unknown = INCLUDE

    resource_id = Str(data_key="prefect.resource.id", required=True, validate=validate.Length(max=1024))


class ResourceSchema(RelatedSchema):
    name = Str(data_key="prefect.resource.name", validate=validate.Length(max=1024))
    slots = Str(data_key="slots-acquired", validate=validate.Length(max=32))


class EventSchema(Schema):
    """One event as Prefect's SDK sends it (prefect.events.Event); fields GCL does not keep are let through."""

    class Meta:
        unknown = INCLUDE

    event = Str(required=True, validate=validate.Length(min=1, max=1024))
    id = fields.UUID(required=True)
    occurred = Str(required=True, validate=validate.Length(max=64))
    resource = fields.Nested(ResourceSchema, required=True)
    related = fields.List(fields.Nested(RelatedSchema), load_default=list, validate=validate.Length(max=500))
    follows = fields.UUID(allow_none=True, load_default=None)

    @validates_schema
    def _slots_are_a_count(self, data, **kwargs):
        slots = data["resource"].get("slots")
        if data["event"] in LIMIT_EVENTS and slots is not None and not (slots.isdigit() and len(slots) <= 9):
            raise ValidationError("slots-acquired must be a whole number.", "resource")
