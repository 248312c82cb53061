"""The endpoints a message's recipient reaches, without signing in: each is authorised
by the signed token in its URL (:mod:`..delivery.links`), nothing else.

* ``GET /u/<token>`` — a page that says what unsubscribing does, with one button;
  ``POST /u/<token>`` — unsubscribes (:mod:`..people.unsubscribe`) and says so in plain
  words. The mail client's one-click button (RFC 8058) POSTs ``List-Unsubscribe=One-
  Click`` to the same URL. A GET never unsubscribes: mail scanners open links.
* ``GET /c/<token>`` — a tracked click: ``clicked`` for the report, then a redirect to
  the link's target (signed with the token: never an open redirect).
* ``GET /o/<token>`` — the open pixel: ``opened``, then a transparent 1x1 GIF.

A token that does not verify gets a 404 page; clicks and opens never fail the person
(a broken store still redirects and still answers the pixel).
"""

from __future__ import annotations

import base64
import logging

from flask import Blueprint, Response, abort, redirect, render_template, request
from flask.blueprints import BlueprintSetupState
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from services.member_retargeting.delivery.links import (
    CLICK,
    OPEN,
    UNSUBSCRIBE,
    InvalidLink,
    Link,
    Links,
)
from services.member_retargeting.delivery.status import (
    CLICKED,
    OPENED,
    delivery_status,
    dispatch_payload,
)
from services.member_retargeting.models import Dispatch, outbox
from services.member_retargeting.people.unsubscribe import unsubscribe
from services.member_retargeting.state import state
from shared.db import utcnow
from shared.http import HTML_ERRORS, writes_on_get
from shared.outbox import enqueue

log = logging.getLogger(__name__)
bp = Blueprint("public", __name__, template_folder="templates")
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PREFIXES = ("/u", "/c", "/o")


def _links() -> Links:
    config = state().config
    return Links(config.link_keys, config.delivery.public_url)


def _read(kind: str, token: str) -> Link:
    try:
        return _links().read(kind, token)
    except InvalidLink:
        abort(404, "This link is not valid. If you copied it, check that it is complete.")


def render_error(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    return render_template("public.html", title="Link not valid", text=error.description), status


@bp.record_once
def _html_errors(setup: BlueprintSetupState) -> None:
    for prefix in PREFIXES:
        setup.app.extensions.setdefault(HTML_ERRORS, {})[prefix] = render_error


@bp.get("/u/<token>")
def unsubscribe_page(token: str) -> str:
    _read(UNSUBSCRIBE, token)
    return render_template("public.html", title="Unsubscribe", confirm=True, token=token)


@bp.post("/u/<token>")
def unsubscribe_now(token: str) -> str:
    link = _read(UNSUBSCRIBE, token)
    with state().sessions.begin() as session:
        enqueue(session, outbox, unsubscribe(session, link.dispatch_id, link.contact_id, utcnow()))
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    log.info(
        "unsubscribed by %s (dispatch %s)", "one-click" if one_click else "page", link.dispatch_id
    )
    return render_template(
        "public.html",
        title="You are unsubscribed",
        text=(
            "You will not receive marketing e-mails from us any more. "
            "Messages you asked for, such as receipts, still reach you."
        ),
    )


def _record(link: Link, status: str, url: str | None = None) -> None:
    """Report a click or an open; never fails the person's request."""
    try:
        with state().sessions.begin() as session:
            row = session.scalar(select(Dispatch).where(Dispatch.event_id == link.dispatch_id))
            if row is None:
                return
            # One event per dispatch and status (per link for clicks): repeated opens and
            # clicks by a bot add nothing to the outbox.
            event = delivery_status(
                link.dispatch_id,
                dispatch_payload(row),
                status,
                utcnow(),
                url=url,
                occurrence=url or "",
            )
            enqueue(session, outbox, [event])
    except Exception:  # the person still gets their page or pixel
        log.exception("could not record %s of dispatch %s", status, link.dispatch_id)


@bp.get("/c/<token>")
@writes_on_get
def click(token: str) -> Response:
    link = _read(CLICK, token)
    _record(link, CLICKED, link.url)
    return redirect(link.url or "/", code=302)  # type: ignore[return-value]


@bp.get("/o/<token>")
@writes_on_get
def open_pixel(token: str) -> Response:
    try:
        link = _links().read(OPEN, token)
    except InvalidLink:
        link = None
    if link is not None:
        _record(link, OPENED)
    response = Response(PIXEL, mimetype="image/gif")
    response.headers["Cache-Control"] = "no-store"
    return response
