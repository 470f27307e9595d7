"""A schema's load and dump compiled once into plain Python, from the schema's own declared fields and validators.

compile_load(schema) walks the fields marshmallow loads (their types, required, load_default, allow_none, Range /
Length / OneOf, any other validator and the schema's @validates hooks, which it calls as they are) and returns
check(body): the dict schema.load(body) returns, or REJECT. A schema using anything the compiler does not know (a
field type, data_key, schema-level hooks, unknown other than RAISE) raises Unsupported at import time; the caller then
uses schema.load itself. REJECT carries no message: the caller falls back to schema.load for the schema's own error.
tests/api/test_fast_checks.py holds check and schema.load to the same answers on generated bodies, hostile ones too.

compile_dump(schema) does the same for the answer: shape(obj) is what schema.dump(obj) returns, for the field types
the slot routes answer with (strings, integers, timestamps, lists and nested schemas); anything else raises
Unsupported at import time and the caller dumps through marshmallow. tests/api/test_fast_checks.py holds shape and
schema.dump to the same output on generated objects (dicts and attribute objects, missing keys, None).
"""

import math
import operator
import uuid

from marshmallow import RAISE, ValidationError, fields, missing, validate
from marshmallow.decorators import VALIDATES

from ..resources.fields import Bool, Int, Number, Str, Timestamp, iso_timestamp

REJECT = object()


class Unsupported(Exception):
    """The schema declares something compile_load cannot express exactly."""


def _int(value):
    return value if type(value) is int else REJECT  # a JSON whole number; never a bool (type(True) is bool)


def _number(value):
    if type(value) is float:
        return value if math.isfinite(value) else REJECT
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return REJECT
    return REJECT


def _bool(value):
    return value if type(value) is bool else REJECT


def _str(value):
    return value if type(value) is str else REJECT


def _uuid(value):
    if type(value) is not str:
        return REJECT
    try:
        return uuid.UUID(value)
    except ValueError:
        return REJECT


_SCALARS = {Int: _int, Number: _number, Bool: _bool, Str: _str, fields.UUID: _uuid}


def _validator(rule):
    """A predicate for one declared validator: True when the value passes."""
    kind = type(rule)
    if kind is validate.Range:
        low, high = rule.min, rule.max
        above = operator.le if rule.min_inclusive else operator.lt
        below = operator.ge if rule.max_inclusive else operator.gt
        return lambda v: (low is None or above(low, v)) and (high is None or below(high, v))
    if kind is validate.Length:
        if rule.equal is not None:
            return lambda v: len(v) == rule.equal
        low = 0 if rule.min is None else rule.min
        high = math.inf if rule.max is None else rule.max
        return lambda v: low <= len(v) <= high
    if kind is validate.OneOf:
        choices = rule.choices

        def one_of(v):
            try:
                return v in choices
            except TypeError:
                return False

        return one_of
    if isinstance(rule, validate.Validator):
        raise Unsupported(f"validator {rule!r}")

    def call(v):  # a plain function, as marshmallow calls it
        try:
            return rule(v) is not False
        except ValidationError:
            return False

    return call


def _field(field):
    """check(value) -> the loaded value or REJECT, for a value that is present."""
    kind = type(field)
    if kind in _SCALARS:
        convert = _SCALARS[kind]
    elif kind is fields.List:
        inner = _field(field.inner)

        def convert(value):
            if type(value) is not list:
                return REJECT
            out = [inner(item) for item in value]
            return REJECT if any(item is REJECT for item in out) else out

    elif kind is fields.Nested:
        if field.many or field.only or field.exclude or field.unknown not in (None, RAISE):
            raise Unsupported(f"nested options of {field!r}")
        convert = compile_load(field.schema)
    else:
        raise Unsupported(f"field type {kind.__name__}")
    rules = tuple(_validator(rule) for rule in field.validators)
    allow_none = field.allow_none

    def check(value):
        if value is None:
            return None if allow_none else REJECT
        value = convert(value)
        if value is REJECT:
            return REJECT
        for rule in rules:
            if not rule(value):
                return REJECT
        return value

    return check


def compile_load(schema):
    """check(body) -> what schema.load(body) returns, or REJECT when it would raise ValidationError."""
    hooks = schema._hooks
    if schema.many or schema.partial or schema.unknown != RAISE or any(hooks[tag] for tag in hooks if tag != VALIDATES):
        raise Unsupported(f"schema options or hooks of {type(schema).__name__}")
    plan = []
    for name, field in schema.load_fields.items():
        if field.data_key not in (None, name) or field.attribute not in (None, name):
            raise Unsupported(f"{name}: data_key or attribute")
        plan.append((name, _field(field), field.required, field.load_default))
    known = frozenset(name for name, *_ in plan)
    field_hooks = []
    for attr, _, kwargs in hooks[VALIDATES]:
        for name in kwargs["field_names"]:
            if name not in known:
                raise Unsupported(f"@validates on {name}")
            field_hooks.append((name, getattr(schema, attr)))

    def check(body):
        if type(body) is not dict or not known.issuperset(body):
            return REJECT
        out = {}
        for name, convert, required, default in plan:
            if name in body:
                value = convert(body[name])
                if value is REJECT:
                    return REJECT
                out[name] = value
            elif required:
                return REJECT
            elif default is not missing:
                out[name] = default() if callable(default) else default
        for name, hook in field_hooks:
            if name in out:
                try:
                    hook(out[name], data_key=name)
                except ValidationError:
                    return REJECT
        return out

    return check


def _text(value):
    return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


def _whole(value):
    return None if value is None else int(value)


def _timestamp(value):
    return iso_timestamp(value)


# The dump of each field type, as marshmallow's own _serialize does it (String, Integer, Timestamp).
_DUMPS = {fields.String: _text, Str: _text, fields.Integer: _whole, Int: _whole, Timestamp: _timestamp}


def _dump_field(field):
    """dump(value) for a present value."""
    kind = type(field)
    if kind in _DUMPS and not (kind in (fields.Integer, Int) and field.as_string):
        return _DUMPS[kind]
    if kind is fields.List:
        inner = _dump_field(field.inner)
        return lambda value: None if value is None else [inner(item) for item in value]
    if kind is fields.Nested:
        if field.only or field.exclude:
            raise Unsupported(f"nested options of {field!r}")
        nested = compile_dump(field.schema)
        if field.many:
            return lambda value: None if value is None else [nested(item) for item in value]
        return lambda value: None if value is None else nested(value)
    raise Unsupported(f"field type {kind.__name__}")


def compile_dump(schema):
    """shape(obj) -> what schema.dump(obj) returns (a list for a many=True schema)."""
    hooks = schema._hooks
    if any(hooks[tag] for tag in hooks if tag != VALIDATES):
        raise Unsupported(f"schema hooks of {type(schema).__name__}")
    plan = []
    for name, field in schema.dump_fields.items():
        if field.data_key not in (None, name) or field.attribute not in (None, name):
            raise Unsupported(f"{name}: data_key or attribute")
        if field.dump_default is not missing:
            raise Unsupported(f"{name}: dump_default")
        plan.append((name, _dump_field(field)))

    def one(obj):
        out = {}
        if type(obj) is dict:
            for name, dump in plan:
                if name in obj:
                    out[name] = dump(obj[name])
        else:
            for name, dump in plan:
                value = getattr(obj, name, missing)
                if value is not missing:
                    out[name] = dump(value)
        return out

    if schema.many:
        return lambda objs: [one(obj) for obj in objs]
    return one
