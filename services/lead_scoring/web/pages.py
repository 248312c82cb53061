"""Server-rendered sales pages: my queue, all leads by priority, lead detail (score
explanation, score over time, timeline) with accept/reject, overdue MQLs.

A salesperson signs in once (:mod:`shared.pages`), with their own rep token (then "my
queue" is theirs and every accept/reject is recorded under their name) or with the shared
sales token (then they pick whose queue to show). Nothing is loaded from a CDN: styles
are inline and the chart is inline SVG. Errors under ``/app`` are answered as pages
(``error.html``), not as JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from services.lead_scoring.handoff import rep_tokens
from services.lead_scoring.handoff.actions import (
    REJECTION_CODES,
    Action,
    HandoffError,
    accept,
    actor_name,
    perform,
    reject,
    shared_token_actor,
)
from services.lead_scoring.model.fit import GRADE_LETTERS
from services.lead_scoring.models import Rep, ScoreEntry
from services.lead_scoring.processing.split import SplitRequest
from services.lead_scoring.state import state
from services.lead_scoring.web.leads import split_lead as split_lead_as
from services.lead_scoring.web.queries import lead_detail, list_leads, overdue_list
from shared import pages
from shared.db import utcnow
from shared.events import STAGES
from shared.http import HTML_ERRORS

bp = Blueprint("pages", __name__, url_prefix="/app", template_folder="templates")
PAGE_ROLES = ("sales",)


def _rep_fingerprint(rep_id: int) -> str | None:
    """Binds a rep's page session to the rep's current personal token."""
    with state().sessions() as db:
        current = rep_tokens.current_hash(db, rep_id)
    return None if current is None else pages.fingerprint(current)


def _session_fingerprint() -> str | None:
    role = session.get("role")
    if role not in PAGE_ROLES:
        return None
    if session.get("personal"):
        return _rep_fingerprint(int(session.get("rep_id", 0)))
    return pages.role_fingerprint(role)


signed_in = pages.signed_in(_session_fingerprint, "pages.login")


def render_error(error: HTTPException) -> tuple[str, int]:
    """An HTTP error under ``/app`` as a page a salesperson can act on (not JSON)."""
    status = error.code or 500
    return render_template("error.html", status=status, error=error), status


@bp.record_once
def _html_errors(state: BlueprintSetupState) -> None:
    state.app.extensions.setdefault(HTML_ERRORS, {})[bp.url_prefix or ""] = render_error


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    return {
        "csrf": session.get("csrf", ""),
        "stages": STAGES,
        "rejection_codes": sorted(REJECTION_CODES),
    }


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        who = pages.sign_in_attempt(lambda person: person.role in PAGE_ROLES)
        if who is not None:
            if who.person_id is not None:
                pages.start_session(
                    who.role,
                    _rep_fingerprint(who.person_id),
                    personal=True,
                    rep_id=who.person_id,
                    rep_name=who.name,
                )
            else:
                pages.start_session(who.role, pages.role_fingerprint(who.role))
            return redirect(pages.local_next(bp.url_prefix or "", url_for("pages.queue")))
        error = "That token belongs neither to a rep nor to sales."
    page = render_template("login.html", error=error, csrf=pages.login_csrf())
    return page, 401 if error else 200


@bp.post("/logout")
@signed_in
def logout() -> Response:
    session.clear()
    return redirect(url_for("pages.login"))


def _reps(db: Session) -> list[Rep]:
    return list(db.scalars(select(Rep).order_by(Rep.name)))


@bp.get("/")
@signed_in
def queue() -> Any:
    """My queue: my leads by priority, then unassigned MQLs."""
    if "rep_id" in request.args and not session.get("personal"):
        rep_id = request.args.get("rep_id", type=int)
        session["rep_id"] = rep_id
    rep_id = session.get("rep_id")
    half_life = state().base_model.half_life_days
    first_page = {"sort": "priority", "page": 1, "page_size": 100}
    with state().sessions() as db:
        mine = (
            list_leads(db, {**first_page, "owner_id": rep_id}, half_life)["items"] if rep_id else []
        )
        unassigned = list_leads(db, {**first_page, "stage": "mql", "unassigned": True}, half_life)[
            "items"
        ]
        reps = _reps(db)
    return render_template("queue.html", mine=mine, unassigned=unassigned, reps=reps, rep_id=rep_id)


@bp.get("/leads")
@signed_in
def leads() -> Any:
    query: dict[str, Any] = {
        "sort": "priority",
        "page": max(1, request.args.get("page", 1, int)),
        "page_size": 50,
    }
    stage = request.args.get("stage") or None
    if stage in STAGES:
        query["stage"] = stage
    fit_grade = request.args.get("fit_grade") or None
    if fit_grade in GRADE_LETTERS:
        query["fit_grade"] = fit_grade
    min_score = request.args.get("min_score", type=int)
    if min_score is not None:
        query["min_score"] = min_score
    with state().sessions() as db:
        page = list_leads(db, query, state().base_model.half_life_days)
    filters = {
        k: v
        for k, v in (("stage", stage), ("fit_grade", fit_grade), ("min_score", min_score))
        if v is not None
    }
    return render_template(
        "leads.html",
        page=page,
        filters=filters,
        next_url="?" + urlencode({**filters, "page": query["page"] + 1}),
    )


CHART_POINTS = 1000


def score_chart(
    points: list[tuple[datetime, int]], start: int = 0, width: int = 640, height: int = 160
) -> dict[str, Any]:
    """An inline-SVG step line of the cumulative score over time, from ``start``."""
    if not points:
        return {"points": "", "width": width, "height": height, "max": 0, "min": 0}
    total, series = start, []
    for at, delta in points:
        total += delta
        series.append((at.timestamp(), total))
    t0, t1 = series[0][0], series[-1][0]
    lo, hi = min(0, start, *(s for _, s in series)), max(1, start, *(s for _, s in series))
    pad = 8

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * (v - lo) / (hi - lo)

    # A step line: the score holds until the next award changes it.
    coords = [(x(series[0][0]), y(start))]
    for t, v in series:
        coords += [(x(t), coords[-1][1]), (x(t), y(v))]
    return {
        "points": " ".join(f"{a:.1f},{b:.1f}" for a, b in coords),
        "width": width,
        "height": height,
        "max": hi,
        "min": lo,
    }


@bp.get("/leads/<string:lead_id>")
@signed_in
def lead(lead_id: str) -> Any:
    page = min(max(1, request.args.get("page", 1, int)), 100_000)
    with state().sessions() as db:
        _, model = state().rule_sets.current(db)
        detail = lead_detail(db, lead_id, model, page)
        if detail is None:
            abort(404)
        # The chart shows the latest awards; what came before is where the line starts.
        latest = db.execute(
            select(ScoreEntry.occurred_at, ScoreEntry.points)
            .where(ScoreEntry.lead_id == detail["id"])
            .order_by(ScoreEntry.occurred_at.desc(), ScoreEntry.id.desc())
            .limit(CHART_POINTS)
        ).all()[::-1]
        reps = {r.id: r.name for r in _reps(db)}
    timeline = sorted(
        [("event", e["occurred_at"], e) for e in detail["recent_events"]]
        + [("stage", c["changed_at"], c) for c in detail["stage_history"]],
        key=lambda item: item[1],
        reverse=True,
    )
    return render_template(
        "lead.html",
        lead=detail,
        chart=score_chart(
            [(at, points) for at, points in latest],
            start=detail["score"] - sum(points for _, points in latest),
        ),
        timeline=timeline,
        owner=reps.get(detail["owner_id"]),
    )


def _page_actor(db: Session) -> str:
    """A rep signed in with their own token acts as themself; the shared sales token acts
    as the token, whichever rep's queue it is looking at."""
    rep_id = session.get("rep_id")
    if session.get("personal"):
        return actor_name(db, rep_id)
    return shared_token_actor(db, rep_id)


