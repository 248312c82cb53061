"""The privacy API (admin): erase a person everywhere, follow the erasure service by
service, and export everything every service holds on a person as one document.

Requests go to every service over the privacy topic (see :mod:`..privacy`); this API
records them and reads the answers. An access export waits up to ``wait_seconds`` (10 by
default) for every service's part — it holds a worker that long — and otherwise returns
what has arrived with ``complete: false``; ask again with its ``request_id``.
"""

from __future__ import annotations

import time
from typing import Any

from flask.views import MethodView
from marshmallow import RAISE

from services.lead_scoring.models import Lead, PrivacyRequest, outbox
from services.lead_scoring.privacy.requests import ACCESS, ERASURE, document, person, start, status
from services.lead_scoring.state import state
from services.lead_scoring.web.schemas import AccessOut, AccessQuery, ErasureIn, PrivacyStatusOut
from shared.audit import audited
from shared.db import utcnow
from shared.http import Blueprint, current_principal, fail, or_404, require_role, writes_on_get
from shared.identity import USER_ID
from shared.outbox import enqueue
from shared.privacy import LEAD_ID

blp = Blueprint("privacy", __name__, url_prefix="/privacy", description="Erasure and access")
POLL_SECONDS = 0.2


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of an access export: who asked and when, never the data."""
    return {k: doc[k] for k in ("request_id", "requested_by", "requested_at", "complete")}


def _requester() -> str:
    return current_principal().name or "admin"


@blp.route("/erasure")
class ErasureView(MethodView):
    @require_role("admin")
    @blp.arguments(ErasureIn)
    @blp.response(202, PrivacyStatusOut)
    @audited("privacy.erasure", target=lambda status, **_: f"erasure:{status['request_id']}")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Forget a person everywhere, named by any one identifier: every service deletes
        or anonymises what it holds and answers; from then on their events are dropped at
        intake and by every consumer, even when a topic is replayed."""
        with state().sessions.begin() as session:
            who = person(session, data["kind"], data["value"])
            request, event = start(session, ERASURE, who, _requester(), utcnow())
            enqueue(session, outbox, [event])
            return status(session, request)


@blp.route("/erasure/<string:request_id>")
class ErasureStatusView(MethodView):
    @require_role("admin")
    @blp.response(200, PrivacyStatusOut)
    def get(self, request_id: str) -> dict[str, Any]:
        """An erasure's progress: which services have answered, and what each erased."""
        with state().sessions() as session:
            request = session.get(PrivacyRequest, request_id[:64])
            if request is None or request.kind != ERASURE:
                fail(404, f"no erasure {request_id[:64]!r}")
            return status(session, request)


@blp.route("/people/<string:person_id>")
class AccessView(MethodView):
    @writes_on_get  # starts the access request and audits who read the person's data
    @require_role("admin")
    @blp.arguments(AccessQuery, location="query", unknown=RAISE)
    @blp.response(200, AccessOut)
    @audited(
        "privacy.access", target=lambda doc, **_: f"access:{doc['request_id']}", after=_summary
    )
    def get(self, query: dict[str, Any], person_id: str) -> dict[str, Any]:
        """Everything every service holds on the person — profile, identifiers, events,
        points, consent history, orders, messages and the sharing ledger (which
        destinations received their data) — as one document."""
        if query["request_id"] is not None:
            request_id = query["request_id"]
        else:
            with state().sessions.begin() as session:
                kind = query["kind"] or (LEAD_ID if session.get(Lead, person_id) else USER_ID)
                who = person(session, kind, person_id[:320])
                request, event = start(session, ACCESS, who, _requester(), utcnow())
                enqueue(session, outbox, [event])
                request_id = request.id
        deadline = time.monotonic() + query["wait_seconds"]
        while True:
            with state().sessions() as session:
                request = or_404(
                    session.get(PrivacyRequest, request_id), f"no request {request_id!r}"
                )
                if request.kind != ACCESS:
                    fail(404, f"no access request {request_id!r}")
                if request.completed_at is not None or time.monotonic() >= deadline:
                    return document(session, request)
            time.sleep(POLL_SECONDS)
