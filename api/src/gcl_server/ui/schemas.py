"""Schemas of the web UI's compact read routes (/api/ui)."""

from marshmallow import Schema, fields, validate

from ..resources.fields import Timestamp
from ..resources.limits.schemas import LeaseSchema, WaiterSchema
from .summary import SORTS


class UiPageQuerySchema(Schema):
    q = fields.String(load_default="", validate=validate.Length(max=255), metadata={"description": "Name contains"})
    sort = fields.String(load_default="name", validate=validate.OneOf(SORTS))
    order = fields.String(load_default="asc", validate=validate.OneOf(("asc", "desc")))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**63 - 1))  # the database's integers
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class UiRowSchema(Schema):
    id = fields.String()
    name = fields.String()
    limit = fields.Integer()
    active = fields.Boolean()
    slot_decay_per_second = fields.Float()
    occupancy = fields.Float(metadata={"description": "Exact occupied slots (decaying for rate limits)"})
    active_slots = fields.Integer(metadata={"description": "Whole occupied slots: ceil(occupancy)"})
    denied_slots = fields.Integer()
    queued = fields.Integer(metadata={"description": "Requests waiting on the server"})
    queued_slots = fields.Integer(metadata={"description": "Slots those requests ask for"})
    updated = Timestamp()


class UiPageSchema(Schema):
    now = Timestamp(metadata={"description": "The server's clock when the figures were taken"})
    total = fields.Integer(metadata={"description": "Limits matching q"})
    offset = fields.Integer()
    items = fields.List(fields.Nested(UiRowSchema))


class UiDetailRowSchema(UiRowSchema):
    created = Timestamp()
    etag = fields.String(metadata={"description": "For If-Match on a change"})
    avg_slot_occupancy_seconds = fields.Float()


class UiRateBucketSchema(Schema):
    start = Timestamp()
    slots = fields.Integer()
    rate = fields.Float()


class UiRateSchema(Schema):
    bucket_seconds = fields.Integer()
    buckets = fields.List(fields.Nested(UiRateBucketSchema))


class UiActivityItemSchema(Schema):
    id = fields.Integer()
    at = fields.String()
    kind = fields.String()
    actor = fields.String(allow_none=True)
    lease_id = fields.String(allow_none=True)
    slots = fields.Integer(allow_none=True)
    detail = fields.Dict(allow_none=True)


class UiDetailSchema(Schema):
    now = Timestamp()
    limit = fields.Nested(UiDetailRowSchema)
    leases = fields.List(fields.Nested(LeaseSchema))
    waiters = fields.List(fields.Nested(WaiterSchema))
    activity = fields.List(fields.Nested(UiActivityItemSchema))
    rate = fields.Nested(UiRateSchema, allow_none=True)


class UiSessionSchema(Schema):
    keys_required = fields.Boolean(metadata={"description": "The server has API keys"})
    scope = fields.String(
        allow_none=True, metadata={"description": "The scope of the key sent (admin without keys); null: no valid key"}
    )
