"""HTTP plumbing every service shares: the API object, one JSON error shape, bearer-token
roles (failed attempts throttled per address), and Swagger UI served from the service
itself (no CDN, no inline script: see :mod:`shared.security` for its CSP).

Every error body is ``{"error": {"code": str, "message": str, "fields": {name: [reasons]}}}``.
Validation errors name each field (``fields``); nothing but a real bug answers 5xx.
"""

from __future__ import annotations

import functools
import hmac
import html
import json
import logging
import math
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import marshmallow as ma
from flask import Flask, Response, current_app, g, request, send_from_directory, url_for
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api as _SmorestApi
from flask_smorest import Blueprint as _SmorestBlueprint
from flask_smorest import abort
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from webargs import core as webargs_core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.routing import IntegerConverter

from shared.config import KafkaConfig
from shared.db import reading
from shared.limits import MAX_INTEGER
from shared.ratelimit import FailureThrottle, retry_after_header

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S")

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ErrorBodySchema(ma.Schema):
    code = ma.fields.String(metadata={"description": "machine-readable error code"})
    message = ma.fields.String(metadata={"description": "what went wrong"})
    field_errors = ma.fields.Dict(
        data_key="fields",
        keys=ma.fields.String(),
        metadata={"description": "field name → list of reasons, for validation errors"},
    )


class ErrorSchema(ma.Schema):
    error = ma.fields.Nested(ErrorBodySchema)


