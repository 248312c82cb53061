"""Members (marketing): tier, RFM, lifetime value and what each one wants."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import RAISE
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.member_retargeting.models import Contact
from services.member_retargeting.people.affinity import affinities
from services.member_retargeting.people.members import snapshot
from services.member_retargeting.state import state
from services.member_retargeting.web import masking
from services.member_retargeting.web.schemas import MemberList, MemberQuery
from shared.db import utcnow
from shared.http import Blueprint, require_role

blp = Blueprint("members", __name__, url_prefix="/members", description="Members")


def member_page(session: Session, query: dict[str, Any]) -> dict[str, Any]:
    """One page of live members, newest first, filtered by ``tier`` / ``rfm_group``."""
    stmt = select(Contact).where(Contact.is_member.is_(True), Contact.merged_into.is_(None))
    if query.get("tier"):
        stmt = stmt.where(Contact.tier == query["tier"])
    if query.get("rfm_group"):
        stmt = stmt.where(Contact.rfm_group == query["rfm_group"])
    page, size = query["page"], query["page_size"]
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    members = session.scalars(
        stmt.order_by(Contact.member_since.desc(), Contact.lead_id)
        .offset((page - 1) * size)
        .limit(size)
    ).all()
    wants = affinities(session, [m.lead_id for m in members], utcnow())
    items = []
    for m in members:
        affinity = wants.get(m.lead_id)
        items.append(
            {
                **snapshot(m),
                "lead_id": m.lead_id,
                "email": masking.email(m.email),
                "user_id": m.user_id,
                "affinity": None
                if affinity is None
                else {"products": affinity.products, "categories": affinity.categories},
            }
        )
    return {"items": items, "total": total, "page": page, "page_size": size}


@blp.route("")
class MembersView(MethodView):
    @require_role("marketing")
    @blp.arguments(MemberQuery, location="query", unknown=RAISE)
    @blp.response(200, MemberList)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Members, newest first, with order count and revenue (lifetime value so far),
        tier, RFM scores and group, and product affinity; filter by tier or group."""
        with state().sessions() as session:
            return member_page(session, query)
