"""traffic-intake HTTP API: Segment's Tracking API (``/v1/track`` … ``/v1/batch``, and the
short paths analytics.js uses: ``/v1/t``, ``/v1/p``, ``/v1/i``, ``/v1/g``, ``/v1/a``,
``/v1/s``).

Every endpoint answers 200 ``{"success": true, "accepted", "duplicates", "rejected"}`` only
after the accepted events are committed to the outbox; the relay publishes them. Order of
checks: body within the size limit (413), write key (401), source enabled (403), the
browser's origin (403), rate limit (429), then validation. Rejected events are kept (see
:mod:`failed`).

Browsers: a body sent as ``text/plain`` (or with no type: ``navigator.sendBeacon``) is
read as JSON, so SDKs can send without a CORS preflight and while a page unloads; the
write key then travels in the body (``writeKey``). A request carrying ``Origin`` must use
a browser source's key from one of its allowed origins (a server key from a browser is
refused: it would no longer be secret); the answer then carries
``Access-Control-Allow-Origin`` for that origin. A preflight (``OPTIONS``, no key) is
answered for the origins some browser source allows.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, NoReturn

from flask import Response, current_app, g, request
from flask.views import MethodView
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from services.traffic_intake import failed
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.group_commit import Overloaded
from services.traffic_intake.origins import normal_origin
from services.traffic_intake.schemas import CALL_SCHEMAS, AcceptedResponse, BatchRequest
from services.traffic_intake.segment import to_envelope
from services.traffic_intake.sources import Source
from services.traffic_intake.state import state
from shared.events import Envelope
from shared.http import Blueprint, fail, flatten_field_errors
from shared.limits import compact_json, json_size
from shared.metrics import INTAKE_ACCEPTED, INTAKE_DUPLICATES, INTAKE_REJECTED
from shared.provenance import BROWSER
from shared.ratelimit import retry_after_header

blp = Blueprint("tracking", __name__, description="Segment-compatible Tracking API")

# Schema instances are costly to build (marshmallow copies declared fields): one per type.
_CALL_LOADERS = {name: schema() for name, schema in CALL_SCHEMAS.items()}


def _config() -> IntakeConfig:
    return state().config


def _write_key_from_request() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            user, _, _password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user or None
    body = request.get_json(silent=True, force=True)
    if isinstance(body, dict) and isinstance(body.get("writeKey"), str):
        return body["writeKey"] or None
    return None


def _store_unavailable() -> NoReturn:
    current_app.logger.exception("intake store unavailable")
    fail(503, "event store unavailable, retry", headers={"Retry-After": "2"})


def authenticate_source() -> Source:
    """Segment-style write key: Basic auth user name (empty password) or ``writeKey`` in
    the body. Missing or unknown → 401; disabled source → 403. Keys only write."""
    key = _write_key_from_request()
    if key is None:
        fail(401, "missing write key (HTTP Basic user name or writeKey in the body)")
    try:
        source = state().sources.lookup(key)
    except SQLAlchemyError:
        _store_unavailable()
    if source is None:
        fail(401, "unknown write key")
    if not source.enabled:
        fail(403, f"source {source.name!r} is disabled")
    return source


def _rate_limit(source: Source) -> None:
    config = _config()
    rate = source.rate_limit_per_second or config.rate_limit_per_second
    burst = max(1.0, rate * config.rate_limit_burst_seconds)
    wait = state().buckets.acquire(source.name, rate=rate, burst=burst)
    if wait:
        fail(
            429,
            f"rate limit of {rate:g} requests/s for source {source.name!r} exceeded",
            headers={"Retry-After": retry_after_header(wait)},
        )


def _persist(envelopes: list[Envelope], rejections: list[failed.Rejection]) -> int:
    """Commit accepted events (and the rejected ones, kept) in one transaction, shared
    with other requests' writes (:mod:`.group_commit`); returns how many accepted events
    were new, once they are committed. A store that cannot take the write, or a writer
    with too much waiting, answers 503 with Retry-After, never a hang."""
    try:
        written = state().writes.write(
            g.source.name, envelopes, rejections, expected=g.pop("intake_expected", False)
        )
    except Overloaded as exc:
        current_app.logger.warning("intake writer overloaded: %s", exc)
        fail(503, "intake is busy, retry", headers={"Retry-After": "1"})
    except SQLAlchemyError:
        _store_unavailable()
    source = g.source.name
    INTAKE_ACCEPTED.labels(source).inc(written.new)
    INTAKE_DUPLICATES.labels(source).inc(len(envelopes) - written.dropped - written.new)
    for rejection in rejections:
        INTAKE_REJECTED.labels(source, rejection.kind).inc()
    # A dropped event counts as accepted: the door tells nothing about erasure.
    return written.new + written.dropped


def _accepted(accepted: int, duplicates: int, rejected: list[dict[str, Any]]) -> dict[str, Any]:
    return {"success": True, "accepted": accepted, "duplicates": duplicates, "rejected": rejected}


def _single_call_view(call_type: str) -> type[MethodView]:
    schema_cls = CALL_SCHEMAS[call_type]

    class CallView(MethodView):
        # An instance, built once: given a class, webargs builds (deep-copies) the schema
        # on every request, a fifth of a single event's handling.
        @blp.arguments(schema_cls(), location="json")
        @blp.response(200, AcceptedResponse)
        @blp.doc(security=[{"basicAuth": []}])
        def post(self, call: dict[str, Any]) -> dict[str, Any]:
            envelope = to_envelope(
                call_type,
                call,
                source=g.source.name,
                received_at=datetime.now(UTC),
                client_ip=request.remote_addr,
                source_kind=g.source.kind,
            )
            new = _persist([envelope], [])
            return _accepted(new, 1 - new, [])

    CallView.__name__ = f"{call_type.title()}View"
    CallView.post.__doc__ = f"Record a Segment `{call_type}` call."
    return CallView


# analytics.js (``@segment/analytics-next``) posts single calls to these short paths.
SHORT_PATHS = {
    "track": "t",
    "page": "p",
    "screen": "s",
    "identify": "i",
    "group": "g",
    "alias": "a",
}
for _call_type in ("track", "page", "screen", "identify", "group", "alias"):
    _view = _single_call_view(_call_type)
    blp.route(f"/v1/{_call_type}")(_view)
    blp.route(f"/v1/{SHORT_PATHS[_call_type]}", endpoint=f"{_call_type}_short")(_view)


def _reject(
    index: int, kind: str, field_errors: dict[str, list[str]], item: Any, call_type: str | None
) -> tuple[dict[str, Any], failed.Rejection]:
    body = compact_json(item).encode()
    return (
        {"index": index, "kind": kind, "field_errors": field_errors},
        failed.Rejection("/v1/batch", call_type, index, kind, field_errors, body),
    )


@blp.route("/v1/batch")
class BatchView(MethodView):
    @blp.arguments(BatchRequest(), location="json")
    @blp.response(200, AcceptedResponse)
    @blp.doc(security=[{"basicAuth": []}])
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Record many calls. Valid ones are accepted even when others are rejected; each
        rejected one is reported with its index, kind and field reasons, and kept as a
        failed event. If none is valid the answer is 422."""
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
        reported: list[dict[str, Any]] = []
        kept: list[failed.Rejection] = []
        # The batch's context is merged into every event, so it counts toward each one's
        # size (an upper bound: keys the event sets itself are counted twice).
        context_size = json_size(body["context"]) if body["context"] else 0
        for index, item in enumerate(items):
            call_type = item.get("type")
            rejection = None
            if call_type not in CALL_SCHEMAS:
                rejection = _reject(
                    index,
                    "schema_violation",
                    {"type": [f"must be one of {sorted(CALL_SCHEMAS)}"]},
                    item,
                    None,
                )
            else:
                size = json_size(item) + context_size
                if size > config.max_event_bytes:
                    rejection = _reject(
                        index,
                        "size_violation",
                        {
                            "_event": [
                                f"{size} bytes with the batch context; max {config.max_event_bytes}"
                                if context_size
                                else f"{size} bytes; max {config.max_event_bytes}"
                            ]
                        },
                        item,
                        call_type,
                    )
            if rejection is None:
                try:
                    call = _CALL_LOADERS[call_type].load(item)
                except ValidationError as exc:
                    rejection = _reject(
                        index,
                        "schema_violation",
                        flatten_field_errors(exc.messages),
                        item,
                        call_type,
                    )
            if rejection is not None:
                reported.append(rejection[0])
                kept.append(rejection[1])
                continue
            envelopes.append(
                to_envelope(
                    call_type,
                    call,
                    source=g.source.name,
                    received_at=received_at,
                    client_ip=request.remote_addr,
                    batch_sent_at=body.get("sentAt"),
                    batch_context=body.get("context"),
                    source_kind=g.source.kind,
                )
            )
        if not envelopes:
            _persist([], kept)  # keep them, then answer 422
            fail(
                422,
                "no event in the batch is valid",
                errors={
                    f"batch.{r['index']}.{name}": reasons
                    for r in reported
                    for name, reasons in r["field_errors"].items()
                },
            )
        new = _persist(envelopes, kept)
        return _accepted(new, len(envelopes) - new, reported)


