"""Published event versions stay compatible: today's schemas against the lock of what each
version looked like when published (shared/schema_lock.json), in each version's mode."""

from __future__ import annotations

import pytest
from marshmallow import Schema, fields, validate

from shared.compatibility import (
    Compatibility,
    current_descriptions,
    describe,
    key,
    read_lock,
    violations,
)
from shared.events import COMPATIBILITY, ENVELOPE_COMPATIBILITY, PAYLOAD_SCHEMAS

LOCK = read_lock()
CURRENT = current_descriptions()


def _mode(name: str) -> Compatibility:
    if name == key("envelope", 1):
        return ENVELOPE_COMPATIBILITY
    return next(m for (t, v), m in COMPATIBILITY.items() if key(t, v) == name)


def test_every_version_declares_a_mode_and_is_recorded() -> None:
    assert set(COMPATIBILITY) == set(PAYLOAD_SCHEMAS)
    missing = sorted(set(CURRENT) - set(LOCK))
    assert not missing, (
        f"new versions {missing}: record them with python -m shared.compatibility --add"
    )


# Breaks that were made before the lock recorded allowed values, each accepted with its
# reason; none may be added (a new value needs a new version).
ACCEPTED = {
    "delivery.status.v1": [
        # suppressed (b6cdcf1) and delivered (16083a7, SMS/WhatsApp receipts): read only
        # by member-retargeting's own consumer, released with its producers; an older
        # consumer dead-letters them, replayed once upgraded (see DeliveryStatusV1).
        "status: new values ['delivered', 'suppressed'] (older readers refuse them)",
    ],
}


@pytest.mark.parametrize("name", sorted(LOCK))
def test_published_versions_keep_their_contract(name: str) -> None:
    assert name in CURRENT, f"{name} was published; it may not disappear"
    assert violations(LOCK[name], CURRENT[name], _mode(name)) == ACCEPTED.get(name, [])


class Before(Schema):
    id = fields.String(required=True)
    note = fields.String()
    kind = fields.String(validate=validate.OneOf(["a", "b"]))
    inner = fields.Nested(lambda: Inner(), required=True)  # type: ignore[misc]


class Inner(Schema):
    a = fields.Integer(required=True)


def _changed(**changes: fields.Field | None) -> type[Schema]:
    declared = {**Before._declared_fields, **changes}
    return Schema.from_dict({k: v for k, v in declared.items() if v is not None})


@pytest.mark.parametrize(
    ("change", "modes_that_refuse"),
    [
        ({"extra": fields.String(required=True)}, {"backward", "full"}),
        ({"extra": fields.String()}, set()),
        ({"id": None}, {"forward", "full"}),
        ({"note": None}, set()),
        ({"note": fields.String(required=True)}, {"backward", "full"}),
        ({"id": fields.String()}, {"forward", "full"}),
        ({"id": fields.Integer(required=True)}, {"backward", "forward", "full"}),
        ({"kind": fields.String(validate=validate.OneOf(["a", "b", "c"]))}, {"forward", "full"}),
        ({"kind": fields.String(validate=validate.OneOf(["a"]))}, {"backward", "full"}),
        ({"kind": fields.String()}, {"forward", "full"}),
        ({"note": fields.String(validate=validate.OneOf(["x"]))}, {"backward", "full"}),
        (
            {"inner": fields.Nested(Schema.from_dict({"a": fields.String(required=True)}))},
            {"backward", "forward", "full"},
        ),
    ],
    ids=[
        "new required",
        "new optional",
        "required removed",
        "optional removed",
        "became required",
        "became optional",
        "type changed",
        "a value added",
        "a value removed",
        "values no longer fixed",
        "values newly fixed",
        "nested type changed",
    ],
)
def test_the_checker_knows_each_mode(change: dict, modes_that_refuse: set[str]) -> None:
    before, after = describe(Before), describe(_changed(**change))
    refused = {m.value for m in Compatibility if violations(before, after, m)}
    assert refused == modes_that_refuse
