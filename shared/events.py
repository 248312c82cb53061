"""The event envelope and every event type, as versioned marshmallow schemas.

Every message on a Funnel topic is one JSON envelope::

    {"event_id", "type", "schema_version", "occurred_at", "received_at", "source",
     "anonymous_id", "user_id", "context", "payload"}

``payload`` is validated by the schema registered for ``(type, schema_version)``. These
schemas are the contract between services: HTTP schemas and ORM models are separate and
map to and from them explicitly.

Failure modes: :func:`decode` raises :class:`InvalidEvent` for anything a consumer cannot
process (bad JSON, schema violation, unknown type or version, type not allowed on the
topic); the runner turns that into a dead letter. :func:`encode` raises
``marshmallow.ValidationError`` because producing an invalid event is a programming error.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, missing, validate

from shared.compatibility import Compatibility
from shared.limits import (
    MAX_EVENT_NAME_LENGTH,
    MAX_ID_LENGTH,
    MAX_PAGE_NAME_LENGTH,
    compact_json,
    effective_time,
)

# --------------------------------------------------------------------------- envelope


class EnvelopeSchema(Schema):
    class Meta:
        unknown = RAISE

    event_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    schema_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    occurred_at = fields.AwareDateTime(required=True, default_timezone=UTC)
    received_at = fields.AwareDateTime(required=True, default_timezone=UTC)
    source = fields.String(required=True, validate=validate.Length(min=1, max=200))
    anonymous_id = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=MAX_ID_LENGTH)
    )
    user_id = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=MAX_ID_LENGTH)
    )
    context = fields.Dict(load_default=dict)
    payload = fields.Dict(required=True)


@dataclass(frozen=True)
class Envelope:
    """One event as it travels on Kafka. Immutable; build new ones with :func:`new_event`."""

    event_id: str
    type: str
    schema_version: int
    occurred_at: datetime
    received_at: datetime
    source: str
    payload: dict[str, Any]
    anonymous_id: str | None = None
    user_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def effective_at(self) -> datetime:
        """When the event happened as far as Funnel trusts the client: ``occurred_at``,
        but never after ``received_at`` plus a small tolerance (see
        :func:`shared.limits.effective_time`). Scoring order, caps and decay use this;
        ``occurred_at`` keeps what the client said."""
        return effective_time(self.occurred_at, self.received_at)

    @property
    def partition_key(self) -> str:
        """The Kafka key of a traffic event: the anonymous id when there is one (so one
        browser's page views, identify and form fill stay in order), else the user id."""
        return self.anonymous_id or self.user_id or ""

    def with_payload(self, **changes: Any) -> Envelope:
        return replace(self, payload={**self.payload, **changes})


# --------------------------------------------------------------------------- payloads
# Traffic: Segment's call types, in Funnel's snake_case. Unknown keys are kept out so a
# payload never smuggles fields past the contract.


class _Payload(Schema):
    class Meta:
        unknown = RAISE


class TrackV1(_Payload):
    event = fields.String(required=True, validate=validate.Length(min=1, max=MAX_EVENT_NAME_LENGTH))
    properties = fields.Dict(load_default=dict)


class PageV1(_Payload):
    name = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=MAX_PAGE_NAME_LENGTH)
    )
    category = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=MAX_PAGE_NAME_LENGTH)
    )
    properties = fields.Dict(load_default=dict)


class IdentifyV1(_Payload):
    traits = fields.Dict(load_default=dict)


class GroupV1(_Payload):
    group_id = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ID_LENGTH))
    traits = fields.Dict(load_default=dict)


class AliasV1(_Payload):
    previous_id = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ID_LENGTH))


# Segment's e-commerce spec: the event that says someone bought. Scoring makes them a
# customer, retargeting a member with an order.
ORDER_COMPLETED = "Order Completed"


# Leads: what lead-scoring tells the rest of the funnel. Each carries a snapshot of the
# lead so consumers never need lead-scoring's tables.

STAGES = (
    "subscriber",
    "lead",
    "mql",
    "sql",
    "opportunity",
    "customer",
    "recycled",
    "disqualified",
)