@blp.before_request
def before_tracking_request() -> Response | None:
    """Read the body within the limit first (413 beyond it, chunked bodies included; the
    JSON parser would otherwise report a cut body as bad JSON), then the write key (a
    request without one learns nothing about validation), the browser origin, rate limit,
    per-event limit. A preflight is answered before any of it."""
    if request.method == "OPTIONS":
        return _preflight()
    _read_plain_text_as_json()
    data = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # Werkzeug stops a length-less (chunked) body at the limit without an error, handing
    # back a cut body; one that fills the limit is over it.
    if request.content_length is None and len(data) >= limit:
        fail(413, f"body exceeds {limit} bytes", errors={"_body": [f"max {limit} bytes"]})
    g.source = authenticate_source()
    _check_origin(g.source)
    _rate_limit(g.source)
    if request.path != "/v1/batch" and len(data) > _config().max_event_bytes:
        fail(
            413,
            f"event exceeds {_config().max_event_bytes} bytes",
            errors={"_body": [f"max {_config().max_event_bytes} bytes"]},
        )
    # On its way to a write: the group writer may wait a moment for it (see _persist).
    state().writes.expect()
    g.intake_expected = True
    return None


@blp.teardown_request
def not_expected_any_more(_error: BaseException | None) -> None:
    """A request that ended without writing (rejected, failed) is not waited for."""
    if g.pop("intake_expected", False):
        state().writes.unexpect()


