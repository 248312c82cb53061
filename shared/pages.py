"""Signing in to server-rendered pages, one way for every service.

Browsers cannot send bearer headers from links and forms, so a person signs in once with
a token (a role's token, or a person's own); who signed in lives in Flask's signed session
cookie, bound by a fingerprint to the token used: rotating or revoking the token signs
every session made with it out. Every form carries a CSRF token bound to the session, the
sign-in form too (:func:`login_csrf`, :func:`sign_in_attempt`); failed sign-ins count
against the client's address (:mod:`shared.security`: 429 past the limit). The cookie is
``HttpOnly``, ``SameSite=Lax``, and ``Secure`` in production or with
``FUNNEL_COOKIE_SECURE``; after signing in only a local path under the pages' prefix is
followed (never an open redirect).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from typing import Any

from flask import Flask, abort, current_app, redirect, request, session, url_for

from shared.http import Principal, note_failed_attempt, principal_for_token, refuse_if_throttled

SessionCheck = Callable[[], "str | None"]


def configure(
    app: Flask, secret_key: str, tokens: Mapping[str, str], previous: Sequence[str] = ()
) -> None:
    """Session cookies for pages: the configured secret, else (development only: production
    refuses to start without one, see ``SecurityConfig.check``) one derived from the
    tokens, so every worker of one deployment agrees without another setting. Sessions
    signed with one of the ``previous`` secrets stay valid (a rotation signs nobody out;
    drop the old secret once sessions made with it have expired)."""
    derived = hashlib.sha256(("funnel-pages:" + "|".join(tokens.values())).encode())
    app.config["SECRET_KEY"] = secret_key or derived.hexdigest()
    app.config["SECRET_KEY_FALLBACKS"] = list(previous)
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True


def fingerprint(secret: str) -> str:
    """What a session keeps of the token it was made with (never the token)."""
    return hashlib.sha256(f"funnel-page-session:{secret}".encode()).hexdigest()[:32]


def role_fingerprint(role: str) -> str | None:
    """The fingerprint of ``role``'s current token; None when the role has none."""
    token = current_app.config["FUNNEL_TOKENS"].get(role) or ""
    return fingerprint(token) if token else None


def start_session(role: str, token_fp: str | None, **extra: Any) -> None:
    """A fresh session for someone who just proved ``role`` (a new CSRF token)."""
    session.clear()
    session.update(role=role, csrf=secrets.token_urlsafe(24), token_fp=token_fp, **extra)


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of a form value with a session value; never equal when the
    session has none."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def login_csrf() -> str:
    """The CSRF token the sign-in form carries: the session's, made now for a visitor who
    has none. Signing in replaces it (:func:`start_session`)."""
    token = session.get("csrf") or ""
    if not token:
        token = secrets.token_urlsafe(24)
        session["csrf"] = token
    return str(token)


def sign_in_attempt(allowed: Callable[[Principal], bool]) -> Principal | None:
    """Who the POSTed sign-in form proves to be, or None when the token is unknown or not
    ``allowed`` on these pages (counted as a failed attempt from the client's address).
    A form without the session's CSRF token (:func:`login_csrf`) → 400; an address past
    its failed attempts → 429 with ``Retry-After``, before the token is even looked at."""
    if not _same(request.form.get("csrf", ""), str(session.get("csrf") or "")):
        abort(400, "invalid form token; reload the sign-in page")
    refuse_if_throttled()
    who = principal_for_token(request.form.get("token", "").strip())
    if who is None or not allowed(who):
        note_failed_attempt()
        return None
    return who


def local_next(prefix: str, default: str) -> str:
    """Where to go after signing in: ``?next=`` when it is a path under ``prefix``."""
    target = request.args.get("next", "")
    return target if target.startswith(prefix + "/") else default


def signed_in(expected: SessionCheck, login_endpoint: str) -> Callable[[Any], Any]:
    """A view decorator: the session's fingerprint must equal ``expected()`` (the current
    token's, None when the session is not valid for these pages), else the person is sent
    to sign in; a POST must carry the session's CSRF token (400 otherwise)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            want = expected()
            if want is None or not hmac.compare_digest(session.get("token_fp") or "", want):
                session.clear()
                return redirect(url_for(login_endpoint, next=request.full_path))
            if request.method == "POST" and not _same(
                request.form.get("csrf", ""), str(session.get("csrf") or "")
            ):
                abort(400, "invalid form token; reload the page")
            return view(*args, **kwargs)

        return wrapper

    return decorate