def _act(lead_id: str, action: Action, done: str) -> Response:
    try:
        perform(state().sessions, lead_id, action)
        flash(done, "ok")
    except HandoffError as exc:
        flash(exc.message, "error")
    return redirect(url_for("pages.lead", lead_id=lead_id))


@bp.post("/leads/<string:lead_id>/accept")
@signed_in
def accept_lead(lead_id: str) -> Response:
    note = request.form.get("note") or None
    return _act(
        lead_id,
        lambda db, lid: accept(db, lid, actor=_page_actor(db), note=note, now=utcnow()),
        "Accepted: the lead is now an SQL.",
    )


@bp.post("/leads/<string:lead_id>/reject")
@signed_in
def reject_lead(lead_id: str) -> Response:
    code = request.form.get("reason_code", "")
    if code not in REJECTION_CODES:
        flash("Choose a reason.", "error")
        return redirect(url_for("pages.lead", lead_id=lead_id))
    note = request.form.get("note") or None
    return _act(
        lead_id,
        lambda db, lid: reject(db, lid, code, actor=_page_actor(db), note=note, now=utcnow()),
        f"Rejected ({code}).",
    )


@bp.post("/leads/<string:lead_id>/split")
@signed_in
def split_lead(lead_id: str) -> Response:
    """Undo a merge or separate an identifier, as the signed-in person."""
    reason = (request.form.get("reason") or "").strip()
    merge_id = request.form.get("merge_id", type=int)
    kind, value = request.form.get("kind"), request.form.get("value")
    if len(reason) < 3 or (merge_id is None) == (kind is None or value is None):
        flash("Say why, and what to split.", "error")
        return redirect(url_for("pages.lead", lead_id=lead_id))
    split_off = SplitRequest(
        lead_id, merge_id, (kind, value) if kind is not None and value is not None else None
    )
    return _act(
        lead_id,
        lambda db, _lid: split_lead_as(db, split_off, _page_actor(db), reason[:300]),
        "Split: each lead now has its own history.",
    )


@bp.get("/overdue")
@signed_in
def overdue() -> Any:
    sla = state().config.sla_hours
    with state().sessions() as db:
        rows = overdue_list(db, utcnow(), sla, state().base_model.half_life_days)
    return render_template("overdue.html", leads=rows, sla=sla)
