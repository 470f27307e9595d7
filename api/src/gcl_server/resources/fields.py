"""Strict JSON fields: no silent coercion of strings, booleans or floats into the wrong type."""

import datetime as dt
import math

from marshmallow import ValidationError, fields, validate

MAX_INT = 2**31 - 1
BANNED_NAME_CHARACTERS = "/%&><"


class Int(fields.Integer):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Must be a whole number.")
        return super()._deserialize(value, attr, data, **kwargs)


class Number(fields.Float):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValidationError("Must be a finite number.")
        return float(value)


class Bool(fields.Boolean):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("Must be true or false.")
        return value


class Str(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("Must be a string.")
        return value


def iso_timestamp(value):
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat().replace("+00:00", "Z")


class Timestamp(fields.Field):
    """Epoch seconds in the database, ISO 8601 UTC on the wire."""

    def _serialize(self, value, attr, obj, **kwargs):
        return iso_timestamp(value)


def check_name(value):
    banned = sorted({c for c in value if c in BANNED_NAME_CHARACTERS})
    if banned:
        raise ValidationError(f"Name must not contain any of / % & > < (found {' '.join(banned)}).")
    if value.strip() != value or not value.strip():
        raise ValidationError("Name must not be blank or start or end with white space.")


def name_field(**kwargs):
    return Str(validate=[validate.Length(min=1, max=255), check_name], **kwargs)


def slots_limit_field(**kwargs):
    return Int(validate=validate.Range(min=0, max=MAX_INT), **kwargs)


def decay_field(**kwargs):
    return Number(validate=validate.Range(min=0, max=1e9), **kwargs)


def validate_path_name(value):
    """The name in a PUT path obeys the same rule as a name in a body."""
    from ..errors import Invalid

    try:
        validate.Length(min=1, max=255)(value)
        check_name(value)
    except ValidationError as exc:
        message = " ".join(exc.messages)
        raise Invalid(f"Invalid request: name: {message}", errors={"path": {"name": exc.messages}}) from None
    return value
