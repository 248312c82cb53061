"""Privacy rules every service shares: how a person is named across services, how an
erased person is kept out for good, and what "personal" means in an event. Pure, except
the table factory and the two queries at the end.

* A person is named by identifiers (:class:`Identifier`): ``user_id``, ``anonymous_id``,
  ``email`` (as :mod:`shared.identity` spells them) and ``lead_id`` (lead-scoring's id,
  which the other services use as the person's id). :func:`identifier_key` hashes one
  (SHA-256 of the kind and the normalised value): erased people are remembered by these
  keys only, never by the plain value.
* :func:`identifiers_of` lists the identifiers an event carries — traffic (ids, traits'
  e-mail) and lead events (the snapshot's ids, merged and split leads) — so a consumer can
  drop an erased person's events (:func:`without_erased`), however often the topic is
  replayed.
* :func:`strip_personal` removes personal fields from an event whose sender denied
  analytics (:func:`analytics_denied`): the event is still delivered, but as no one's.
* :func:`rows_mentioning` finds rows of a raw-payload column (an outbox, failed events)
  that mention an identifier, in the database, for erasure to delete.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from shared.db import UTCDateTime, utcnow
from shared.events import Envelope
from shared.identity import ANONYMOUS_ID, EMAIL, USER_ID, is_junk_id
from shared.outbox import Outgoing

LEAD_ID = "lead_id"
KINDS = (USER_ID, ANONYMOUS_ID, EMAIL, LEAD_ID)
SERVICES_TO_ACKNOWLEDGE = ("traffic-intake", "lead-scoring", "member-retargeting")


@dataclass(frozen=True, order=True)
class Identifier:
    kind: str
    value: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "value": self.value}


def normal_value(kind: str, value: str) -> str:
    """E-mail addresses compare trimmed and lower-cased; ids exactly."""
    return value.strip().lower() if kind == EMAIL else value


# Keys recently hashed, per process: intake hashes every event's identifiers, and one
# visitor's batch names the same ones again and again. Bounded (at most ~1 KB an entry);
# in memory only, where every request's identifiers pass anyway.
KEY_CACHE_SIZE = 8192


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def identifier_key(kind: str, value: str) -> str:
    """What an erased identifier is remembered by: never the plain value."""
    digest = hashlib.sha256(f"funnel-person:{kind}:{normal_value(kind, value)}".encode())
    return digest.hexdigest()


def _add(found: set[tuple[str, str]], kind: str, value: Any) -> None:
    if isinstance(value, str) and not is_junk_id(value) and len(value) <= 320:
        found.add((kind, normal_value(kind, value)))


def identifiers_of(event: Envelope) -> set[Identifier]:
    """Every identifier of a person the event carries (traffic or lead events)."""
    return {Identifier(kind, value) for kind, value in _named(event)}


def _named(event: Envelope) -> set[tuple[str, str]]:
    """:func:`identifiers_of` as ``(kind, normalised value)`` pairs."""
    found: set[tuple[str, str]] = set()
    _add(found, USER_ID, event.user_id)
    _add(found, ANONYMOUS_ID, event.anonymous_id)
    payload = event.payload
    for traits in (payload.get("traits"), event.context.get("traits")):
        if isinstance(traits, Mapping):
            _add(found, EMAIL, traits.get("email"))
    if event.type == "alias":
        _add(found, USER_ID, payload.get("previous_id"))
    for snapshot_key in ("lead", "split_lead"):
        snapshot = payload.get(snapshot_key)
        if isinstance(snapshot, Mapping):
            _add(found, LEAD_ID, snapshot.get("lead_id"))
            _add(found, USER_ID, snapshot.get("user_id"))
            _add(found, EMAIL, snapshot.get("email"))
            for anonymous in snapshot.get("anonymous_ids") or ():
                _add(found, ANONYMOUS_ID, anonymous)
    _add(found, LEAD_ID, payload.get("merged_lead_id"))
    _add(found, LEAD_ID, payload.get("contact_id"))
    member = payload.get("member")
    if isinstance(member, Mapping):
        _add(found, LEAD_ID, member.get("contact_id"))
    return found


# ------------------------------------------------------------------------- erased people


def erased_table(metadata: MetaData) -> Table:
    """The people a service was asked to forget, by :func:`identifier_key` only. Kept for
    good (a key is a hash: it tells nothing about the person), so that replaying a topic
    never brings them back."""
    return Table(
        "erased_people",
        metadata,
        Column("key", String(64), primary_key=True),
        Column("request_id", String(64), nullable=False),
        Column("erased_at", UTCDateTime(), nullable=False, default=utcnow),
    )


def remember_erased(
    session: Session | Connection, table: Table, identifiers: Iterable[Identifier], request_id: str
) -> int:
    """Add the identifiers' keys to ``table`` (idempotent); returns how many were new."""
    keys = {identifier_key(i.kind, i.value) for i in identifiers}
    have = set(session.scalars(select(table.c.key).where(table.c.key.in_(keys)))) if keys else set()
    new = sorted(keys - have)
    if new:
        now = utcnow()
        session.execute(
            table.insert(), [{"key": k, "request_id": request_id, "erased_at": now} for k in new]
        )
    return len(new)


