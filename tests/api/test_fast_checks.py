"""The fast path's compiled checks (fast/checks.py) accept exactly what the schemas' own load() accepts, and load the
same values: on generated bodies, hostile ones included (huge ints, bools for numbers, NaN and infinities, unknown and
nested keys, wrong types). Its compiled answers dump exactly what the response schemas' dump() writes."""

import math
import uuid

import pytest
from gcl_server.fast import checks
from gcl_server.resources.slots.schemas import (
    DecrementSchema,
    DecrementWithLeaseSchema,
    HolderSchema,
    IncrementSchema,
    IncrementWithLeaseSchema,
    LeaseGrantSchema,
    MinimalLimitSchema,
    RenewSchema,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, validate

SCHEMAS = [
    IncrementSchema,
    IncrementWithLeaseSchema,
    DecrementWithLeaseSchema,
    DecrementSchema,
    HolderSchema,
    RenewSchema,
]
SAMPLE_UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")

EDGE_INTS = [0, 1, -1, 59, 60, 86400, 86401, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**400]
EDGE_FLOATS = [0.0, -0.0, 0.5, 30.0, 1e9, 1e9 + 1, 1e308, -1e-300]
EDGE_STRINGS = [
    "",
    "a",
    "a" * 64,
    "a" * 65,
    "a" * 255,
    "a" * 256,
    "concurrency",
    "rate_limit",
    "Concurrency",
    "\ud800",
    str(SAMPLE_UUID),
    str(SAMPLE_UUID).upper(),
    SAMPLE_UUID.hex,
    "{" + str(SAMPLE_UUID) + "}",
    SAMPLE_UUID.urn,
    str(SAMPLE_UUID)[:-1],
    " " + str(SAMPLE_UUID),
]
scalars = st.one_of(
    st.integers(),
    st.sampled_from(EDGE_INTS),
    st.floats(),  # NaN and both infinities included
    st.sampled_from(EDGE_FLOATS),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.sampled_from(EDGE_STRINGS),
    st.uuids().map(str),
)
KEYS = ["names", "slots", "mode", "type", "id", "label", "lease_id", "holder", "extra", "create_if_missing"]
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    ),
    max_leaves=12,
)
name_lists = st.one_of(
    st.lists(st.sampled_from(["a", "b", "", "a" * 255, "a" * 256]), max_size=4),
    st.sampled_from([["a"] * 100, ["a"] * 101]),
)
holders = st.fixed_dictionaries(
    {}, optional={"type": st.one_of(st.text(max_size=3), values), "id": st.text(max_size=3), "label": values}
)


def bodies(schema):
    """Bodies near the schema's own fields (valid ones often) or anything JSON at all, an unknown key now and then."""
    likely = {
        "names": name_lists,
        "slots": st.integers(-1, 3),
        "holder": holders,
        "mode": st.sampled_from(EDGE_STRINGS),
        "lease_id": st.sampled_from(EDGE_STRINGS),
        "create_if_missing": st.booleans(),
        "lease_duration": st.sampled_from(EDGE_INTS + EDGE_FLOATS),
        "wait_seconds": st.sampled_from(EDGE_INTS + EDGE_FLOATS),
    }
    field_values = {name: st.one_of(likely.get(name, values), values) for name in schema.load_fields}
    required = {name: field_values[name] for name, field in schema.load_fields.items() if field.required}
    optional = {name: value for name, value in field_values.items() if name not in required}
    shaped = st.fixed_dictionaries(required, optional=optional)
    hostile = st.fixed_dictionaries(required, optional={**optional, "unknown": values})
    valid = {
        "names": st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=3),
        "slots": st.integers(1, 3),
        "type": st.text(min_size=1, max_size=5),
        "id": st.text(min_size=1, max_size=5),
        "label": st.text(max_size=5),
        "lease_id": st.uuids().map(str),
        "queue_ticket": st.uuids().map(str),
        "mode": st.sampled_from(["concurrency", "rate_limit"]),
        "create_if_missing": st.just(False),
        "wait_seconds": st.floats(0, 30),
        "lease_duration": st.integers(60, 86400),
        "occupancy_seconds": st.floats(0, 1e9),
    }
    good = {name: valid.get(name, likely.get(name, values)) for name in schema.load_fields}
    valid_bodies = st.fixed_dictionaries(
        {name: good[name] for name in required}, optional={name: good[name] for name in optional}
    )
    # A valid body with one field (or an unknown one) set to any scalar: a bool, NaN, a huge int, null, ...
    one_off = st.tuples(valid_bodies, st.sampled_from([*schema.load_fields, "unknown"]), scalars).map(
        lambda parts: {**parts[0], parts[1]: parts[2]}
    )
    return st.one_of(valid_bodies, one_off, shaped, hostile, values)


