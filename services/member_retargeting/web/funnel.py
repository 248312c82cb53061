"""The funnel (marketing): stage counts, conversion and time between stages by
first-touch channel, landing page and campaign; what comes before a purchase. Aggregates
only: nobody is named, so no masking applies."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask.views import MethodView
from marshmallow import RAISE

from services.member_retargeting.people.funnel import funnel_report, purchase_precursors
from services.member_retargeting.state import state
from services.member_retargeting.web.schemas import (
    MAX_REPORT_DAYS,
    FunnelOut,
    FunnelQuery,
    PrecursorsOut,
)
from shared.db import utcnow
from shared.http import Blueprint, fail, require_role

blp = Blueprint("funnel", __name__, url_prefix="/funnel", description="Funnel analytics")
DEFAULT_WINDOW = timedelta(days=30)


def window(query: dict[str, Any]) -> tuple[datetime, datetime]:
    """``[since, until)`` from the query: the 30 days before ``until`` (default now)."""
    until = query.get("until") or utcnow()
    since = query.get("since") or until - DEFAULT_WINDOW
    if since >= until:
        fail(422, "since must be before until", errors={"since": ["must be before until"]})
    if until - since > timedelta(days=MAX_REPORT_DAYS):
        problem = f"a window is at most {MAX_REPORT_DAYS} days"
        fail(422, problem, errors={"since": [problem]})
    return since, until


@blp.route("")
class FunnelView(MethodView):
    @require_role("marketing")
    @blp.arguments(FunnelQuery, location="query", unknown=RAISE)
    @blp.response(200, FunnelOut)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Of the people first seen in the window: how many reached each stage (visitor,
        lead, MQL, SQL, customer, member), the rate from the stage before and from
        visitors, by first-touch channel, engine or network, landing page and campaign,
        and the median seconds between stages. Counts are as of now."""
        since, until = window(query)
        with state().sessions() as session:
            return funnel_report(session, since, until)


@blp.route("/precursors")
class PrecursorsView(MethodView):
    @require_role("marketing")
    @blp.arguments(FunnelQuery, location="query", unknown=RAISE)
    @blp.response(200, PrecursorsOut)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Of the people whose first order is in the window: the products they looked at
        before buying (and the share of everyone who looked that bought), and the intent
        topics buyers researched (with the share of each topic's people who bought)."""
        since, until = window(query)
        with state().sessions() as session:
            return purchase_precursors(session, since, until)
