"""Sharing and suppression (marketing): hashed audience exports to Meta and Google, the
list of people never to contact (kept by hash), and per person the ledger of which
destinations received their data."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.member_retargeting.model.segments import parse
from services.member_retargeting.model.suppression import EMAIL, PHONE, suppression_key
from services.member_retargeting.models import AudienceExport, Segment, Suppression
from services.member_retargeting.sharing.exports import export_segment
from services.member_retargeting.sharing.ledger import shared_with
from services.member_retargeting.state import state
from services.member_retargeting.web.schemas import (
    ExportIn,
    ExportList,
    ExportOut,
    SharingList,
    SuppressionIn,
    SuppressionList,
    SuppressionOut,
)
from shared.db import utcnow
from shared.http import Blueprint, current_principal, fail, or_404, require_role
from shared.limits import text_problem

blp = Blueprint("sharing", __name__, description="Audiences, suppression, sharing ledger")


@blp.route("/audiences/exports")
class ExportsView(MethodView):
    @require_role("marketing")
    @blp.response(200, ExportList)
    def get(self) -> dict[str, Any]:
        """Every hashed audience exported, newest first."""
        with state().sessions() as session:
            items = session.scalars(
                select(AudienceExport).order_by(AudienceExport.id.desc()).limit(200)
            ).all()
            return {"items": list(items)}

    @require_role("marketing")
    @blp.arguments(ExportIn)
    @blp.response(201, ExportOut)
    def post(self, data: dict[str, Any]) -> AudienceExport:
        """Export a segment as a hashed audience for Meta or Google: only people with
        advertising consent, not suppressed, with an e-mail or phone; SHA-256 values
        only, published on the dispatch topic; one ledger line per person."""
        with state().sessions.begin() as session:
            rule = data["rule"]
            if data["segment_id"] is not None:
                segment_id = data["segment_id"]
                rule = or_404(session.get(Segment, segment_id), f"no segment {segment_id}").rule
            export = export_segment(
                session,
                parse(rule),
                data["platform"],
                requested_by=current_principal().name or "marketing",
                now=utcnow(),
            )
            export.segment = rule
            session.flush()
            return export


@blp.route("/suppressions")
class SuppressionsView(MethodView):
    @require_role("marketing")
    @blp.response(200, SuppressionList)
    def get(self) -> dict[str, Any]:
        """The suppression list (hashes, never the plain values)."""
        with state().sessions() as session:
            items = session.scalars(
                select(Suppression).order_by(Suppression.id.desc()).limit(1000)
            ).all()
            return {"items": list(items)}

    @require_role("marketing")
    @blp.arguments(SuppressionIn)
    @blp.response(201, SuppressionOut)
    def post(self, data: dict[str, Any]) -> Suppression:
        """Never contact this e-mail or phone again, whatever a segment says."""
        kind = EMAIL if data["email"] is not None else PHONE
        key = suppression_key(kind, data[kind], data["region"])
        if key is None:
            fail(422, f"not a usable {kind}", errors={kind: ["cannot be normalised"]})
        try:
            with state().sessions.begin() as session:
                row = Suppression(
                    value_hash=key,
                    kind=kind,
                    reason=data["reason"],
                    created_by=current_principal().name or "marketing",
                    created_at=utcnow(),
                )
                session.add(row)
                session.flush()
                return row
        except IntegrityError:
            fail(409, f"that {kind} is suppressed already", errors={kind: ["suppressed"]})


@blp.route("/suppressions/<id:suppression_id>")
class SuppressionView(MethodView):
    @require_role("marketing")
    @blp.response(204)
    def delete(self, suppression_id: int) -> None:
        """Lift a suppression."""
        with state().sessions.begin() as session:
            row = or_404(
                session.get(Suppression, suppression_id), f"no suppression {suppression_id}"
            )
            session.delete(row)


@blp.route("/people/<string:contact_id>/sharing")
class SharingView(MethodView):
    @require_role("marketing")
    @blp.response(200, SharingList)
    def get(self, contact_id: str) -> dict[str, Any]:
        """Which destinations received this person's data, what and when, newest first."""
        if text_problem(contact_id):  # no contact's id holds a NUL (nor can a query)
            return {"contact_id": contact_id, "items": []}
        with state().sessions() as session:
            return {"contact_id": contact_id, "items": shared_with(session, contact_id)}