class LeadSnapshotV1(Schema):
    class Meta:
        # Nested schemas read tolerantly: a newer producer may add fields.
        unknown = EXCLUDE

    lead_id = fields.String(required=True)
    stage = fields.String(required=True, validate=validate.OneOf(STAGES))
    score = fields.Integer(required=True)
    email = fields.String(load_default=None, allow_none=True)
    user_id = fields.String(load_default=None, allow_none=True)
    anonymous_ids = fields.List(fields.String(), load_default=list)
    traits = fields.Dict(load_default=dict)
    # Added compatibly (optional): who in sales owns the lead.
    owner_id = fields.Integer(load_default=None, allow_none=True)
    # Added compatibly (optional): counts up with each snapshot of the lead, so a consumer
    # can ignore one older than the one it holds.
    version = fields.Integer(load_default=None, allow_none=True)
    # Added compatibly (optional): intent topic → points (what the lead researches).
    intent = fields.Dict(
        keys=fields.String(), values=fields.Integer(), load_default=None, allow_none=True
    )


class PointV1(Schema):
    class Meta:
        unknown = EXCLUDE

    rule_id = fields.String(required=True)
    points = fields.Integer(required=True)
    reason = fields.String(required=True)
    event_id = fields.String(required=True)


class LeadScoredV1(_Payload):
    lead = fields.Nested(LeadSnapshotV1, required=True)
    delta = fields.Integer(required=True)
    points = fields.List(fields.Nested(PointV1), required=True)


class LeadStageChangedV1(_Payload):
    lead = fields.Nested(LeadSnapshotV1, required=True)
    from_stage = fields.String(required=True, allow_none=True, validate=validate.OneOf(STAGES))
    to_stage = fields.String(required=True, validate=validate.OneOf(STAGES))
    reason = fields.String(required=True)
    changed_by = fields.String(required=True)
    # Added compatibly (optional): a sales rejection's code, for marketing's reports.
    reason_code = fields.String(load_default=None, allow_none=True)


class LeadMergedV1(_Payload):
    lead = fields.Nested(LeadSnapshotV1, required=True)
    merged_lead_id = fields.String(required=True)
    reason = fields.String(required=True)


class LeadSplitV1(_Payload):
    """A wrong merge undone, or an identifier given a lead of its own: ``lead`` and
    ``split_lead`` as they are after both were rebuilt from their own events."""

    lead = fields.Nested(LeadSnapshotV1, required=True)
    split_lead = fields.Nested(LeadSnapshotV1, required=True)
    reason = fields.String(required=True)
    changed_by = fields.String(required=True)


class LeadAssignedV1(_Payload):
    lead = fields.Nested(LeadSnapshotV1, required=True)
    owner_id = fields.Integer(required=True)
    owner_name = fields.String(required=True)
    reason = fields.String(required=True)


class LeadSlaBreachedV1(_Payload):
    lead = fields.Nested(LeadSnapshotV1, required=True)
    mql_at = fields.AwareDateTime(required=True, default_timezone=UTC)
    sla_hours = fields.Float(required=True)
    owner_id = fields.Integer(load_default=None, allow_none=True)


# Members: what member-retargeting tells others about buyers.


class MemberSnapshotV1(Schema):
    class Meta:
        unknown = EXCLUDE

    contact_id = fields.String(required=True)  # the lead id of the person
    is_member = fields.Boolean(required=True)
    member_since = fields.AwareDateTime(load_default=None, allow_none=True)
    tier = fields.String(load_default=None, allow_none=True)
    tier_since = fields.AwareDateTime(load_default=None, allow_none=True)
    orders = fields.Integer(required=True)
    revenue = fields.Decimal(required=True, as_string=True)
    last_order_at = fields.AwareDateTime(load_default=None, allow_none=True)
    rfm_group = fields.String(load_default=None, allow_none=True)
    rfm = fields.Dict(load_default=None, allow_none=True)  # {"recency", "frequency", "monetary"}


