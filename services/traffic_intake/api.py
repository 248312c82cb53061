"""traffic-intake HTTP API: Segment's Tracking API (``/v1/track`` … ``/v1/batch``).

Every endpoint answers 200 ``{"success": true, "accepted", "duplicates", "rejected"}`` only
after the accepted events are committed to the outbox; the relay publishes them.
"""

from __future__ import annotations

import base64
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.schemas import CALL_SCHEMAS, AcceptedResponse, BatchRequest
from services.traffic_intake.segment import to_envelope
from shared.events import Envelope
from shared.http import fail, flatten_field_errors
from shared.outbox import Outgoing, enqueue
from shared.topics import TRAFFIC

blp = Blueprint("tracking", __name__, description="Segment-compatible Tracking API")


def _config() -> IntakeConfig:
    return current_app.extensions["intake"].config


def _write_key_from_request() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            user, _, _password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user or None
    body = request.get_json(silent=True)
    if isinstance(body, dict) and isinstance(body.get("writeKey"), str):
        return body["writeKey"] or None
    return None


def authenticate_source() -> None:
    """Segment-style write key: Basic auth user name (empty password) or ``writeKey`` in
    the body. Missing or unknown → 401. Write keys reach only these write endpoints."""
    key = _write_key_from_request()
    if key is None:
        fail(401, "missing write key (HTTP Basic user name or writeKey in the body)")
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in _config().write_keys):
        fail(401, "unknown write key")


def _check_single_event_size() -> None:
    limit = _config().max_event_bytes
    if len(request.get_data(cache=True)) > limit:
        fail(413, f"event exceeds {limit} bytes", errors={"_body": [f"max {limit} bytes"]})


def _client_ip() -> str | None:
    return request.remote_addr


def _persist(envelopes: list[Envelope]) -> int:
    """Commit the events to the outbox; returns how many were new (not duplicates).
    A store that cannot take the write answers 503 with Retry-After, never a hang."""
    outgoing = [Outgoing(TRAFFIC, e.partition_key, e) for e in envelopes]
    try:
        with current_app.extensions["intake"].engine.begin() as conn:
            # Payloads come from the HTTP schemas, validated a moment ago.
            return enqueue(
                conn, current_app.extensions["intake"].outbox, outgoing, validate_payload=False
            )
    except SQLAlchemyError:
        current_app.logger.exception("outbox write failed")
        fail(503, "event store unavailable, retry", headers={"Retry-After": "2"})


def _accepted(accepted: int, duplicates: int, rejected: list[dict[str, Any]]) -> dict[str, Any]:
    return {"success": True, "accepted": accepted, "duplicates": duplicates, "rejected": rejected}


def _single_call_view(call_type: str) -> type[MethodView]:
    schema_cls = CALL_SCHEMAS[call_type]

    class CallView(MethodView):
        @blp.arguments(schema_cls, location="json")
        @blp.response(200, AcceptedResponse)
        @blp.doc(security=[{"basicAuth": []}])
        def post(self, call: dict[str, Any]) -> dict[str, Any]:
            received_at = datetime.now(UTC)
            envelope = to_envelope(
                call_type,
                call,
                source=_config().source_name,
                received_at=received_at,
                client_ip=_client_ip(),
            )
            new = _persist([envelope])
            return _accepted(new, 1 - new, [])

    CallView.__name__ = f"{call_type.title()}View"
    CallView.post.__doc__ = f"Record a Segment `{call_type}` call."
    return CallView


for _call_type in ("track", "page", "screen", "identify", "group", "alias"):
    blp.route(f"/v1/{_call_type}")(_single_call_view(_call_type))


@blp.route("/v1/batch")
class BatchView(MethodView):
    @blp.arguments(BatchRequest, location="json")
    @blp.response(200, AcceptedResponse)
    @blp.doc(security=[{"basicAuth": []}])
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Record many calls. Valid ones are accepted even when others are rejected; each
        rejected one is reported with its index, kind and field reasons. If none is valid
        the answer is 422."""
        config = _config()
        items = body["batch"]
        if len(items) > config.max_batch_events:
            fail(
                413,
                f"batch has {len(items)} events; the limit is {config.max_batch_events}",
                errors={"batch": [f"at most {config.max_batch_events} events"]},
            )
        received_at = datetime.now(UTC)
        envelopes: list[Envelope] = []
        rejected: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            call_type = item.get("type")
            if call_type not in CALL_SCHEMAS:
                rejected.append(
                    {
                        "index": index,
                        "kind": "schema_violation",
                        "field_errors": {"type": [f"must be one of {sorted(CALL_SCHEMAS)}"]},
                    }
                )
                continue
            size = len(json.dumps(item, separators=(",", ":"), default=str))
            if size > config.max_event_bytes:
                rejected.append(
                    {
                        "index": index,
                        "kind": "size_violation",
                        "field_errors": {"_event": [f"{size} bytes; max {config.max_event_bytes}"]},
                    }
                )
                continue
            try:
                call = CALL_SCHEMAS[call_type]().load(item)
            except ValidationError as exc:
                rejected.append(
                    {
                        "index": index,
                        "kind": "schema_violation",
                        "field_errors": flatten_field_errors(exc.messages),
                    }
                )
                continue
            envelopes.append(
                to_envelope(
                    call_type,
                    call,
                    source=config.source_name,
                    received_at=received_at,
                    client_ip=_client_ip(),
                    batch_sent_at=body.get("sentAt"),
                    batch_context=body.get("context"),
                )
            )
        if not envelopes:
            fail(
                422,
                "no event in the batch is valid",
                errors={
                    f"batch.{r['index']}.{name}": reasons
                    for r in rejected
                    for name, reasons in r["field_errors"].items()
                },
            )
        new = _persist(envelopes)
        return _accepted(new, len(envelopes) - new, rejected)


def before_tracking_request() -> None:
    """Read the body within the limit first (413 beyond it, chunked bodies included; the
    JSON parser would otherwise report a cut body as bad JSON), then the write key (a
    request without one learns nothing about validation), then the per-event limit."""
    data = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # Werkzeug stops a length-less (chunked) body at the limit without an error, handing
    # back a cut body; one that fills the limit is over it.
    if request.content_length is None and len(data) >= limit:
        fail(413, f"body exceeds {limit} bytes", errors={"_body": [f"max {limit} bytes"]})
    authenticate_source()
    if request.path != "/v1/batch":
        _check_single_event_size()


blp.before_request(before_tracking_request)
