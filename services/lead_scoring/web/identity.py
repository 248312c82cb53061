"""Identity rules (admin): per identifier kind a limit per lead, a priority, what happens
past the limit, whether it follows the latest person, who may merge through it, blocked
values. A new version applies to events processed after it."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from services.lead_scoring.rulesets.identity import (
    create_identity_rules,
    document_from_identity_rules,
)
from services.lead_scoring.state import state
from services.lead_scoring.web.schemas import IdentityRulesIn, IdentityRulesOut
from shared.audit import audited
from shared.http import Blueprint, require_role

blp = Blueprint(
    "identity-rules", __name__, url_prefix="/admin/identity", description="Identity rules"
)


def _current_rules() -> dict[str, Any]:
    """The active identity rules as they were, for the audit log."""
    s = state()
    with s.sessions() as session:
        return s.identity_rules.described(session, document_from_identity_rules)


@blp.route("/rules")
class IdentityRulesView(MethodView):
    @require_role("admin")
    @blp.response(200, IdentityRulesOut)
    def get(self) -> dict[str, Any]:
        """The active identity rules (version 0 is the built-in default)."""
        s = state()
        with s.sessions() as session:
            return s.identity_rules.described(session, document_from_identity_rules)

    @require_role("admin")
    @blp.arguments(IdentityRulesIn)
    @blp.response(200, IdentityRulesOut)
    @audited(
        "identity_rules.update", target=lambda _r, **_: "identity_rules", before=_current_rules
    )
    def put(self, document: dict[str, Any]) -> dict[str, Any]:
        """Store a new version of the identity rules; events processed from now on are
        resolved under it (nothing resolved before is changed: a split does that)."""
        note = document.pop("note", None)
        s = state()
        with s.sessions.begin() as session:
            version = create_identity_rules(session, document, note)
        s.identity_rules.invalidate()
        return {"version": version, "document": document}
