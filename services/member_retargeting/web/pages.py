"""Server-rendered marketing pages: segments with live counts and a preview, the campaign
builder with a run button and run progress, each campaign's report with a chart, and
members with tier, RFM and affinity.

Marketing signs in once with the marketing token (:mod:`shared.pages`: a token-bound
session cookie and a CSRF token on every form). The pages validate with the same HTTP
schemas as the API and call the same functions; a run started here carries an
idempotency key rendered into the form, so a double click or a resubmitted form never
starts a second run. Nothing is loaded from a CDN: styles are inline, the chart is inline
SVG. Errors under ``/app`` are answered as pages.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask.blueprints import BlueprintSetupState
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.wrappers import Response

from services.member_retargeting.model.funnel import STAGES
from services.member_retargeting.model.rfm import GROUPS
from services.member_retargeting.models import Campaign, Segment, accounts
from services.member_retargeting.people.funnel import funnel_report, purchase_precursors
from services.member_retargeting.state import state
from services.member_retargeting.web.campaigns import campaign_out, run_now
from services.member_retargeting.web.members import member_page
from services.member_retargeting.web.schemas import CHANNELS, KINDS, CampaignIn, PreviewIn
from services.member_retargeting.web.segments import preview, segment_out
from shared import pages
from shared.accounts import current_hash as account_hash
from shared.db import utcnow
from shared.http import HTML_ERRORS, flatten_field_errors

bp = Blueprint("pages", __name__, url_prefix="/app", template_folder="templates")
ROLE = "marketing"
MAX_RULE_TEXT = 20_000


def _fingerprint() -> str | None:
    """The session must still match the token it was made with: the role token, or the
    person's own (rotated or revoked: signed out)."""
    if session.get("role") != ROLE:
        return None
    if session.get("personal"):
        with state().engine.connect() as conn:
            current = account_hash(conn, accounts, int(session.get("account_id", 0)))
        return None if current is None else pages.fingerprint(current)
    return pages.role_fingerprint(ROLE)


signed_in = pages.signed_in(_fingerprint, "pages.login")


def render_error(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    return render_template("error.html", status=status, error=error), status


@bp.record_once
def _html_errors(setup: BlueprintSetupState) -> None:
    setup.app.extensions.setdefault(HTML_ERRORS, {})[bp.url_prefix or ""] = render_error


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    return {"csrf": session.get("csrf", "")}


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        who = pages.sign_in_attempt(lambda person: person.role == ROLE)
        if who is not None and who.person_id is not None:
            with state().engine.connect() as conn:
                current = account_hash(conn, accounts, who.person_id)
            pages.start_session(
                ROLE,
                None if current is None else pages.fingerprint(current),
                personal=True,
                account_id=who.person_id,
                name=who.name,
                pii=who.pii,  # e-mails and phones unmasked only with a grant
            )
            return redirect(pages.local_next(bp.url_prefix or "", url_for("pages.segments")))
        if who is not None:
            pages.start_session(ROLE, pages.role_fingerprint(ROLE))
            return redirect(pages.local_next(bp.url_prefix or "", url_for("pages.segments")))
        error = "That is neither the marketing token nor a marketing account's."
    page = render_template("login.html", error=error, csrf=pages.login_csrf())
    return page, 401 if error else 200


@bp.post("/logout")
@signed_in
def logout() -> Response:
    session.clear()
    return redirect(url_for("pages.login"))


def _rule_from_form(field: str = "rule") -> tuple[Any, dict[str, list[str]]]:
    """The JSON rule typed into a form, validated as the API does (problems by path)."""
    text = request.form.get(field, "")[:MAX_RULE_TEXT]
    try:
        document = json.loads(text)
    except ValueError as exc:
        return None, {field: [f"not JSON: {exc}"]}
    try:
        return PreviewIn().load({"rule": document})["rule"], {}
    except ValidationError as exc:
        return None, flatten_field_errors(exc.messages)


def _segments_page(**extra: Any) -> Any:
    with state().sessions() as db:
        saved = db.scalars(select(Segment).order_by(Segment.builtin.desc(), Segment.name)).all()
        items = [segment_out(db, s) for s in saved]
    return render_template("segments.html", segments=items, **extra)


@bp.get("/")
@signed_in
def segments() -> Any:
    """Segments, built-ins first, each with who it matches now."""
    return _segments_page(rule_text=request.args.get("rule", ""))


@bp.post("/segments/preview")
@signed_in
def preview_segment() -> Any:
    rule, problems = _rule_from_form()
    result = None
    if not problems:
        with state().sessions() as db:
            result = preview(db, rule)
    return _segments_page(
        rule_text=request.form.get("rule", "")[:MAX_RULE_TEXT], problems=problems, result=result
    ), (422 if problems else 200)


@bp.post("/segments")
@signed_in
def save_segment() -> Any:
    from services.member_retargeting.web.schemas import SegmentIn  # the API's checks

    rule, problems = _rule_from_form()
    name = request.form.get("name", "").strip()
    if not name:
        problems["name"] = ["give the segment a name"]
    else:
        try:
            SegmentIn(only=("name",)).load({"name": name})
        except ValidationError as exc:
            problems.update(flatten_field_errors(exc.messages))
    if problems:
        return _segments_page(
            rule_text=request.form.get("rule", "")[:MAX_RULE_TEXT], problems=problems
        ), 422
    try:
        with state().sessions.begin() as db:
            db.add(Segment(name=name, rule=rule, builtin=False))
    except IntegrityError:
        flash(f"A segment named {name!r} exists.", "error")
        return redirect(url_for("pages.segments"))
    flash(f"Saved segment {name!r}.", "ok")
    return redirect(url_for("pages.segments"))


def _campaigns_page(form: dict[str, Any] | None = None, **extra: Any) -> Any:
    with state().sessions() as db:
        campaigns = db.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(200)).all()
        items = [campaign_out(db, c) for c in campaigns]
        saved = db.execute(select(Segment.id, Segment.name).order_by(Segment.name)).all()
    return render_template(
        "campaigns.html",
        campaigns=items,
        saved=saved,
        channels=CHANNELS,
        kinds=KINDS,
        form=form or {},
        run_key=uuid.uuid4().hex,
        **extra,
    )


