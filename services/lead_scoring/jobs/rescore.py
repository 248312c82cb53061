"""The rescore job: after a rule-set change, every live lead is rescored from its history
in chunks, as a timer of the consumer process, with progress in ``rescore_jobs``.

A lead that cannot be rescored alone (:func:`shared.runner.apply_isolated`) keeps its
points, is marked done for the job so the job can finish, is counted in ``failed`` and is
reported as a dead letter with the error. Infrastructure errors propagate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import Lead, RescoreJob, outbox
from services.lead_scoring.processing.lead_events import enqueue_dead_letter
from services.lead_scoring.rulesets.active import RuleSetCache
from services.lead_scoring.rulesets.rescoring import rescore_leads
from shared.db import utcnow
from shared.outbox import Outgoing, enqueue
from shared.runner import apply_isolated, database_check, timer_dead_letter
from shared.topics import LEAD_SCORING


def rescore_step(
    sessions: sessionmaker,
    rule_sets: RuleSetCache,
    *,
    check_infrastructure: Callable[[Session], None] = database_check,
    chunk: int = 200,
    budget_s: float = 0.5,
) -> int:
    """Advance the newest unfinished rescore job by chunks of ``chunk`` leads for up to
    ``budget_s``; returns leads rescored. Superseded jobs (an even newer version exists)
    finish at once. The defaults suit the consumer's timer: a consumer must keep polling,
    or it cannot finish joining its group on the embedded broker and misses heartbeats
    elsewhere; ``python -m services.lead_scoring rescore`` takes bigger slices."""
    done = 0
    started = time.monotonic()
    while time.monotonic() - started < budget_s:
        with sessions.begin() as session:
            job = session.scalar(
                select(RescoreJob)
                .where(RescoreJob.status != "done")
                .order_by(RescoreJob.version.desc())
                .limit(1)
                .with_for_update()
            )
            if job is None:
                return done
            version, model = rule_sets.current(session)
            if version < job.version:  # the cache predates the job's rule set
                rule_sets.invalidate()
                version, model = rule_sets.current(session)
            if version < job.version:  # the job's rule set is not visible yet
                return done
            if job.version < version:
                job.status, job.finished_at = "done", utcnow()
                continue
            leads = session.scalars(
                select(Lead)
                .where(Lead.rules_version < job.version, Lead.merged_into.is_(None))
                .order_by(Lead.id)
                .limit(chunk)
                .with_for_update()
            ).all()
            if not leads:
                session.execute(
                    update(RescoreJob)
                    .where(RescoreJob.version <= job.version, RescoreJob.status != "done")
                    .values(status="done", finished_at=utcnow())
                )
                job.done = job.total
                return done
            job.status = "running"
            _rescore_chunk(session, job, leads, model, check_infrastructure)
            job.done = min(job.total, job.done + len(leads))
            done += len(leads)
    return done


def _rescore_chunk(
    session: Session,
    job: RescoreJob,
    leads: Sequence[Lead],
    model: ScoringModel,
    check_infrastructure: Callable[[Session], None],
) -> None:
    outgoing: list[Outgoing] = []

    def apply(some: Sequence[Lead]) -> None:
        outgoing.extend(rescore_leads(session, some, job.version, model, utcnow()))

    failed = apply_isolated(session, leads, apply, check_infrastructure=check_infrastructure)
    for lead, error in failed:
        lead.rules_version = job.version
        enqueue_dead_letter(
            session,
            timer_dead_letter(
                "rescore",
                LEAD_SCORING,
                error,
                key=lead.id,
                item={"lead_id": lead.id, "rules_version": job.version},
            ),
        )
    # Built from our own rows; tests decode each with the validating reader.
    enqueue(session, outbox, outgoing, validate_payload=False)
    job.failed = (job.failed or 0) + len(failed)
