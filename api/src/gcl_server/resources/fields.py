"""Strict JSON fields: no silent coercion of strings, booleans or floats into the wrong type."""

import datetime as dt
import math

from apispec import BasePlugin
from apispec.ext.marshmallow.common import resolve_schema_cls
from marshmallow import ValidationError, fields, validate

from .. import names

MAX_INT = 2**31 - 1
INT64 = validate.Range(min=-(2**63), max=2**63 - 1)  # what the database stores: the bound of an Int declaring none


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


def check_name(value):
    problem = names.problem(value)
    if problem:
        raise ValidationError(problem)


def name_field(**kwargs):
    """A limit's name: names.problem() decides, and the document shows the same rule (pattern, not, maxLength)."""
    rule = {key: value for key, value in names.json_schema().items() if key in ("pattern", "not", "description")}
    metadata = {**rule, **kwargs.pop("metadata", {})}
    return Str(validate=[validate.Length(min=1, max=names.MAX_LENGTH), check_name], metadata=metadata, **kwargs)


def slots_limit_field(**kwargs):
    return Int(validate=validate.Range(min=0, max=MAX_INT), **kwargs)


def decay_field(**kwargs):
    return Number(validate=validate.Range(min=0, max=1e9), **kwargs)


class SchemaRules(BasePlugin):
    """Shows a schema's rules across its fields in its OpenAPI component: the JSON Schema keywords (anyOf, ...) of its
    class attribute OPENAPI_RULES, declared beside the fields they bind."""

    def schema_helper(self, name, definition, **kwargs):
        schema = kwargs.get("schema")
        return dict(getattr(resolve_schema_cls(schema), "OPENAPI_RULES", {})) if schema is not None else None
