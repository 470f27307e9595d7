"""Request and response schemas of the slot routes."""

from marshmallow import Schema, ValidationError, fields, validate, validates

from ..fields import MAX_INT, Bool, Int, Number, Str, Timestamp

MODES = ("concurrency", "rate_limit")
# The server checks the bounds against its settings (GCL_LEASE_MIN_SECONDS lowers the minimum, for tests only): the
# document states the defaults.
LEASE_DURATION = {"description": "Seconds, 60-86400 (default 300).", "minimum": 60, "maximum": 86400}


class HolderSchema(Schema):
    type = Str(required=True, validate=validate.Length(min=1, max=64))
    id = Str(required=True, validate=validate.Length(min=1, max=255))
    label = Str(validate=validate.Length(max=255))


class _NamesSlots(Schema):
    names = fields.List(
        Str(validate=validate.Length(min=1, max=255)), required=True, validate=validate.Length(min=1, max=100)
    )
    slots = Int(required=True, validate=validate.Range(min=1, max=MAX_INT))
    mode = Str(validate=validate.OneOf(MODES), load_default="concurrency")


class IncrementSchema(_NamesSlots):
    create_if_missing = Bool(
        metadata={"description": "Accepted for Prefect clients; limits are declarative.", "enum": [False]}
    )
    wait_seconds = Number(
        validate=validate.Range(min=0),
        # The server's GCL_MAX_WAIT_SECONDS (default 30) bounds it: the document states the default.
        metadata={"description": "Wait on the server, in a FIFO queue, up to this long (at most 30 s).", "maximum": 30},
    )
    queue_ticket = fields.UUID(
        metadata={
            "description": "The caller's place in the queue: a UUID the client chooses (so it can withdraw with "
            "DELETE /waiters/{ticket} before it hears back) or the one a 423 returned. Re-issuing with it within 5 s "
            "keeps the place; re-sending an acquire with it while its lease lives returns that same grant (idempotent "
            "retries)."
        },
    )

    @validates("create_if_missing")
    def _no_implicit_limits(self, value, **kwargs):
        if value:
            raise ValidationError("Limits are never created implicitly; create them first (API, CLI or Terraform).")


class IncrementWithLeaseSchema(IncrementSchema):
    lease_duration = Number(metadata=LEASE_DURATION)
    holder = fields.Nested(HolderSchema)


class DecrementSchema(_NamesSlots):
    occupancy_seconds = Number(validate=validate.Range(min=0, max=1e9))  # Prefect sends it; GCL ignores it
    create_if_missing = Bool()


class DecrementWithLeaseSchema(Schema):
    lease_id = fields.UUID(required=True)


class RenewSchema(Schema):
    lease_duration = Number(metadata=LEASE_DURATION)


class MinimalLimitSchema(Schema):
    id = fields.String()
    name = fields.String()
    limit = fields.Integer()


class LeaseGrantSchema(Schema):
    # null when nothing is held: every limit named is inactive (it admits everyone and occupies nothing)
    lease_id = fields.String(allow_none=True)
    limits = fields.List(fields.Nested(MinimalLimitSchema))
    fencing_token = fields.Integer(allow_none=True)
    expires = Timestamp(allow_none=True)
