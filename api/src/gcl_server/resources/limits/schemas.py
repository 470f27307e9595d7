"""Request and response schemas of the limits routes."""

from marshmallow import Schema, fields, validate

from ...services import limits as service
from ..fields import Bool, Int, Str, Timestamp, decay_field, name_field, slots_limit_field


class LimitCreateSchema(Schema):
    name = name_field(required=True)
    limit = slots_limit_field(required=True)
    active = Bool()
    slot_decay_per_second = decay_field()
    # Prefect's create body carries both (its CLI and the official Terraform provider send active_slots: 0).
    active_slots = Int(
        validate=validate.Range(min=0, max=2**31 - 1),
        metadata={"description": "Accepted for Prefect's clients and ignored: a new limit has no holders."},
    )
    denied_slots = Int(validate=validate.Range(min=0, max=2**31 - 1), metadata={"description": "Default 0."})


class LimitUpdateSchema(Schema):
    # services.limits.runtime_write's rule: a body that sets a managed field may carry any counters (ignored, so a
    # declarative write never ends a lease); without one, active_slots can only be 0 (Prefect's reset).
    OPENAPI_RULES = {
        "anyOf": [
            *({"required": [field]} for field in service.MANAGED),
            {"properties": {"active_slots": {"enum": [0]}}},
        ]
    }

    name = name_field()
    limit = slots_limit_field()
    active = Bool()
    slot_decay_per_second = decay_field()
    active_slots = Int(
        validate=validate.Range(min=0, max=2**31 - 1),
        metadata={
            "description": "Ignored when the body sets any managed field (a declarative write never ends a lease); "
            "alone, only 0: Prefect's reset, which revokes the limit's leases."
        },
    )
    denied_slots = Int(
        validate=validate.Range(min=0, max=2**31 - 1),
        metadata={"description": "Ignored when the body sets any managed field."},
    )


class LimitPutSchema(Schema):
    limit = slots_limit_field(required=True)
    active = Bool(metadata={"description": "Default true."})
    slot_decay_per_second = decay_field(metadata={"description": "Default 0."})


class NamePathSchema(Schema):
    """The path of a PUT names the limit it creates or replaces: the name rule applies to it as in a body."""

    id_or_name = name_field(required=True)


class LimitFilterSchema(Schema):
    offset = Int(validate=validate.Range(min=0, max=2**63 - 1), load_default=0)  # the database's integers
    limit = Int(validate=validate.Range(min=1, max=200), load_default=200)
    names = fields.List(Str(), validate=validate.Length(max=1000))
    name_prefix = Str(validate=validate.Length(max=255))
    active = Bool()


class LimitSchema(Schema):
    id = fields.String()
    created = Timestamp()
    updated = Timestamp()
    name = fields.String()
    limit = fields.Integer()
    active = fields.Boolean()
    slot_decay_per_second = fields.Float()
    avg_slot_occupancy_seconds = fields.Float()
    active_slots = fields.Integer(attribute="runtime.active_slots")
    denied_slots = fields.Integer(attribute="runtime.denied_slots")
    occupancy = fields.Float(attribute="runtime.occupancy", metadata={"description": "Exact occupied slots."})


class LeaseSchema(Schema):
    lease_id = fields.String(allow_none=True, metadata={"description": "Shown to admin keys only (null otherwise)"})
    slots = fields.Integer()
    holder = fields.Dict()
    acquired = Timestamp()
    expires = Timestamp()
    fencing_token = fields.Integer()
    names = fields.List(fields.String())


class WaiterSchema(Schema):
    position = fields.Integer()
    slots = fields.Integer()
    names = fields.List(fields.String())
    holder = fields.Dict(allow_none=True)
    attached = fields.Boolean(metadata={"description": "False while the waiter's client re-issues its request"})
    waiting_since = Timestamp()


class IfMatchSchema(Schema):
    class Meta:
        unknown = "exclude"

    if_match = Str(data_key="If-Match")


class ActivityQuerySchema(Schema):
    limit = fields.Integer(validate=validate.Range(min=1, max=1000), load_default=100)
    before = fields.Integer(
        validate=validate.Range(min=1, max=2**63 - 1), metadata={"description": "Only records older than this id"}
    )


class ActivitySchema(Schema):
    id = fields.Integer()
    at = fields.String(metadata={"description": "ISO 8601, UTC"})
    limit_id = fields.String()
    name = fields.String(allow_none=True)
    kind = fields.String(
        metadata={
            "description": "created, updated, deleted, reset, acquired, released, expired, revoked, timeout, event"
        }
    )
    actor = fields.String(allow_none=True, metadata={"description": '"key:<fingerprint>" or "anonymous"'})
    lease_id = fields.String(allow_none=True)
    slots = fields.Integer(allow_none=True)
    detail = fields.Dict(allow_none=True)
