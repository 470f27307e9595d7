"""Strict JSON fields: no silent coercion of strings, booleans or floats into the wrong type."""

import datetime as dt
import math
import unicodedata
import uuid

from marshmallow import ValidationError, fields, validate

MAX_INT = 2**31 - 1
INT64 = validate.Range(min=-(2**63), max=2**63 - 1)  # what the database stores: the bound of an Int declaring none
BANNED_NAME_CHARACTERS = "/%&><"


class Int(fields.Integer):
    """A whole number (never a bool, float or string), always bounded: by its own Range, else by INT64."""

    def __init__(self, *args, validate=None, **kwargs):
        validators = [] if validate is None else list(validate) if isinstance(validate, list | tuple) else [validate]
        if not any(isinstance(v, type(INT64)) for v in validators):
            validators.append(INT64)
        super().__init__(*args, validate=validators, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Must be a whole number.")
        return super()._deserialize(value, attr, data, **kwargs)


class Number(fields.Float):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Must be a finite number.")
        try:
            value = float(value)  # an int beyond any float raises OverflowError
        except OverflowError:
            raise ValidationError("Must be a finite number.") from None
        if not math.isfinite(value):
            raise ValidationError("Must be a finite number.")
        return value


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


# Control, format (bidirectional overrides, zero-width), separator, surrogate, private and unassigned code points:
# invisible or misleading in a list, a log line or a terminal.
UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def _is_uuid(value):
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def check_name(value):
    banned = sorted({c for c in value if c in BANNED_NAME_CHARACTERS})
    if banned:
        raise ValidationError(f"Name must not contain any of / % & > < (found {' '.join(banned)}).")
    if value.strip() != value or not value.strip():
        raise ValidationError("Name must not be blank or start or end with white space.")
    unsafe = sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) in UNSAFE_CATEGORIES})
    if unsafe:
        raise ValidationError(f"Name must not contain control or invisible characters (found {' '.join(unsafe)}).")
    if value in (".", ".."):
        raise ValidationError("Name must not be . or .. (HTTP clients rewrite them out of a URL).")
    if _is_uuid(value):
        raise ValidationError("Name must not be a UUID: a path segment that parses as one is read as a limit's id.")


NAME_RULES = (
    "1-255 characters; none of / % & > <; no control or invisible characters (Unicode Cc, Cf, Cs, Co, Cn, Zl, Zp); "
    "no white space at either end; not . or ..; not a UUID (a path segment that parses as one is read as an id)."
)


def name_field(**kwargs):
    metadata = {"description": NAME_RULES, **kwargs.pop("metadata", {})}
    return Str(validate=[validate.Length(min=1, max=255), check_name], metadata=metadata, **kwargs)


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