class MemberUpdatedV1(_Payload):
    """A member enrolled, changed tier or RFM group."""

    member = fields.Nested(MemberSnapshotV1, required=True)
    change = fields.String(
        required=True, validate=validate.OneOf(["enrolled", "tier", "rfm_group"])
    )
    reason = fields.String(required=True)


# Dispatch: one message per recipient of a campaign run, for the senders (email, ads …).


class CampaignDispatchV1(_Payload):
    campaign_id = fields.Integer(required=True, strict=True)
    run_id = fields.Integer(required=True, strict=True)
    contact_id = fields.String(required=True)
    email = fields.String(load_default=None, allow_none=True)
    channel = fields.String(required=True)
    message = fields.Dict(required=True)
    # Added compatibly (optional): the phone for SMS and WhatsApp, and the campaign's kind
    # (marketing or transactional).
    phone = fields.String(load_default=None, allow_none=True)
    kind = fields.String(load_default=None, allow_none=True)
    # Added compatibly: the person allowed analytics when the dispatch was made, so the
    # message may track opens and clicks.
    tracking = fields.Boolean(load_default=False)


DELIVERY_STATUSES = (
    "sent",
    "delivered",
    "failed",
    "bounced",
    "suppressed",
    "unsubscribed",
    "clicked",
    "opened",
)


class DeliveryStatusV1(_Payload):
    """What became of a dispatch: handed over (``sent``), on the recipient's device by the
    provider's receipt (``delivered``: SMS, WhatsApp), given up (``failed``), refused by
    the mail server (``bounced``), and what its recipient did.

    ``suppressed`` and ``delivered`` came after v1 was published, before the schema lock
    recorded allowed values: the lock holds the six published ones, and the contract test
    accepts these two by name (any further value needs a v2). Only member-retargeting
    reads this topic, and its consumer ships in the same release as the producers; a
    consumer still on an older release dead-letters such an event, to be replayed once
    upgraded (``funnel replay``) — deploy the consumer first."""

    dispatch_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    campaign_id = fields.Integer(required=True, strict=True)
    run_id = fields.Integer(required=True, strict=True)
    contact_id = fields.String(required=True, validate=validate.Length(max=32))
    channel = fields.String(load_default=None, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(DELIVERY_STATUSES))
    at = fields.AwareDateTime(required=True)
    detail = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))
    url = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class AudienceBatchV1(_Payload):
    """A part of a hashed ads audience: SHA-256 values only, as the platform uploads them."""

    export_id = fields.Integer(required=True, strict=True)
    platform = fields.String(required=True, validate=validate.OneOf(["meta", "google"]))
    part = fields.Integer(required=True, strict=True)
    rows = fields.List(fields.Dict(keys=fields.String(), values=fields.String()), required=True)


# Privacy: consent changes, and erasure and access requests with each service's answer.

IDENTIFIER_KINDS = ("user_id", "anonymous_id", "email", "lead_id")
MAX_REQUEST_IDENTIFIERS = 1000


class IdentifierV1(Schema):
    class Meta:
        unknown = EXCLUDE

    kind = fields.String(required=True, validate=validate.OneOf(IDENTIFIER_KINDS))
    value = fields.String(required=True, validate=validate.Length(min=1, max=320))


class ConsentChangedV1(_Payload):
    """A person's decision for a purpose changed (lead-scoring keeps the history)."""

    lead_id = fields.String(required=True)
    purpose = fields.String(
        required=True, validate=validate.OneOf(["analytics", "marketing", "advertising"])
    )
    granted = fields.Boolean(required=True)
    decided_at = fields.AwareDateTime(required=True)
    source = fields.String(load_default=None, allow_none=True)
    event_id = fields.String(load_default=None, allow_none=True)


class _PersonRequestV1(_Payload):
    """A request about one person, named by every identifier they are known by: what
    erasure and access requests (v1) both carry. The schema lock holds each to these
    fields; a version that needs others gets its own schema."""

    request_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    identifiers = fields.List(
        fields.Nested(IdentifierV1),
        required=True,
        validate=validate.Length(min=1, max=MAX_REQUEST_IDENTIFIERS),
    )
    requested_by = fields.String(required=True)