def flatten_field_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn webargs/marshmallow error trees into ``{"a.b.0.c": ["reason", …]}``.

    The top level of a webargs tree is the location (``json``, ``query``…); it is dropped
    so a field is named as the client spelled it.
    """
    out: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                out[name] = list(value)
            else:
                out.update(flatten_field_errors(value, name))
    elif isinstance(messages, list):
        out[prefix or "_schema"] = [str(m) for m in messages]
    else:
        out[prefix or "_schema"] = [str(messages)]
    return out


def fail(status: int, message: str, **kwargs: Any) -> NoReturn:
    """``flask_smorest.abort`` typed as never returning; ``errors=`` names fields and
    ``headers=`` adds response headers."""
    abort(status, message=message, **kwargs)
    raise AssertionError("abort returned")  # pragma: no cover


def or_404(value: S | None, message: str) -> S:
    """``value``, or a 404 with ``message`` when there is none."""
    if value is None:
        fail(404, message)
    return value


def error_body(code: str, message: str, fields: Mapping[str, list[str]] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": dict(fields or {})}}


# --------------------------------------------------------------------------- JSON bodies


class NotJSON(json.JSONDecodeError):
    """A request body that is not JSON Funnel can hold (see :func:`loads_strict`)."""

    def __init__(self, reason: str, doc: str = "<body>", pos: int = 0) -> None:
        super().__init__(reason, doc or "<body>", pos)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond a double's range")
    return value


def loads_strict(data: str | bytes) -> Any:
    """Parse a request body as JSON the way Funnel can store and publish it: ``NaN`` and
    ``Infinity`` are refused (they are not JSON, and PostgreSQL's json type rejects them),
    so are numbers a double cannot hold and nesting deeper than the parser's stack.
    Raises :class:`NotJSON` (a ``json.JSONDecodeError``) with the reason."""
    try:
        return json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise NotJSON(reason, "<body>", exc.pos) from exc
    except UnicodeDecodeError as exc:
        raise NotJSON(f"not UTF-8 at byte {exc.start}") from exc
    except RecursionError as exc:
        raise NotJSON("nests too deeply") from exc
    except ValueError as exc:  # NaN/Infinity, an integer of thousands of digits
        raise NotJSON(str(exc)) from exc


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, reading with :func:`loads_strict` (``request.get_json`` anywhere)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_strict(s)


class StrictParser(FlaskParser):
    """webargs' Flask parser reading JSON bodies with :func:`loads_strict`; a body that is
    not JSON answers 400 with the reason under the field ``_body``."""

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return webargs_core.missing
        data = req.get_data(cache=True)
        if not data:
            return webargs_core.missing
        return loads_strict(data)

    def _handle_invalid_json_error(self, error: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
        abort(400, exc=error, messages={"json": {"_body": [f"not valid JSON: {error}"]}})


class Blueprint(_SmorestBlueprint):
    """flask-smorest's Blueprint reading bodies with :class:`StrictParser`."""

    ARGUMENTS_PARSER = StrictParser()


# A request's id for the logs (shared.logs) and the answer: the client's when it is a
# sane token, else one made up.
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

HTML_ERRORS = "funnel_html_errors"
"""``app.extensions[HTML_ERRORS]``: URL prefix → renderer of an HTTP error as a page, for
browser-facing paths (everything else answers in the JSON error shape)."""


class Api(_SmorestApi):
    """flask-smorest's Api with Funnel's single error shape."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> Any:
        status = error.code or 500
        if isinstance(error, InternalServerError):
            original = getattr(error, "original_exception", None)
            if original is not None:
                log.error("unhandled error", exc_info=original)
        data = getattr(error, "data", None) or {}
        headers = dict(data.get("headers") or {})
        for prefix, render in current_app.extensions.get(HTML_ERRORS, {}).items():
            if request.path == prefix or request.path.startswith(prefix + "/"):
                page = current_app.make_response(render(error))
                page.headers.update(headers)  # e.g. Retry-After on a 429
                return page
        fields: dict[str, list[str]] = {}
        messages = data.get("errors") or data.get("messages")
        if messages:
            if isinstance(messages, Mapping) and set(messages) <= {
                "json",
                "query",
                "form",
                "headers",
                "files",
                "view_args",
                "path",
                "cookies",
            }:
                for location_errors in messages.values():
                    fields.update(flatten_field_errors(location_errors))
            else:
                fields.update(flatten_field_errors(messages))
        message = data.get("message") or error.description or error.name
        if status == 400 and "_body" in fields and not data.get("message"):
            message = "request body is " + "; ".join(fields["_body"])
        elif status == 422 and not data.get("message"):
            message = "request failed validation: " + ", ".join(sorted(fields))
        body = error_body(data.get("code") or ERROR_CODES.get(status, "error"), message, fields)
        return body, status, headers


class IdConverter(IntegerConverter):
    """``<id:name>``: a row id in a path — 1 to 2^63-1; anything else does not match
    (404), so no id too large for the database's integer ever reaches a query."""

    def __init__(self, url_map: Any) -> None:
        super().__init__(url_map, min=1, max=MAX_INTEGER)


def _id_schema(_converter: Any) -> dict[str, Any]:
    return {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_INTEGER}


SWAGGER_UI_ASSETS = "/_static/swagger-ui/"
DOCS_ENDPOINT = "swagger_ui"
"""The endpoint of ``/docs`` (its Content-Security-Policy differs from the API's)."""

_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="{assets}swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-spec-url="{spec_url}"></div>
<script src="{assets}swagger-ui-bundle.js"></script>
<script src="{start}"></script>
</body>
</html>
"""

# Served as a file, not inline, so the docs' CSP needs no 'unsafe-inline' for scripts.
# validatorUrl null: Swagger UI would otherwise load a badge from swagger.io.
_DOCS_SCRIPT = """window.addEventListener("load", function () {
  var node = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: node.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    validatorUrl: null
  });
});
"""


WRITES_ON_GET = "funnel_writes_on_get"


def writes_on_get(view: F) -> F:
    """Mark a view (a function, or a ``MethodView``'s ``get``) whose GET writes: a
    tracking link (a click, an open pixel) is a GET by nature, and so is the access
    export that starts its request and is audited. Every other GET and HEAD reads only
    (see ``init_api``)."""
    setattr(view, WRITES_ON_GET, True)
    return view


def _writes_on_get() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        view = getattr(view_class, "get", None)
    return bool(getattr(view, WRITES_ON_GET, False))


def init_api(app: Flask, *, title: str, version: str = "1.0") -> Api:
    """Configure OpenAPI at ``/openapi.json`` and Swagger UI at ``/docs``, its scripts and
    styles served by the service (``swagger-ui-bundle``), none of them inline."""
    import swagger_ui_bundle

    app.config.setdefault("API_TITLE", title)
    app.config.setdefault("API_VERSION", version)
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.json = StrictJSONProvider(app)
    asset_dir = swagger_ui_bundle.swagger_ui_path

    @app.get(SWAGGER_UI_ASSETS + "<path:filename>")
    def swagger_ui_asset(filename: str) -> Any:
        return send_from_directory(asset_dir, filename)

    @app.get("/_static/funnel-docs.js")
    def swagger_ui_start() -> Response:
        return Response(_DOCS_SCRIPT, mimetype="text/javascript")

    @app.get("/docs", endpoint=DOCS_ENDPOINT)
    def swagger_ui() -> Response:
        page = _DOCS_PAGE.format(
            title=html.escape(str(app.config["API_TITLE"])),
            assets=SWAGGER_UI_ASSETS,
            spec_url=html.escape(url_for("api-docs.openapi_json")),
            start=url_for("swagger_ui_start"),
        )
        return Response(page, mimetype="text/html")

    @app.before_request
    def _request_id() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

    @app.before_request
    def _safe_methods_only_read() -> None:
        # GET and HEAD change nothing (HTTP's safe methods): their transactions read
        # without SQLite's write lock (shared.db.reading). A GET that tried to write
        # would fail loudly, so none can slip in. Set for every request, either way: a
        # worker thread whose last request's teardown did not run starts right again.
        g.reading = ExitStack()
        g.reading.enter_context(reading(request.method in ("GET", "HEAD") and not _writes_on_get()))

    @app.teardown_request
    def _end_reading(_error: BaseException | None) -> None:
        held = g.pop("reading", None)
        if held is not None:
            held.close()

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        request_id = getattr(g, "request_id", None)
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    app.url_map.converters["id"] = IdConverter
    api = Api(app)
    api.register_converter(IdConverter, _id_schema)
    api.spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "role token"}
    )
    return api


# --------------------------------------------------------------------------- auth


def role_for_token(token: str, tokens: Mapping[str, str]) -> str | None:
    """The role a bearer token belongs to, compared in constant time, or None."""
    found = None
    for role, expected in tokens.items():
        if expected and hmac.compare_digest(token.encode(), expected.encode()):
            found = role
    return found


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@dataclass(frozen=True)
class Principal:
    """Who a bearer token belongs to: a shared role token (``person_id`` None), or one
    person's own token (e.g. a sales rep's), which acts with ``role`` as that person."""

    role: str
    person_id: int | None = None
    name: str = ""
    # May see personal fields (e-mails, phones) unmasked; role tokens may not.
    pii: bool = False


PERSON_TOKENS = "funnel_person_tokens"
"""``app.extensions[PERSON_TOKENS]``: a callable token → :class:`Principal` or None, asked
when a token is not one of the role tokens (a service's own per-person tokens)."""


SIGN_IN_THROTTLE = "funnel_sign_in_throttle"
"""``app.extensions[SIGN_IN_THROTTLE]``: the :class:`~shared.ratelimit.FailureThrottle` of
failed sign-ins and bearer attempts per client address (set by
:func:`shared.security.install_security`; without it nothing is throttled)."""


def refuse_if_throttled() -> None:
    """429 with ``Retry-After`` when the client's address has used up its failed attempts
    (see :class:`~shared.ratelimit.FailureThrottle`); call it before checking a credential.
    Under a page prefix the 429 is a page, elsewhere the JSON error shape."""
    throttle = current_app.extensions.get(SIGN_IN_THROTTLE)
    if not isinstance(throttle, FailureThrottle):
        return
    wait = throttle.retry_after(request.remote_addr or "")
    if wait:
        fail(
            429,
            "too many failed sign-in attempts from your address; try again later",
            headers={"Retry-After": retry_after_header(wait)},
        )


def note_failed_attempt() -> None:
    """Count a credential that did not work against the client's address."""
    throttle = current_app.extensions.get(SIGN_IN_THROTTLE)
    if isinstance(throttle, FailureThrottle):
        throttle.failed(request.remote_addr or "")


def principal_for_token(token: str) -> Principal | None:
    role = role_for_token(token, current_app.config["FUNNEL_TOKENS"])
    if role is not None:
        return Principal(role=role, name=role)
    resolve = current_app.extensions.get(PERSON_TOKENS)
    return resolve(token) if resolve is not None else None


def current_principal() -> Principal:
    """The caller of a view behind :func:`require_role`."""
    principal: Principal = g.funnel_principal
    return principal


BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
"""The OpenAPI security requirement of a view behind :func:`require_role`."""
ROLES_EXTENSION = "x-funnel-roles"
"""The OpenAPI operation field listing the roles :func:`require_role` lets in (the access
grid test reads it, so no endpoint can be forgotten)."""


def require_role(*roles: str) -> Callable[[F], F]:
    """Allow the view only to bearer tokens of ``roles``: no/unknown token → 401, a valid
    token of another role → 403; the view is documented as needing a bearer token. Role
    tokens come from ``app.config["FUNNEL_TOKENS"]``, personal ones from the service's
    resolver (see :data:`PERSON_TOKENS`). Unknown tokens count against the caller's
    address; past the limit every token from it gets 429 until the bucket refills."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            challenge = {"WWW-Authenticate": 'Bearer realm="funnel"'}
            token = bearer_token()
            if token is None:
                fail(401, "missing bearer token", headers=challenge)
            refuse_if_throttled()
            principal = principal_for_token(token)
            if principal is None:
                note_failed_attempt()
                fail(401, "unknown bearer token", headers=challenge)
            if principal.role not in roles:
                fail(403, f"role {principal.role!r} may not do this; needs {' or '.join(roles)}")
            g.funnel_principal = principal
            return view(*args, **kwargs)

        # The OpenAPI document says so too: one place for the role check and its doc.
        return _SmorestBlueprint.doc(security=BEARER, **{ROLES_EXTENSION: list(roles)})(wrapper)

    return decorator


def app_state(key: str, kind: type[S]) -> S:
    """The typed state a service's ``create_app`` keeps in ``app.extensions[key]``, for
    the current request. Raises ``RuntimeError`` when the app was built without it."""
    state = current_app.extensions.get(key)
    if not isinstance(state, kind):
        raise RuntimeError(f"app.extensions[{key!r}] is not a {kind.__name__}")
    return state


def register_health(app: Flask, engine: Engine, kafka: KafkaConfig) -> None:
    """``/healthz``: the process answers (liveness: restart it when this fails).
    ``/readyz``: it can do its work — its database answers ``SELECT 1`` and a Kafka
    bootstrap server accepts a connection — else 503 naming what is not (readiness: send
    it no traffic, do not restart it). Each check is bounded to a few seconds."""

    @app.get("/healthz")
    def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Any:
        problems = {}
        database = database_problem(engine)
        if database is not None:
            problems["database"] = [database]
        broker = kafka_problem(kafka.bootstrap_servers)
        if broker is not None:
            problems["kafka"] = [broker]
        if problems:
            fail(503, "not ready", errors=problems, headers={"Retry-After": "5"})
        return {"status": "ready", "checks": {"database": "ok", "kafka": "ok"}}


def database_problem(engine: Engine) -> str | None:
    """Why the database does not answer, or None."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return None


def kafka_problem(bootstrap_servers: str, timeout: float = 2.0) -> str | None:
    """None when one of the bootstrap servers accepts a TCP connection; else why not.
    (Reachability, not health: a broker that accepts connections but cannot serve shows
    in consumer lag and the relay's errors.)"""
    last = "no bootstrap servers configured"
    for server in filter(None, (s.strip() for s in bootstrap_servers.split(","))):
        host, _, port = server.rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout).close()
        except (OSError, ValueError) as exc:
            last = f"{server}: {exc}"
            continue
        return None
    return last


