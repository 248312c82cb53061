"""What every service does to be safe in a browser and against guessing: one installer,
:func:`install_security`, called once in each ``create_app``.

Every response carries:

==============================  ==================================================
``X-Content-Type-Options``      ``nosniff``
``X-Frame-Options``             ``DENY`` (and CSP ``frame-ancestors 'none'``)
``Referrer-Policy``             ``no-referrer``
``Content-Security-Policy``     :data:`API_CSP` for JSON (and everything else),
                                :data:`PAGE_CSP` under a page prefix (``/app``),
                                :data:`DOCS_CSP` for Swagger UI at ``/docs``
``Strict-Transport-Security``   only on a request that came over HTTPS
``Cache-Control: no-store``     pages, and responses to requests carrying
                                credentials (``Authorization``)
==============================  ==================================================

Behind a TLS-terminating proxy the service sees plain HTTP unless it trusts the proxy's
``X-Forwarded-Proto`` (``FUNNEL_TRUSTED_PROXIES``); otherwise the proxy should send HSTS
itself. ``FUNNEL_COOKIE_SECURE=true`` (implied by ``FUNNEL_ENV=production``) makes the
session cookie ``Secure``. Cookies are always ``HttpOnly`` and ``SameSite=Lax``.

Failed sign-ins (``/app/login``) and unknown bearer tokens are throttled per client
address (``request.remote_addr``) by a :class:`~shared.ratelimit.FailureThrottle`: by
default 10 failures a minute, then 429 with ``Retry-After`` for every credential from that
address (a valid one too — a right guess must look like a wrong one) until a failure's
worth has refilled; successes take nothing from the bucket. The limits are in
:class:`~shared.config.SecurityConfig`. Behind a proxy, ``remote_addr`` is the proxy's
unless the service trusts ``X-Forwarded-For`` (``FUNNEL_TRUSTED_PROXIES``, every service:
intake stamps events with the same address).
"""

from __future__ import annotations

import base64
import hashlib

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from shared.config import SecurityConfig
from shared.http import DOCS_ENDPOINT, HTML_ERRORS, SIGN_IN_THROTTLE
from shared.ratelimit import FailureThrottle

PAGE_EVENT_HANDLERS = ("this.form.submit()",)
"""Inline event handlers the pages use (a filter that submits itself on change): allowed
by hash, nothing else runs on a page."""


def csp_hash(source: str) -> str:
    """A CSP source expression allowing exactly this script text."""
    digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
    return f"'sha256-{digest}'"


API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
PAGE_CSP = (
    "default-src 'none'; "
    f"script-src 'unsafe-hashes' {' '.join(csp_hash(h) for h in PAGE_EVENT_HANDLERS)}; "
    "style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# Swagger UI: its bundle and CSS from /_static/swagger-ui/, a start script of ours (no
# inline script), SVG icons as data: URIs in its CSS, the spec and "Try it out" calls
# to this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HSTS = "max-age=31536000"

BASELINE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _under_pages(app: Flask, path: str) -> bool:
    prefixes = app.extensions.get(HTML_ERRORS, {})
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def install_security(app: Flask, security: SecurityConfig) -> None:
    """Headers on every response, cookie flags, the failed-attempt throttle, and the
    client's address and scheme from the proxies the service trusts (none by default)."""
    if security.trusted_proxies:
        n = security.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    app.config["SESSION_COOKIE_SECURE"] = security.secure_cookies
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.extensions[SIGN_IN_THROTTLE] = FailureThrottle(
        security.sign_in_failures,
        security.sign_in_window_seconds,
        max_keys=security.throttle_max_addresses,
    )

    @app.after_request
    def security_headers(response: Response) -> Response:
        headers = response.headers
        headers.update(BASELINE_HEADERS)
        page = _under_pages(app, request.path)
        if request.endpoint == DOCS_ENDPOINT:
            headers["Content-Security-Policy"] = DOCS_CSP
        elif page:
            headers["Content-Security-Policy"] = PAGE_CSP
        else:
            headers["Content-Security-Policy"] = API_CSP
        if request.is_secure:
            headers["Strict-Transport-Security"] = HSTS
        if page or "Authorization" in request.headers:
            headers["Cache-Control"] = "no-store"
        return response