@bp.get("/campaigns")
@signed_in
def campaigns() -> Any:
    return _campaigns_page()


def _campaign_from_form() -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
    form = request.form
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "channel": form.get("channel", "email"),
        "kind": form.get("kind", "marketing"),
    }
    if form.get("segment_id"):
        body["segment_id"] = form.get("segment_id", type=int)
    else:
        rule, problems = _rule_from_form("segment")
        if problems:
            return None, problems
        body["segment"] = rule
    if body["channel"] == "ads":
        body["message"] = {"platform": form.get("platform", "meta")}
    else:
        body["message"] = {"subject": form.get("subject", ""), "body": form.get("body", "")}
    if form.get("schedule_at"):
        body["schedule_at"] = form["schedule_at"]
    if form.get("trigger_event"):
        body["trigger"] = {
            "event": form["trigger_event"],
            "delay_hours": form.get("delay_hours", type=float) or 0,
            "unless": form.get("unless") or None,
        }
    try:
        return CampaignIn().load(body), {}
    except ValidationError as exc:
        return None, flatten_field_errors(exc.messages)


@bp.post("/campaigns")
@signed_in
def create_campaign() -> Any:
    data, problems = _campaign_from_form()
    if data is None:
        return _campaigns_page(form=request.form.to_dict(), problems=problems), 422
    with state().sessions.begin() as db:
        segment_id = data.pop("segment_id")
        if segment_id is not None:
            saved = db.get(Segment, segment_id)
            if saved is None:
                raise NotFound(f"no segment {segment_id}")
            data["segment"] = saved.rule
        campaign = Campaign(**data)
        db.add(campaign)
        db.flush()
        campaign_id = campaign.id
    flash(f"Created campaign {data['name']!r}.", "ok")
    return redirect(url_for("pages.campaign", campaign_id=campaign_id))


@bp.get("/campaigns/<id:campaign_id>")
@signed_in
def campaign(campaign_id: int) -> Any:
    """A campaign's report (with a chart), its runs and their progress, the run button."""
    with state().sessions() as db:
        found = db.get(Campaign, campaign_id)
        if found is None:
            raise NotFound(f"no campaign {campaign_id}")
        detail = campaign_out(db, found)
    busy = any(r["status"] in ("pending", "running") for r in detail["runs"])
    return render_template(
        "campaign.html", c=detail, chart=report_chart(detail), busy=busy, run_key=uuid.uuid4().hex
    )


