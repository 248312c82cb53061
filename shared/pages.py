"""Signing in to server-rendered pages, one way for every service.

Browsers cannot send bearer headers from links and forms, so a person signs in once with
a token (a role's token, or a person's own); who signed in lives in Flask's signed session
cookie, bound by a fingerprint to the token used: rotating or revoking the token signs
every session made with it out. Every form carries a CSRF token bound to the session.
The cookie is ``HttpOnly`` and ``SameSite=Lax``; after signing in only a local path under
the pages' prefix is followed (never an open redirect).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from flask import Flask, abort, current_app, redirect, request, session, url_for

SessionCheck = Callable[[], "str | None"]


def configure(app: Flask, secret_key: str, tokens: Mapping[str, str]) -> None:
    """Session cookies for pages: the configured secret, else one derived from the tokens
    (so every worker of one deployment agrees without another setting)."""
    derived = hashlib.sha256(("funnel-pages:" + "|".join(tokens.values())).encode())
    app.config["SECRET_KEY"] = secret_key or derived.hexdigest()
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
            if request.method == "POST" and not hmac.compare_digest(
                request.form.get("csrf", ""), session.get("csrf", "")
            ):
                abort(400, "invalid form token; reload the page")
            return view(*args, **kwargs)

        return wrapper

    return decorate
