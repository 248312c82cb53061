"""HTTP schemas of the Segment Tracking API (camelCase, as Segment spells it).

These describe what clients send; :mod:`segment` maps a loaded call to the Funnel event
envelope. Unknown keys (``integrations``, ``_metadata``, SDK extras) are accepted and
ignored, as Segment does.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import EXCLUDE, ValidationError, fields, validate, validates_schema

from services.traffic_intake.fast_load import fast_call
from services.traffic_intake.origins import MAX_ORIGINS, normal_origin
from shared.fields import Identifier, JsonObject, Name, Timestamp
from shared.limits import (
    MAX_EMAIL_LENGTH,
    MAX_EVENT_NAME_LENGTH,
    MAX_MESSAGE_ID_LENGTH,
    MAX_MONEY,
    MAX_PAGE_NAME_LENGTH,
    MONEY_PROPERTIES,
    money,
)
from shared.provenance import BROWSER, SERVER, SOURCE_KINDS


class _Call(ma.Schema):
    """A Segment call. :meth:`load` answers valid calls by :func:`.fast_load.fast_call`
    (the same result, a fraction of the cost) and leaves the rest to the fields below,
    which also document the API."""

    class Meta:
        unknown = EXCLUDE

    call_type: str  # set by each concrete call

    def load(self, data: Any, *, many: bool | None = None, **kwargs: Any) -> Any:
        # Only as the API builds them: the fast path knows nothing of partial, only/
        # exclude or another unknown-field policy.
        plain = not (self.partial or self.only or self.exclude or self.many)
        if plain and not many and not kwargs and self.unknown == EXCLUDE:
            loaded = fast_call(self.call_type, data)
            if loaded is not None:
                return loaded
        return super().load(data, many=many, **kwargs)

    userId = Identifier(allow_none=True, load_default=None)
    anonymousId = Identifier(allow_none=True, load_default=None)
    messageId = Name(max_length=MAX_MESSAGE_ID_LENGTH, load_default=None)
    timestamp = Timestamp(load_default=None, allow_none=True)
    originalTimestamp = Timestamp(load_default=None, allow_none=True)
    sentAt = Timestamp(load_default=None, allow_none=True)
    context = JsonObject(load_default=dict)
    integrations = JsonObject(load_default=dict)
    writeKey = fields.String(load_only=True, load_default=None)

    @validates_schema(skip_on_field_errors=False)
    def _needs_identity(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("userId") and not data.get("anonymousId"):
            raise ValidationError("either userId or anonymousId is required", "userId")


class TrackCall(_Call):
    call_type = "track"
    event = Name(required=True, max_length=MAX_EVENT_NAME_LENGTH)
    properties = JsonObject(load_default=dict)

    @validates_schema
    def _money(self, data: dict[str, Any], **_: Any) -> None:
        properties = data.get("properties") or {}
        for name in MONEY_PROPERTIES:
            value = properties.get(name)
            if value is not None and money(value) is None:
                raise ValidationError(f"must be a number within ±{MAX_MONEY}", f"properties.{name}")


class PageCall(_Call):
    call_type = "page"
    name = Name(max_length=MAX_PAGE_NAME_LENGTH, cut=True, load_default=None, allow_none=True)
    category = Name(max_length=MAX_PAGE_NAME_LENGTH, cut=True, load_default=None, allow_none=True)
    properties = JsonObject(load_default=dict)


class IdentifyCall(_Call):
    call_type = "identify"
    traits = JsonObject(load_default=dict)

    @validates_schema
    def _email(self, data: dict[str, Any], **_: Any) -> None:
        email = (data.get("traits") or {}).get("email")
        if isinstance(email, str) and len(email) > MAX_EMAIL_LENGTH:
            raise ValidationError(f"must be at most {MAX_EMAIL_LENGTH} characters", "traits.email")


class GroupCall(_Call):
    call_type = "group"
    groupId = Identifier(required=True)
    traits = JsonObject(load_default=dict)


class AliasCall(_Call):
    call_type = "alias"
    previousId = Identifier(required=True)


CALL_SCHEMAS: dict[str, type[_Call]] = {
    "track": TrackCall,
    "page": PageCall,
    "screen": PageCall,
    "identify": IdentifyCall,
    "group": GroupCall,
    "alias": AliasCall,
}


class BatchRequest(ma.Schema):
    """``/v1/batch``: the envelope of many calls. Each item is validated on its own so one
    bad event does not sink the others."""

    class Meta:
        unknown = EXCLUDE

    batch = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1))
    sentAt = Timestamp(load_default=None, allow_none=True)
    context = JsonObject(load_default=dict)
    writeKey = fields.String(load_only=True, load_default=None)


class RejectedEvent(ma.Schema):
    index = fields.Integer(metadata={"description": "position in the batch"})
    kind = fields.String(metadata={"description": "schema_violation or size_violation"})
    field_errors = fields.Dict(data_key="fields", metadata={"description": "field → reasons"})


class SourceIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    rate_limit_per_second = fields.Float(
        load_default=None, allow_none=True, validate=validate.Range(min=0, min_inclusive=False)
    )
    kind = fields.String(
        load_default=SERVER,
        validate=validate.OneOf(SOURCE_KINDS),
        metadata={"description": "browser: a public key for web pages; server: a secret key"},
    )
    allowed_origins = fields.List(
        fields.String(validate=validate.Length(max=300)),
        load_default=list,
        validate=validate.Length(max=MAX_ORIGINS),
        metadata={"description": "browser sources: the web origins that may use the key"},
    )

    @validates_schema
    def _origins(self, data: dict[str, Any], **_: Any) -> None:
        _check_origins(data, required=data.get("kind") == BROWSER)


class OriginsIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    allowed_origins = fields.List(
        fields.String(validate=validate.Length(max=300)),
        required=True,
        validate=validate.Length(min=1, max=MAX_ORIGINS),
    )

    @validates_schema
    def _origins(self, data: dict[str, Any], **_: Any) -> None:
        _check_origins(data, required=True)


def _check_origins(data: dict[str, Any], *, required: bool) -> None:
    """Each origin must be ``scheme://host[:port]``; normalised in place. A browser source
    needs at least one; a server source none (it is never used from a browser)."""
    given = data.get("allowed_origins") or []
    normal = [normal_origin(o) for o in given]
    bad = [o for o, n in zip(given, normal, strict=True) if n is None]
    if bad:
        raise ValidationError(
            {"allowed_origins": [f"not an origin (scheme://host[:port]): {bad[0]!r}"]}
        )
    if required and not normal:
        raise ValidationError({"allowed_origins": ["a browser source needs at least one"]})
    if not required and normal and data.get("kind") == SERVER:
        raise ValidationError({"allowed_origins": ["server sources are never used from browsers"]})
    data["allowed_origins"] = sorted({n for n in normal if n is not None})


class SourceOut(ma.Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String()
    enabled = fields.Boolean()
    key_hint = fields.String(metadata={"description": "last characters of the write key"})
    rate_limit_per_second = fields.Float(allow_none=True)
    kind = fields.String()
    allowed_origins = fields.List(fields.String(), allow_none=True)
    created_at = fields.DateTime()
    key_rotated_at = fields.DateTime(allow_none=True)
    disabled_at = fields.DateTime(allow_none=True)


class SourceWithKey(SourceOut):
    write_key = fields.String(metadata={"description": "shown once; stored only hashed"})


class SourceList(ma.Schema):
    items = fields.List(fields.Nested(SourceOut))


class FailedEventQuery(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    kind = fields.String(validate=validate.OneOf(["schema_violation", "size_violation"]))
    pending = fields.Boolean(metadata={"description": "only those not resubmitted"})
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class FailedEventOut(ma.Schema):
    id = fields.Integer()
    received_at = fields.DateTime()
    source = fields.String()
    path = fields.String()
    call_type = fields.String(allow_none=True)
    batch_index = fields.Integer(allow_none=True)
    kind = fields.String()
    reason = fields.String()
    field_errors = fields.Dict(data_key="fields")
    body = fields.String(metadata={"description": "the event as received (UTF-8)"})
    resubmitted_at = fields.DateTime(allow_none=True)
    resubmitted_event_id = fields.String(allow_none=True)


class FailedEventPage(ma.Schema):
    items = fields.List(fields.Nested(FailedEventOut))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


class ResubmitIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    event = fields.Dict(load_default=None, metadata={"description": "corrected event"})


class ResubmitOut(ma.Schema):
    event_id = fields.String()
    accepted = fields.Boolean(metadata={"description": "false: accepted before, not re-sent"})


class AcceptedResponse(ma.Schema):
    success = fields.Boolean(required=True)
    accepted = fields.Integer(metadata={"description": "events made durable by this call"})
    duplicates = fields.Integer(metadata={"description": "messageIds already accepted before"})
    rejected = fields.List(fields.Nested(RejectedEvent))