@bp.post("/campaigns/<id:campaign_id>/run")
@signed_in
def run_campaign(campaign_id: int) -> Response:
    from werkzeug.exceptions import UnprocessableEntity

    from services.member_retargeting.web.schemas import RunIn  # the API's checks

    key = request.form.get("key", "").strip() or uuid.uuid4().hex
    try:
        RunIn().load({"idempotency_key": key})
    except ValidationError as exc:
        raise UnprocessableEntity("this form's run key is not usable; reload the page") from exc
    started = run_now(campaign_id, f"page:{key}", "marketing (pages)")
    if started["created"]:
        flash(f"Run {started['run_id']} started for {started['audience_size']} people.", "ok")
    else:
        flash(f"Run {started['run_id']} was already started with this form.", "ok")
    return redirect(url_for("pages.campaign", campaign_id=campaign_id))


def report_chart(detail: dict[str, Any], width: int = 560, bar: int = 26) -> dict[str, Any]:
    """Horizontal bars for the report: audience, dispatched, each skip reason, what
    became of the messages, conversions — as inline-SVG geometry."""
    rows = [("Audience", detail["audience_size"], "audience")]
    rows.append(("Dispatched", detail["dispatched_count"], "sent"))
    rows += [
        (f"Skipped: {k.replace('_', ' ')}", v, "skipped") for k, v in detail["skipped"].items()
    ]
    delivery = detail.get("delivery") or {}
    rows += [
        (f"Delivery: {k}", delivery[k], "delivery")
        for k in ("sent", "delivered", "bounced", "failed", "opened", "clicked", "unsubscribed")
        if delivery.get(k)
    ]
    rows.append(("Conversions", detail["conversions"], "converted"))
    top = max([1, *(v for _, v, _ in rows)])
    label_w = 190
    return {
        "width": width,
        "height": len(rows) * (bar + 8) + 8,
        "label_width": label_w,
        "bars": [
            {
                "label": label,
                "value": value,
                "kind": kind,
                "y": 8 + i * (bar + 8),
                "w": max(2.0, (width - label_w - 60) * value / top) if value else 0.0,
                "h": bar,
            }
            for i, (label, value, kind) in enumerate(rows)
        ],
    }


@bp.get("/members")
@signed_in
def members() -> Any:
    tier = (request.args.get("tier") or "")[:40] or None
    group = request.args.get("rfm_group") or None
    page = min(max(1, request.args.get("page", 1, int)), 100_000)
    query = {
        "tier": tier,
        "rfm_group": group if group in GROUPS else None,
        "page": page,
        "page_size": 50,
    }
    with state().sessions() as db:
        result = member_page(db, query)
    tiers = [t.name for t in state().config.tiers.tiers]
    return render_template("members.html", page=result, tiers=tiers, groups=GROUPS, query=query)


FUNNEL_WINDOWS = (7, 30, 90, 365)


@bp.get("/funnel")
@signed_in
def funnel() -> Any:
    """The funnel of the people first seen in the last ``days`` (7, 30, 90 or 365)."""
    days = request.args.get("days", 30, int)
    days = days if days in FUNNEL_WINDOWS else 30
    until = utcnow()
    since = until - timedelta(days=days)
    with state().sessions() as db:
        report = funnel_report(db, since, until)
        precursors = purchase_precursors(db, since, until)
    return render_template(
        "funnel.html",
        report=report,
        precursors=precursors,
        chart=funnel_chart(report["stages"]),
        days=days,
        windows=FUNNEL_WINDOWS,
        stages=STAGES,
        durations={k: duration(v) for k, v in report["median_seconds"].items()},
    )


def funnel_chart(stages: list[dict[str, Any]], width: int = 720, bar: int = 34) -> dict[str, Any]:
    """One bar per stage, as wide as its count, labelled with the count and the rate from
    the stage before — inline-SVG geometry (no script: the pages' CSP allows none)."""
    top = max([1, *(s["count"] for s in stages)])
    label_w, value_w = 110, 170
    return {
        "width": width,
        "height": len(stages) * (bar + 10) + 10,
        "label_width": label_w,
        "bars": [
            {
                **s,
                "y": 10 + i * (bar + 10),
                "h": bar,
                "w": max(2.0, (width - label_w - value_w) * s["count"] / top)
                if s["count"]
                else 0.0,
            }
            for i, s in enumerate(stages)
        ],
    }


def duration(seconds: float | None) -> str:
    """A median for people: "—", "42 s", "17 min", "5.2 h", "3.1 d"."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