def erased_keys(session: Session | Connection, table: Table, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` belong to erased people (one query, in chunks of 500)."""
    wanted = sorted(set(keys))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(session.scalars(select(table.c.key).where(table.c.key.in_(chunk))))
    return found


def is_erased(
    session: Session | Connection, table: Table, identifiers: Iterable[Identifier]
) -> bool:
    keys = [identifier_key(i.kind, i.value) for i in identifiers]
    return bool(keys) and bool(erased_keys(session, table, keys))


Handler = Callable[[Sequence[Envelope], Session], Sequence[Outgoing]]


def erasure_keys(event: Envelope) -> frozenset[str]:
    """The keys an erasure is matched on: the event's identifiers, hashed."""
    return frozenset(identifier_key(kind, value) for kind, value in _named(event))


def drop_erased(
    session: Session | Connection, table: Table, events: Sequence[Envelope]
) -> list[Envelope]:
    """``events`` without those of erased people (one lookup for all of them)."""
    keys = {event.event_id: erasure_keys(event) for event in events}
    erased = erased_keys(session, table, (k for ks in keys.values() for k in ks))
    return [e for e in events if not (keys[e.event_id] & erased)] if erased else list(events)


def without_erased(handler: Handler, table: Table) -> Handler:
    """A batch handler that never sees an erased person's events (one lookup a batch)."""

    def apply(events: Sequence[Envelope], session: Session) -> Sequence[Outgoing]:
        kept = drop_erased(session, table, events)
        return handler(kept, session) if kept else []

    apply.__wrapped__ = handler  # type: ignore[attr-defined]  # inspect.unwrap finds it
    return apply


# ------------------------------------------------------------------------ personal data

# A Segment call's fields that name or locate a person (stripped when analytics is denied).
PERSONAL_CONTEXT_KEYS = frozenset(
    {"ip", "userAgent", "userAgentData", "traits", "location", "externalIds", "device", "network"}
)
PERSONAL_PROPERTY_KEYS = frozenset(
    {
        "email",
        "phone",
        "name",
        "firstName",
        "first_name",
        "lastName",
        "last_name",
        "address",
        "birthday",
        "username",
        "user_id",
        "userId",
    }
)


def analytics_denied(event: Envelope) -> bool:
    """The event itself says its sender denied analytics (context or identify traits)."""
    from shared.consent import ANALYTICS, decisions

    traits = event.payload.get("traits") if event.type == "identify" else None
    stated = decisions(event.context, traits if isinstance(traits, Mapping) else None)
    return stated.get(ANALYTICS) is False


def strip_personal(event: Envelope) -> Envelope:
    """The event without what makes it someone's: no user id, no traits, no IP, user
    agent, device, location or external ids, no personal property keys, page URLs and
    referrers without their query strings; the anonymous id replaced by a fresh random
    one (an event needs an id; this one links to nothing). The consent stays, so
    downstream knows why."""
    payload = dict(event.payload)
    if "traits" in payload:
        payload["traits"] = {}
    if "previous_id" in payload:
        payload["previous_id"] = uuid.uuid4().hex
    properties = payload.get("properties")
    if isinstance(properties, Mapping):
        payload["properties"] = _without_queries(
            {k: v for k, v in properties.items() if k not in PERSONAL_PROPERTY_KEYS}
        )
    context = {k: v for k, v in event.context.items() if k not in PERSONAL_CONTEXT_KEYS}
    page = context.get("page")
    if isinstance(page, Mapping):
        context["page"] = _without_queries(page)
    return replace(
        event, payload=payload, context=context, user_id=None, anonymous_id=uuid.uuid4().hex
    )


def _without_queries(fields: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    for key in ("url", "referrer", "search"):
        value = out.get(key)
        if isinstance(value, str):
            out[key] = "" if key == "search" else value.split("?", 1)[0].split("#", 1)[0]
    return out


# ------------------------------------------------------------------ finding raw payloads


def needles(identifiers: Iterable[Identifier]) -> list[bytes]:
    """Byte strings whose presence in a raw JSON payload suggests it mentions one of the
    identifiers: each value as a JSON string (ASCII-escaped and raw UTF-8). A prefilter:
    callers confirm by parsing (:func:`mentions`)."""
    out: set[bytes] = set()
    for identifier in identifiers:
        out.add(json.dumps(identifier.value).encode())
        out.add(json.dumps(identifier.value, ensure_ascii=False).encode())
    return sorted(out)


def mentions(document: Any, identifiers: Iterable[Identifier]) -> bool:
    """Whether any string in a parsed JSON document equals one of the identifiers' values
    (e-mail addresses compared normalised)."""
    values = {i.value for i in identifiers}
    emails = {i.value for i in identifiers if i.kind == EMAIL}
    stack = [document]
    seen = 0
    while stack and seen < 100_000:
        item = stack.pop()
        seen += 1
        if isinstance(item, str):
            if item in values or (emails and item.strip().lower() in emails):
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def rows_mentioning(
    conn: Connection | Session, table: Table, column: str, identifiers: Iterable[Identifier]
) -> list[Any]:
    """Rows of ``table`` whose binary ``column`` mentions one of the identifiers: found
    in the database (``position`` on PostgreSQL, ``instr`` on SQLite), confirmed by
    parsing each candidate. Rows that do not parse as JSON are confirmed by the bytes."""
    found = list(identifiers)
    patterns = needles(found)
    if not patterns:
        return []
    dialect = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    clause = (
        "position(CAST(:n{i} AS bytea) IN {col}) > 0"
        if dialect == "postgresql"
        else "instr({col}, :n{i}) > 0"
    )
    condition = " OR ".join(clause.format(i=i, col=column) for i in range(len(patterns)))
    query = select(table).where(
        text(condition).bindparams(**{f"n{i}": p for i, p in enumerate(patterns)})
    )
    rows = []
    for row in conn.execute(query):
        raw = bytes(getattr(row, column))
        try:
            document = json.loads(raw)
        except ValueError:
            rows.append(row)  # not JSON: the bytes matched, that is enough
            continue
        if mentions(document, found):
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- requests

MAX_ACCESS_ITEMS = 500


def requested_identifiers(event: Envelope) -> list[Identifier]:
    """The identifiers of an erasure or access request, normalised."""
    return sorted(
        {
            Identifier(item["kind"], normal_value(item["kind"], item["value"]))
            for item in event.payload.get("identifiers", [])
        }
    )


def erasure_completed(request_id: str, service: str, counts: Mapping[str, int]) -> Outgoing:
    """A service's answer to an erasure request (its id is fixed per request and
    service, so an answer repeated after a crash is the same event)."""
    from shared.events import new_event
    from shared.topics import PRIVACY

    envelope = new_event(
        "privacy.erasure_completed",
        {"request_id": request_id, "service": service, "counts": dict(counts)},
        source=service,
        event_id=f"erasure-{request_id}-{service}",
    )
    return Outgoing(PRIVACY, request_id, envelope)


def access_part(
    request_id: str, service: str, data: Mapping[str, Any], truncated: Sequence[str] = ()
) -> Outgoing:
    """A service's part of an access export (lists cut at :data:`MAX_ACCESS_ITEMS`)."""
    from shared.events import new_event
    from shared.topics import PRIVACY

    envelope = new_event(
        "privacy.access_part",
        {
            "request_id": request_id,
            "service": service,
            "data": json.loads(json.dumps(data, default=str)),
            "truncated": list(truncated),
        },
        source=service,
        event_id=f"access-{request_id}-{service}",
    )
    return Outgoing(PRIVACY, request_id, envelope)


# ------------------------------------------------------------------------------ masking


def mask_email(value: str | None) -> str | None:
    """``grace.hopper@example.com`` → ``g***@e***.com``: enough to tell people apart in a
    list, not to write to them."""
    if not value or "@" not in value:
        return None if value is None else "***"
    local, _, domain = value.rpartition("@")
    name, dot, tld = domain.rpartition(".")
    shown_domain = f"{name[:1]}***{dot}{tld}" if dot else f"{domain[:1]}***"
    return f"{local[:1]}***@{shown_domain}"


def mask_phone(value: str | None) -> str | None:
    """Only the last two digits: ``+886 912 345 678`` → ``***78``."""
    if value is None:
        return None
    digits = [c for c in value if c.isdigit()]
    return "***" + "".join(digits[-2:])
