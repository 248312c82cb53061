"""The rescore job: after a rule-set change, every live lead is rescored from its history
in chunks, as a timer of the consumer process, with progress in ``rescore_jobs``.

A lead that cannot be rescored alone (:func:`shared.runner.apply_isolated`) keeps its
points, is marked done for the job so the job can finish, is counted in ``failed`` and is
reported as a dead letter with the error. Infrastructure errors propagate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sqlalchemy import ColumnElement, func, select, update
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
                .where(_behind(job.version))
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


def rescore_all(
    sessions: sessionmaker,
    rule_sets: RuleSetCache,
    *,
    chunk: int = 1000,
    budget_s: float = 10.0,
    max_seconds: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    check_infrastructure: Callable[[Session], None] = database_check,
) -> int:
    """Run pending rescore jobs to the end in this process, by :func:`rescore_step`
    slices of ``budget_s`` seconds and ``chunk`` leads, for at most ``max_seconds`` (None:
    until nothing is left). After each slice ``on_progress(rescored, total)`` gets the
    leads that slice rescored and the running total. Returns the total. It stops early
    when a job's rule set is not visible yet: :func:`unfinished_jobs` tells whether any
    is left. What ``python -m services.lead_scoring rescore`` and ``funnel rescore`` run."""
    total = 0
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    while deadline is None or time.monotonic() < deadline:
        done = rescore_step(
            sessions,
            rule_sets,
            check_infrastructure=check_infrastructure,
            chunk=chunk,
            budget_s=budget_s,
        )
        if not done:
            break
        total += done
        if on_progress is not None:
            on_progress(done, total)
    return total


def leads_to_rescore(session: Session) -> int:
    """Live leads behind the newest unfinished rescore job: what :func:`rescore_step`
    works through (an estimate of what is left, for progress)."""
    version = session.scalar(
        select(func.max(RescoreJob.version)).where(RescoreJob.status != "done")
    )
    if version is None:
        return 0
    return int(session.scalar(select(func.count()).select_from(Lead).where(_behind(version))) or 0)


def unfinished_jobs(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(RescoreJob).where(RescoreJob.status != "done")
        )
        or 0
    )


def _behind(version: int) -> ColumnElement[bool]:
    """Live (not merged) leads still scored by a rule set older than ``version``."""
    return (Lead.rules_version < version) & Lead.merged_into.is_(None)


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