class DecompressRequest:
    """WSGI middleware: inflate ``Content-Encoding: gzip`` request bodies (the RudderStack
    and Segment SDKs can send them), never holding more than ``max_bytes`` inflated.

    Over the limit → 413, corrupt gzip → 400, both in the Funnel error shape.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self, start_response: Any, status: str, code: str, message: str) -> list[bytes]:
        from shared.security import API_CSP, BASELINE_HEADERS

        body = json.dumps(error_body(code, message)).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        headers += [*BASELINE_HEADERS.items(), ("Content-Security-Policy", API_CSP)]
        start_response(status, headers)
        return [body]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_CONTENT_ENCODING", "").strip().lower() != "gzip":
            return self.app(environ, start_response)
        import io
        import zlib

        # Never read past Content-Length (WSGI forbids it; on some servers it blocks);
        # without one, only a stream the server marks terminated may be read to the end.
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isdigit():
            if int(length) > self.max_bytes:
                return self._error(
                    start_response,
                    "413 REQUEST ENTITY TOO LARGE",
                    "payload_too_large",
                    f"body exceeds {self.max_bytes} bytes",
                )
            compressed = environ["wsgi.input"].read(int(length))
        elif environ.get("wsgi.input_terminated"):
            compressed = environ["wsgi.input"].read(self.max_bytes + 1)
        else:
            compressed = b""
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(compressed, self.max_bytes + 1)
        except zlib.error:
            return self._error(
                start_response, "400 BAD REQUEST", "bad_request", "corrupt gzip body"
            )
        if len(compressed) > self.max_bytes or len(body) > self.max_bytes:
            return self._error(
                start_response,
                "413 REQUEST ENTITY TOO LARGE",
                "payload_too_large",
                f"body exceeds {self.max_bytes} bytes",
            )
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_CONTENT_ENCODING", None)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = True
        return self.app(environ, start_response)
