"""Schema compatibility: what a published event version may still become.

Every ``(event type, version)`` declares a :class:`Compatibility` mode (in
:data:`shared.events.COMPATIBILITY`). ``shared/schema_lock.json`` records each version's
fields as they were when it was published; ``tests/contract/test_compatibility.py`` holds
today's schemas to it, as sentry-kafka-schemas' CI does, so a change that would break a
producer or a consumer running the other side's older code fails before it merges.

A change that the mode forbids needs a new version (``("lead.scored", 2)``), with its own
schema and examples. Adding a version: ``python -m shared.compatibility --add`` records
the versions not in the lock yet; it never rewrites a recorded one.

Modes (readers tolerate unknown fields: payloads are loaded with ``unknown=EXCLUDE``):

* ``backward`` — consumers on this schema read events written before the change: no field
  may become required (old events lack it), no field may change type, and a field with a
  fixed set of values (``OneOf``) may lose none (old events may carry it).
* ``forward`` — consumers still on the old schema read events written after the change: no
  required field may disappear, no field may change type, and a fixed set of values may
  gain none (older readers refuse it); optional fields may come.
* ``full`` — both: only optional fields may be added or removed. Funnel's default.
* ``none`` — not checked (only for a version that has never been published).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields, validate

LOCK_FILE = "schema_lock.json"


class Compatibility(StrEnum):
    BACKWARD = "backward"
    FORWARD = "forward"
    FULL = "full"
    NONE = "none"


def describe(schema: type[Schema] | Schema) -> dict[str, Any]:
    """A schema's fields as the lock records them: name → required, type, nested fields."""
    instance = schema() if isinstance(schema, type) else schema
    out: dict[str, Any] = {}
    for name, field in sorted(instance.fields.items()):
        if field.dump_only:
            continue
        entry: dict[str, Any] = {"required": bool(field.required), "type": type(field).__name__}
        inner = field.inner if isinstance(field, fields.List) else field
        choices = _choices(inner)
        if choices is not None:
            entry["choices"] = choices
        if isinstance(inner, fields.Nested):
            entry["fields"] = describe(inner.schema)
        out[field.data_key or name] = entry
    return out


def _choices(field: fields.Field) -> list[str] | None:
    """The values a field is limited to (its ``OneOf`` validators), sorted; None if any."""
    found: set[str] | None = None
    for validator in field.validators:
        if isinstance(validator, validate.OneOf):
            allowed = {str(choice) for choice in validator.choices}
            found = allowed if found is None else found & allowed
    return sorted(found) if found is not None else None


def violations(
    locked: Mapping[str, Any], current: Mapping[str, Any], mode: Compatibility, path: str = ""
) -> list[str]:
    """What in ``current`` breaks ``mode`` against ``locked``; empty when compatible."""
    if mode is Compatibility.NONE:
        return []
    problems: list[str] = []
    backward = mode in (Compatibility.BACKWARD, Compatibility.FULL)
    forward = mode in (Compatibility.FORWARD, Compatibility.FULL)
    for name in sorted(locked.keys() | current.keys()):
        where = f"{path}{name}"
        old, new = locked.get(name), current.get(name)
        if old is None:
            assert new is not None
            if new["required"] and backward:
                problems.append(f"{where}: a new required field (events written before lack it)")
            continue
        if new is None:
            if old["required"] and forward:
                problems.append(f"{where}: a required field was removed (older readers need it)")
            continue
        if old["type"] != new["type"]:
            problems.append(f"{where}: type changed from {old['type']} to {new['type']}")
        if new["required"] and not old["required"] and backward:
            problems.append(f"{where}: became required (events written before may lack it)")
        if old["required"] and not new["required"] and forward:
            problems.append(f"{where}: became optional (older readers require it)")
        problems += _choice_violations(where, old.get("choices"), new.get("choices"), mode)
        problems += violations(old.get("fields", {}), new.get("fields", {}), mode, f"{where}.")
    return problems


def _choice_violations(
    where: str, old: list[str] | None, new: list[str] | None, mode: Compatibility
) -> list[str]:
    backward = mode in (Compatibility.BACKWARD, Compatibility.FULL)
    forward = mode in (Compatibility.FORWARD, Compatibility.FULL)
    problems = []
    if new is not None and backward:
        lost = sorted(set(old) - set(new)) if old is not None else ["(any value)"]
        if lost:
            problems.append(f"{where}: values no longer allowed {lost} (old events carry them)")
    if old is not None and forward:
        gained = sorted(set(new) - set(old)) if new is not None else ["(any value)"]
        if gained:
            problems.append(f"{where}: new values {gained} (older readers refuse them)")
    return problems


def key(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}"


def current_descriptions() -> dict[str, Any]:
    """Today's envelope and payload schemas, described."""
    from shared.events import PAYLOAD_SCHEMAS, EnvelopeSchema

    out = {key("envelope", 1): describe(EnvelopeSchema)}
    for (event_type, version), schema in sorted(PAYLOAD_SCHEMAS.items()):
        out[key(event_type, version)] = describe(schema)
    return out


def read_lock() -> dict[str, Any]:
    text = resources.files("shared").joinpath(LOCK_FILE).read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.compatibility")
    parser.add_argument("--add", action="store_true", help="record versions not in the lock")
    args = parser.parse_args(argv)
    path = Path(__file__).with_name(LOCK_FILE)
    lock = json.loads(path.read_text()) if path.exists() else {}
    new = {k: v for k, v in current_descriptions().items() if k not in lock}
    if not args.add:
        print("\n".join(sorted(new)) or "every version is recorded")
        return
    lock.update(new)
    path.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(new)} new versions: {', '.join(sorted(new)) or '-'}")


if __name__ == "__main__":
    main()