class ErasureRequestedV1(_PersonRequestV1):
    """Forget this person everywhere: every identifier they are known by."""


class ErasureCompletedV1(_Payload):
    """One service forgot the person: what it deleted or anonymised, per store."""

    request_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    service = fields.String(required=True)
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


class AccessRequestedV1(_PersonRequestV1):
    """Gather everything held on this person (identifiers as for erasure)."""


class AccessPartV1(_Payload):
    """One service's part of an access export: what it holds, by store (bounded lists;
    ``truncated`` names the stores cut short)."""

    request_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    service = fields.String(required=True)
    data = fields.Dict(required=True)
    truncated = fields.List(fields.String(), load_default=list)


PAYLOAD_SCHEMAS: Mapping[tuple[str, int], type[Schema]] = {
    ("track", 1): TrackV1,
    ("page", 1): PageV1,
    ("screen", 1): PageV1,
    ("identify", 1): IdentifyV1,
    ("group", 1): GroupV1,
    ("alias", 1): AliasV1,
    ("lead.scored", 1): LeadScoredV1,
    ("lead.stage_changed", 1): LeadStageChangedV1,
    ("lead.merged", 1): LeadMergedV1,
    ("lead.split", 1): LeadSplitV1,
    ("lead.assigned", 1): LeadAssignedV1,
    ("lead.sla_breached", 1): LeadSlaBreachedV1,
    ("campaign.dispatch", 1): CampaignDispatchV1,
    ("audience.batch", 1): AudienceBatchV1,
    ("delivery.status", 1): DeliveryStatusV1,
    ("member.updated", 1): MemberUpdatedV1,
    ("consent.changed", 1): ConsentChangedV1,
    ("privacy.erasure_requested", 1): ErasureRequestedV1,
    ("privacy.erasure_completed", 1): ErasureCompletedV1,
    ("privacy.access_requested", 1): AccessRequestedV1,
    ("privacy.access_part", 1): AccessPartV1,
}


# What each published version may still become (see :mod:`shared.compatibility`): all of
# Funnel's are ``full`` — producers and consumers deploy independently.
COMPATIBILITY: Mapping[tuple[str, int], Compatibility] = {
    version: Compatibility.FULL for version in PAYLOAD_SCHEMAS
}
ENVELOPE_COMPATIBILITY = Compatibility.FULL


# Every event built (a lead event per change, a dispatch per recipient) asks for it.
_LATEST: Mapping[str, int] = {
    event_type: max(v for (t, v) in PAYLOAD_SCHEMAS if t == event_type)
    for event_type, _ in PAYLOAD_SCHEMAS
}


def latest_version(event_type: str) -> int:
    """The newest schema version of ``event_type``; KeyError for an unknown type."""
    try:
        return _LATEST[event_type]
    except KeyError:
        raise KeyError(f"unknown event type {event_type!r}") from None


# --------------------------------------------------------------------------- codec


class InvalidEvent(ValueError):
    """A message no consumer can process. ``reason`` goes to the dead-letter headers."""

    def __init__(self, reason: str, kind: str = "schema_violation") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


_ENVELOPE = EnvelopeSchema()


_ID_NAMESPACE = uuid.NAMESPACE_URL.bytes


