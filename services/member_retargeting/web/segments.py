"""Segments (marketing): saved rules with live counts, a preview of any rule (count and a
sample), built-ins that cannot be deleted."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.member_retargeting.model.segments import parse
from services.member_retargeting.models import Contact, Segment
from services.member_retargeting.people.segments import count, sample, stored_count
from services.member_retargeting.state import state
from services.member_retargeting.web import masking
from services.member_retargeting.web.schemas import (
    PreviewIn,
    PreviewOut,
    SegmentIn,
    SegmentList,
    SegmentOut,
)
from shared.db import utcnow
from shared.http import Blueprint, fail, or_404, require_role

blp = Blueprint("segments", __name__, url_prefix="/segments", description="Segments")


def person(contact: Contact) -> dict[str, Any]:
    return {
        "contact_id": contact.lead_id,
        "email": masking.email(contact.email),
        "stage": contact.stage,
        "is_member": contact.is_member,
        "tier": contact.tier,
        "rfm_group": contact.rfm_group,
    }


def preview(session: Session, rule: dict[str, Any], size: int = 10) -> dict[str, Any]:
    parsed, now = parse(rule), utcnow()
    return {
        "count": count(session, parsed, now),
        "sample": [person(c) for c in sample(session, parsed, now, size)],
    }


def segment_out(session: Session, segment: Segment) -> dict[str, Any]:
    return {
        "id": segment.id,
        "name": segment.name,
        "rule": segment.rule,
        "builtin": segment.builtin,
        "description": segment.description,
        "count": stored_count(session, segment.rule, utcnow()),
    }


@blp.route("")
class SegmentsView(MethodView):
    @require_role("marketing")
    @blp.response(200, SegmentList)
    def get(self) -> dict[str, Any]:
        """Every saved segment, built-ins first, with who it matches now."""
        with state().sessions() as session:
            segments = session.scalars(
                select(Segment).order_by(Segment.builtin.desc(), Segment.name)
            ).all()
            return {"items": [segment_out(session, s) for s in segments]}

    @require_role("marketing")
    @blp.arguments(SegmentIn)
    @blp.response(201, SegmentOut)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Save a segment rule (validated: a bad part is named by its path)."""
        try:
            with state().sessions.begin() as session:
                segment = Segment(**data, builtin=False)
                session.add(segment)
                session.flush()
                return segment_out(session, segment)
        except IntegrityError:
            fail(409, f"a segment named {data['name']!r} exists", errors={"name": ["taken"]})


@blp.route("/preview")
class PreviewView(MethodView):
    @require_role("marketing")
    @blp.arguments(PreviewIn)
    @blp.response(200, PreviewOut)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Who a rule matches now: how many, and a sample of ten."""
        with state().sessions() as session:
            return preview(session, data["rule"])


@blp.route("/<id:segment_id>")
class SegmentView(MethodView):
    @require_role("marketing")
    @blp.response(200, SegmentOut)
    def get(self, segment_id: int) -> dict[str, Any]:
        """One saved segment with its count now."""
        with state().sessions() as session:
            segment = or_404(session.get(Segment, segment_id), f"no segment {segment_id}")
            return segment_out(session, segment)

    @require_role("marketing")
    @blp.response(204)
    def delete(self, segment_id: int) -> None:
        """Delete a saved segment (built-ins stay). Campaigns keep their copy of it."""
        with state().sessions.begin() as session:
            segment = or_404(session.get(Segment, segment_id), f"no segment {segment_id}")
            if segment.builtin:
                fail(409, "built-in segments stay")
            session.delete(segment)
