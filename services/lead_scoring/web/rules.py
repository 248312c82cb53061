"""Scoring rule sets (admin): the active version, storing a new one (which starts
rescoring every lead from its history), and a rescore's progress."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from services.lead_scoring.models import RescoreJob
from services.lead_scoring.rulesets.documents import create_rule_set, document_from_model
from services.lead_scoring.state import state
from services.lead_scoring.web.schemas import RescoreJobOut, RuleSetIn, RuleSetOut
from shared.audit import audited
from shared.http import Blueprint, or_404, require_role

blp = Blueprint(
    "scoring-rules", __name__, url_prefix="/admin/scoring", description="Scoring rule sets"
)


def _job_out(job: RescoreJob) -> dict[str, Any]:
    progress = 1.0 if job.status == "done" else (job.done / job.total if job.total else 0.0)
    return {
        **{
            c: getattr(job, c)
            for c in (
                "id",
                "version",
                "total",
                "done",
                "failed",
                "status",
                "created_at",
                "finished_at",
            )
        },
        "progress": round(progress, 4),
    }


def _current_rules() -> dict[str, Any]:
    """The active rule set as it was, for the audit log."""
    s = state()
    with s.sessions() as session:
        return s.rule_sets.described(session, document_from_model)


@blp.route("/rules")
class RulesView(MethodView):
    @require_role("admin")
    @blp.response(200, RuleSetOut)
    def get(self) -> dict[str, Any]:
        """The active rule set (version 0 is the built-in default)."""
        s = state()
        with s.sessions() as session:
            return s.rule_sets.described(session, document_from_model)

    @require_role("admin")
    @blp.arguments(RuleSetIn)
    @blp.response(202, RescoreJobOut)
    @audited("scoring_rules.update", target=lambda _r, **_: "scoring_rules", before=_current_rules)
    def put(self, document: dict[str, Any]) -> dict[str, Any]:
        """Store a new version and start rescoring every lead from its history; follow
        the returned job for progress. New events use the new version at once."""
        note = document.pop("note", None)
        s = state()
        with s.sessions.begin() as session:
            out = _job_out(create_rule_set(session, document, note))
        s.rule_sets.invalidate()
        return out


@blp.route("/rescores/<id:job_id>")
class RescoreView(MethodView):
    @require_role("admin")
    @blp.response(200, RescoreJobOut)
    def get(self, job_id: int) -> dict[str, Any]:
        """Progress of a rescore (done / total leads)."""
        with state().sessions() as session:
            job = or_404(session.get(RescoreJob, job_id), f"no rescore job {job_id}")
            return _job_out(job)