def derived_id(name: str) -> str:
    """A deterministic event id for ``name`` (``funnel:<cause>:<kind>``): the hex of
    ``uuid.uuid5(uuid.NAMESPACE_URL, name)``, built without the UUID object, which costs
    ten times the hash, on the consumers' hot path (one or more ids per event). Ids
    derived from a cause make a reprocessed cause yield the same events, which consumers
    then deduplicate."""
    digest = bytearray(hashlib.sha1(_ID_NAMESPACE + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


def new_event(
    event_type: str,
    payload: Mapping[str, Any],
    *,
    source: str,
    occurred_at: datetime | None = None,
    received_at: datetime | None = None,
    event_id: str | None = None,
    anonymous_id: str | None = None,
    user_id: str | None = None,
    context: Mapping[str, Any] | None = None,
    schema_version: int | None = None,
) -> Envelope:
    """Build an envelope for ``event_type`` at its latest schema version (or the given one)."""
    now = datetime.now(UTC)
    return Envelope(
        event_id=event_id or uuid.uuid4().hex,
        type=event_type,
        schema_version=schema_version or latest_version(event_type),
        occurred_at=occurred_at or now,
        received_at=received_at or now,
        source=source,
        payload=dict(payload),
        anonymous_id=anonymous_id,
        user_id=user_id,
        context=dict(context or {}),
    )


@functools.cache
def _payload_schema(event_type: str, version: int) -> Schema:
    """One instance per schema, reused: building one costs more than loading a payload."""
    try:
        return PAYLOAD_SCHEMAS[(event_type, version)]()
    except KeyError:
        raise InvalidEvent(
            f"unknown event type/version {event_type!r} v{version}", kind="unknown_type"
        ) from None


def to_dict(envelope: Envelope, *, validate_payload: bool = True) -> dict[str, Any]:
    """The JSON-ready form of an envelope.

    Validates the payload against its schema unless the caller has just validated it
    (intake's HTTP schemas have). Built by hand rather than by a marshmallow dump: it is on
    intake's hot path, and the output is the same (ISO-8601 times with their offset).
    """
    if validate_payload:
        errors = _payload_schema(envelope.type, envelope.schema_version).validate(envelope.payload)
        if errors:
            raise ValidationError(errors)
    return {
        "event_id": envelope.event_id,
        "type": envelope.type,
        "schema_version": envelope.schema_version,
        "occurred_at": envelope.occurred_at.isoformat(),
        "received_at": envelope.received_at.isoformat(),
        "source": envelope.source,
        "anonymous_id": envelope.anonymous_id,
        "user_id": envelope.user_id,
        "context": envelope.context,
        "payload": envelope.payload,
    }


def encode(envelope: Envelope, *, validate_payload: bool = True) -> bytes:
    data = to_dict(envelope, validate_payload=validate_payload)
    return compact_json(data).encode()


_ENVELOPE_KEYS = frozenset(EnvelopeSchema().fields)
# The form ``to_dict`` writes (``datetime.isoformat`` of an aware time); others go the slow way.
_CANONICAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?[+-]\d{2}:\d{2}")


def _text(value: Any, max_length: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_length


def _optional_text(value: Any, max_length: int) -> bool:
    return value is None or (isinstance(value, str) and len(value) <= max_length)


def _time(value: Any) -> datetime | None:
    if isinstance(value, str) and _CANONICAL_TIME.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:  # e.g. month 13: the schema explains it
            return None
    return None


def _fast_envelope(data: dict[str, Any]) -> dict[str, Any] | None:
    """What ``EnvelopeSchema().load(data)`` returns, for the envelopes Funnel itself
    writes, at a tenth of the cost; None for anything else (unusual time formats, missing
    or wrong fields), which the schema then loads or explains. Consumers decode every
    message, so this is on their hot path; a test holds it to the schema's answers."""
    if not data.keys() <= _ENVELOPE_KEYS:
        return None
    version = data.get("schema_version")
    context = data.get("context", {})
    payload = data.get("payload")
    anonymous_id = data.get("anonymous_id")
    user_id = data.get("user_id")
    if not (
        _text(data.get("event_id"), 128)
        and _text(data.get("type"), 64)
        and _text(data.get("source"), 200)
        and type(version) is int
        and version >= 1
        and isinstance(context, dict)
        and isinstance(payload, dict)
        and _optional_text(anonymous_id, MAX_ID_LENGTH)
        and _optional_text(user_id, MAX_ID_LENGTH)
    ):
        return None
    occurred_at, received_at = _time(data.get("occurred_at")), _time(data.get("received_at"))
    if occurred_at is None or received_at is None:
        return None
    return {
        "event_id": data["event_id"],
        "type": data["type"],
        "schema_version": version,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "source": data["source"],
        "anonymous_id": anonymous_id,
        "user_id": user_id,
        "context": dict(context),
        "payload": dict(payload),
    }


@dataclass(frozen=True)
class _PlainField:
    """A payload field :func:`_fast_payload` can load without marshmallow: a string
    (optionally length-bounded) or a dict of anything."""

    name: str
    text: bool  # a String; else a Dict without key or value fields
    required: bool
    default: Any  # marshmallow's load_default: a value, a factory, or ``missing``
    allow_none: bool
    min_length: int | None
    max_length: int | None


@functools.cache
def _plain_fields(schema: Schema) -> tuple[_PlainField, ...] | None:
    """The schema's loaded fields if every one is plain (see :class:`_PlainField`:
    no other validator, no renaming, no field or schema hooks); else None (the schema is
    always loaded by marshmallow)."""
    if any(schema._hooks.values()):
        return None
    plain = []
    for name, field_ in schema.load_fields.items():
        if (
            field_.data_key not in (None, name)
            or field_.attribute not in (None, name)
            or "." in name
            or field_.pre_load
            or field_.post_load
        ):
            return None
        if type(field_) is fields.String:
            text = True
            lengths = [
                v for v in field_.validators if type(v) is validate.Length and v.equal is None
            ]
            if len(lengths) != len(field_.validators) or len(lengths) > 1:
                return None
        elif (
            type(field_) is fields.Dict
            and field_.key_field is None
            and field_.value_field is None
            and not field_.validators
        ):
            text, lengths = False, []
        else:
            return None
        plain.append(
            _PlainField(
                name,
                text,
                field_.required,
                field_.load_default,
                field_.allow_none,
                lengths[0].min if lengths else None,
                lengths[0].max if lengths else None,
            )
        )
    return tuple(plain)


def _fast_payload(schema: Schema, data: dict[str, Any]) -> dict[str, Any] | None:
    """What ``schema.load(data, unknown=EXCLUDE)`` returns, for schemas of plain fields
    (the traffic payloads) and values of the expected types, at a fraction of the cost;
    None for anything else, which the schema then loads or explains. A property test
    holds it to the schema's answers."""
    plain = _plain_fields(schema)
    if plain is None:
        return None
    loaded: dict[str, Any] = {}
    for field_ in plain:
        if field_.name not in data:
            if field_.required:
                return None
            if field_.default is not missing:
                default = field_.default
                loaded[field_.name] = default() if callable(default) else default
            continue
        value = data[field_.name]
        if value is None:
            if not field_.allow_none:
                return None
        elif field_.text:
            if type(value) is not str:
                return None
            if (field_.min_length is not None and len(value) < field_.min_length) or (
                field_.max_length is not None and len(value) > field_.max_length
            ):
                return None
        elif type(value) is dict:
            value = dict(value)
        else:
            return None
        loaded[field_.name] = value
    return loaded


def from_dict(data: Any, *, allowed_types: frozenset[str] | None = None) -> Envelope:
    """Validate a decoded JSON value into an :class:`Envelope` or raise :class:`InvalidEvent`."""
    if not isinstance(data, dict):
        raise InvalidEvent("envelope is not a JSON object")
    loaded = _fast_envelope(data)
    if loaded is None:
        try:
            loaded = _ENVELOPE.load(data)
        except ValidationError as exc:
            raise InvalidEvent(f"envelope: {exc.messages}") from exc
    if allowed_types is not None and loaded["type"] not in allowed_types:
        raise InvalidEvent(
            f"event type {loaded['type']!r} is not registered on this topic", kind="unknown_type"
        )
    schema = _payload_schema(loaded["type"], loaded["schema_version"])
    payload = _fast_payload(schema, loaded["payload"])
    if payload is None:
        try:
            payload = schema.load(loaded["payload"], unknown=EXCLUDE)
        except ValidationError as exc:
            raise InvalidEvent(f"payload: {exc.messages}") from exc
    loaded["payload"] = payload
    return Envelope(**loaded)


def decode(raw: bytes | None, *, allowed_types: frozenset[str] | None = None) -> Envelope:
    """Parse and validate one Kafka message value. Raises :class:`InvalidEvent`."""
    if raw is None:
        raise InvalidEvent("message has no value", kind="empty")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"value is not JSON: {exc}", kind="bad_json") from exc
    return from_dict(data, allowed_types=allowed_types)
