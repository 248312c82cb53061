"""Sales reps (admin): who can own leads, their territories and availability, and their
personal sign-in tokens (issued once, stored hashed; re-issue replaces, delete revokes).
Reps see the list too."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.lead_scoring.handoff import rep_tokens
from services.lead_scoring.models import Rep
from services.lead_scoring.state import state
from services.lead_scoring.web.schemas import RepIn, RepList, RepOut, RepPatch, RepTokenOut
from shared.audit import audited, plain
from shared.http import Blueprint, fail, or_404, require_role

blp = Blueprint("reps", __name__, url_prefix="/admin/reps", description="Sales reps")


def _rep(rep_id: int) -> dict[str, Any] | None:
    """A rep as it was, for the audit log."""
    with state().sessions() as session:
        rep = session.get(Rep, rep_id)
        return None if rep is None else plain(rep)


@blp.route("")
class RepsView(MethodView):
    @require_role("admin", "sales")
    @blp.response(200, RepList)
    def get(self) -> dict[str, Any]:
        """Every rep, with territory and availability."""
        with state().sessions() as session:
            return {"items": list(session.scalars(select(Rep).order_by(Rep.id)))}

    @require_role("admin")
    @blp.arguments(RepIn)
    @blp.response(201, RepOut)
    @audited("rep.create", target=lambda rep, **_: f"rep:{rep.id}")
    def post(self, data: dict[str, Any]) -> Rep:
        """Add a rep; new MQLs in their territory are routed to them round robin."""
        try:
            with state().sessions.begin() as session:
                rep = Rep(**data)
                session.add(rep)
                session.flush()
                return rep
        except IntegrityError:
            fail(
                409,
                f"a rep with email {data['email']!r} exists",
                errors={"email": ["already taken"]},
            )


@blp.route("/<id:rep_id>")
class RepView(MethodView):
    @require_role("admin")
    @blp.arguments(RepPatch)
    @blp.response(200, RepOut)
    @audited("rep.update", target=lambda _r, rep_id: f"rep:{rep_id}", before=_rep)
    def patch(self, data: dict[str, Any], rep_id: int) -> Rep:
        """Change availability (holidays) or territory. Owned leads keep their owner."""
        with state().sessions.begin() as session:
            rep = or_404(session.get(Rep, rep_id), f"no rep {rep_id}")
            for key, value in data.items():
                setattr(rep, key, value)
            session.flush()
            return rep


@blp.route("/<id:rep_id>/token")
class RepTokenView(MethodView):
    @require_role("admin")
    @blp.response(201, RepTokenOut)
    @audited("rep.token_issue", target=lambda _r, rep_id: f"rep:{rep_id}")
    def post(self, rep_id: int) -> dict[str, Any]:
        """Issue the rep's personal token (shown only in this answer), replacing any
        earlier one. With it the rep signs in to the pages and calls the API as
        themselves: their queue, and accept/reject recorded under their name."""
        with state().sessions.begin() as session:
            try:
                token = rep_tokens.issue(session, rep_id)
            except LookupError:
                fail(404, f"no rep {rep_id}")
        return {"rep_id": rep_id, "token": token}

    @require_role("admin")
    @blp.response(204)
    @audited("rep.token_revoke", target=lambda _r, rep_id: f"rep:{rep_id}")
    def delete(self, rep_id: int) -> None:
        """Revoke the rep's token: API calls with it fail and page sessions end."""
        with state().sessions.begin() as session:
            if not rep_tokens.revoke(session, rep_id):
                fail(404, f"rep {rep_id} has no token")