def _read_plain_text_as_json() -> None:
    """Browser SDKs send JSON as ``text/plain`` (no preflight) and sendBeacon may send no
    type at all: such a body is parsed as the JSON it is."""
    raw = request.environ.get("CONTENT_TYPE", "")
    if raw.split(";", 1)[0].strip().lower() in ("", "text/plain"):
        request.environ["CONTENT_TYPE"] = "application/json"
        request.__dict__.pop("_parsed_content_type", None)


def _check_origin(source: Source) -> None:
    """A request from a web page (``Origin``) must use a browser source's key, from one of
    its origins."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if source.kind != BROWSER:
        fail(
            403,
            f"source {source.name!r} has a server key: it must never be used from a browser",
            errors={"Origin": ["use a browser source's write key in web pages"]},
        )
    if normal_origin(origin) not in source.origins:
        fail(
            403,
            f"origin {origin[:200]!r} is not allowed for source {source.name!r}",
            errors={"Origin": ["not one of the source's allowed origins"]},
        )
    g.cors_origin = normal_origin(origin) and origin


CORS_MAX_AGE = "600"


def _preflight() -> Response:
    """``OPTIONS`` from a browser about to POST: allowed for the origins of browser
    sources (the key is not sent with a preflight), refused otherwise."""
    origin = request.headers.get("Origin", "")
    method = request.headers.get("Access-Control-Request-Method", "")
    try:
        allowed = normal_origin(origin) in state().sources.browser_origins()
    except SQLAlchemyError:
        _store_unavailable()
    if not allowed or method.upper() != "POST":
        fail(403, "this origin may not send here", errors={"Origin": ["not allowed"]})
    response = current_app.make_response(("", 204))
    response.headers.update(
        {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Content-Type, Authorization",
            "Access-Control-Max-Age": CORS_MAX_AGE,
            "Vary": "Origin",
        }
    )
    return response


@blp.after_request
def allow_the_origin(response: Response) -> Response:
    """The answer to an allowed browser origin may be read by the page (SDKs read it to
    know whether to retry)."""
    origin = getattr(g, "cors_origin", None)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    return response


@blp.errorhandler(HTTPException)
def keep_rejected_single_calls(error: HTTPException) -> Response:
    """A single call rejected for its content (413 size, 422 schema) from an authenticated
    source is kept as a failed event; then the error is answered in the one shape."""
    call_type = request.path.rsplit("/", 1)[-1]
    if (
        getattr(g, "source", None) is not None
        and error.code in (413, 422)
        and call_type in CALL_SCHEMAS
    ):
        data = getattr(error, "data", None) or {}
        messages = data.get("messages") or data.get("errors") or {}
        field_errors = flatten_field_errors(messages.get("json", messages))
        kind = "size_violation" if error.code == 413 else "schema_violation"
        INTAKE_REJECTED.labels(g.source.name, kind).inc()
        try:
            with state().engine.begin() as conn:
                failed.record(
                    conn,
                    g.source.name,
                    [
                        failed.Rejection(
                            request.path,
                            call_type,
                            None,
                            kind,
                            field_errors or {"_body": [str(error)]},
                            request.get_data(cache=True),
                        )
                    ],
                )
        except SQLAlchemyError:
            current_app.logger.exception("could not keep a rejected event")
    return state().api.handle_http_exception(error)