def typed(value):
    """The value with every type spelled out: 1 and 1.0 and True differ, and NaN equals itself."""
    if isinstance(value, dict):
        return ("dict", sorted((key, typed(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def loaded_by_schema(schema, body):
    try:
        return schema.load(body)
    except ValidationError:
        return checks.REJECT


@pytest.mark.parametrize("schema_cls", SCHEMAS, ids=lambda cls: cls.__name__)
def test_compiled_check_agrees_with_schema_load(schema_cls):
    schema = schema_cls()
    check = checks.compile_load(schema)
    seen = {"accepted": 0}

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(bodies(schema))
    def agree(body):
        expected, got = loaded_by_schema(schema, body), check(body)
        assert (got is checks.REJECT) == (expected is checks.REJECT), body
        if got is not checks.REJECT:
            seen["accepted"] += 1
            assert typed(got) == typed(expected), body

    agree()
    # Not a check that rejects everything (and so falls back to load() every time).
    assert seen["accepted"] > 20


BASES = {
    IncrementSchema: {"names": ["a"], "slots": 1},
    IncrementWithLeaseSchema: {"names": ["a"], "slots": 1, "holder": {"type": "t", "id": "1"}},
    DecrementWithLeaseSchema: {"lease_id": str(SAMPLE_UUID)},
    DecrementSchema: {"names": ["a"], "slots": 1},
    HolderSchema: {"type": "t", "id": "1"},
    RenewSchema: {"lease_duration": 60},
}
HOSTILE = [
    *EDGE_INTS,
    -(10**400),
    *EDGE_FLOATS,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    None,
    *EDGE_STRINGS,
    [],
    ["a"],
    [1],
    {},
    {"type": "t", "id": "1"},
    {"type": "t", "id": "1", "x": 1},
]


@pytest.mark.parametrize("schema_cls", SCHEMAS, ids=lambda cls: cls.__name__)
def test_every_field_set_to_every_hostile_value(schema_cls):
    """Each field of a valid body (and an unknown one) in turn set to each hostile value: the same answer."""
    schema = schema_cls()
    check = checks.compile_load(schema)
    for name in [*schema.load_fields, "unknown"]:
        for value in HOSTILE:
            body = {**BASES[schema_cls], name: value}
            expected, got = loaded_by_schema(schema, body), check(body)
            assert (got is checks.REJECT) == (expected is checks.REJECT), body
            if got is not checks.REJECT:
                assert typed(got) == typed(expected), body


@pytest.mark.parametrize(
    ("schema_cls", "body"),
    [
        (IncrementWithLeaseSchema, {"names": ["a"], "slots": 1, "lease_duration": 60}),
        (IncrementWithLeaseSchema, {"names": ["a", "b"], "slots": 2, "holder": {"type": "t", "id": "1", "label": ""}}),
        (
            IncrementSchema,
            {"names": ["a"], "slots": 1, "mode": "rate_limit", "wait_seconds": 0, "create_if_missing": 0},
        ),
        (IncrementSchema, {"names": ["a"], "slots": 1, "create_if_missing": True}),  # the schema's @validates hook
        (IncrementSchema, {"names": ["a"], "slots": 1, "create_if_missing": False, "queue_ticket": SAMPLE_UUID.urn}),
        (DecrementWithLeaseSchema, {"lease_id": str(SAMPLE_UUID)}),
        (DecrementWithLeaseSchema, {"lease_id": "{" + SAMPLE_UUID.hex + "}"}),
        (DecrementWithLeaseSchema, {"lease_id": None}),
        (IncrementWithLeaseSchema, {"names": ["a"], "slots": 1, "lease_duration": float("nan")}),
        (IncrementWithLeaseSchema, {"names": ["a"], "slots": 1, "holder": {"type": "t", "id": "1", "x": 1}}),
        (IncrementWithLeaseSchema, {"names": ["a"], "slots": 2**31}),
        (IncrementWithLeaseSchema, {"names": ["a"], "slots": 1.0}),
    ],
)
def test_known_bodies(schema_cls, body):
    schema = schema_cls()
    got, expected = checks.compile_load(schema)(body), loaded_by_schema(schema, body)
    assert (got is checks.REJECT) == (expected is checks.REJECT)
    if got is not checks.REJECT:
        assert typed(got) == typed(expected)


def test_what_the_compiler_cannot_express_is_refused_at_import():
    class Keyed(Schema):
        value = fields.Integer(data_key="v")

    class Loose(Schema):
        value = fields.Integer()  # marshmallow's own Integer takes "1": not one of the strict fields

    class Custom(Schema):
        value = fields.String(validate=validate.Regexp("a+"))

    for schema_cls in (Keyed, Loose, Custom):
        with pytest.raises(checks.Unsupported):
            checks.compile_load(schema_cls())


class Row:
    """A limit row as the engine hands it to the answer: attributes, not keys."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


dump_scalars = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63),
    st.floats(-1e12, 1e12),  # a float limit or token dumps as an int, a float timestamp as ISO 8601
    st.text(max_size=8),
    st.uuids(),
    st.sampled_from(EDGE_STRINGS),
)
limit_fields = st.fixed_dictionaries(
    {}, optional={"id": dump_scalars, "name": dump_scalars, "limit": st.one_of(st.none(), st.integers(0, 2**31))}
)
limit_objects = st.one_of(limit_fields, limit_fields.map(lambda fields: Row(**fields)))
grants = st.fixed_dictionaries(
    {},
    optional={
        "lease_id": dump_scalars,
        "limits": st.one_of(st.none(), st.lists(limit_objects, max_size=3)),
        "fencing_token": st.one_of(st.none(), st.integers(0, 2**63)),
        "expires": st.one_of(st.none(), st.floats(0, 4e9)),
    },
)


@pytest.mark.parametrize(
    ("schema", "objects"),
    [
        (LeaseGrantSchema(), st.one_of(grants, grants.map(lambda fields: Row(**fields)))),
        (MinimalLimitSchema(many=True), st.lists(limit_objects, max_size=4)),
    ],
    ids=["LeaseGrantSchema", "MinimalLimitSchema(many=True)"],
)
def test_compiled_dump_agrees_with_schema_dump(schema, objects):
    shape = checks.compile_dump(schema)

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(objects)
    def agree(obj):
        assert typed(shape(obj)) == typed(schema.dump(obj))

    agree()


def test_what_the_dump_compiler_cannot_express_is_refused_at_import():
    class Keyed(Schema):
        value = fields.Integer(data_key="v")

    class Defaulted(Schema):
        value = fields.String(dump_default="x")

    class Other(Schema):
        value = fields.Float()

    class AsString(Schema):
        value = fields.Integer(as_string=True)

    for schema_cls in (Keyed, Defaulted, Other, AsString):
        with pytest.raises(checks.Unsupported):
            checks.compile_dump(schema_cls())
