"""Scoring rule sets as versioned data, and rescoring leads when they change.

A rule-set *document* (JSON, validated by the HTTP schema) holds the behaviour rules, the
intent taxonomy, the fit criteria and grades, and the MQL threshold. Version 0 is the
built-in default. The consumer always scores with the newest version; a lead whose points
were computed with an older one is rescored from its stored history before its next event
is applied, and a background job (the consumer's timer) sweeps all remaining leads in
chunks, with progress in ``rescore_jobs``. Rescoring only moves stages forward (like any
automatic move); it never takes a stage away.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.lead_scoring.fit import FitCriterion
from services.lead_scoring.history import score_history
from services.lead_scoring.intent import Topic
from services.lead_scoring.models import (
    Identity,
    Lead,
    LeadEvent,
    RescoreJob,
    RuleSet,
    ScoreEntry,
    outbox,
)
from services.lead_scoring.publishing import (
    derived_event_id,
    enqueue_dead_letter,
    lead_event,
    snapshot,
)
from services.lead_scoring.scoring import Award, Rule
from services.lead_scoring.settings import ScoringSettings
from services.lead_scoring.store import LeadStore
from shared.db import utcnow
from shared.outbox import Outgoing, enqueue
from shared.runner import apply_isolated, database_check, timer_dead_letter
from shared.topics import LEAD_SCORING


def document_from_settings(settings: ScoringSettings) -> dict[str, Any]:
    def rule(r: Rule) -> dict[str, Any]:
        data = asdict(r)
        data["properties"] = {k: list(v) if isinstance(v, tuple) else v for k, v in r.properties}
        return data

    return {
        "rules": [rule(r) for r in settings.rules],
        "taxonomy": [{**asdict(t), "keywords": list(t.keywords)} for t in settings.taxonomy],
        "fit_criteria": [
            {**asdict(c), "value": list(c.value) if isinstance(c.value, tuple) else c.value}
            for c in settings.fit_criteria
        ],
        "grades": {letter: floor for letter, floor in settings.grades if letter != "D"},
        "mql_threshold": settings.mql_threshold,
    }


def settings_from_document(document: dict[str, Any], base: ScoringSettings) -> ScoringSettings:
    rules = tuple(
        Rule(
            **{
                **r,
                "properties": tuple(
                    (k, tuple(v) if isinstance(v, list) else v)
                    for k, v in (r.get("properties") or {}).items()
                ),
            }
        )
        for r in document["rules"]
    )
    taxonomy = tuple(Topic(**{**t, "keywords": tuple(t["keywords"])}) for t in document["taxonomy"])
    criteria = tuple(
        FitCriterion(
            **{**c, "value": tuple(c["value"]) if isinstance(c["value"], list) else c["value"]}
        )
        for c in document["fit_criteria"]
    )
    grades = (*sorted(document["grades"].items()), ("D", -(10**9)))
    return replace(
        base,
        rules=rules,
        taxonomy=taxonomy,
        fit_criteria=criteria,
        grades=grades,
        mql_threshold=document["mql_threshold"],
    )


class ActiveSettings:
    """The newest rule set, re-read at most every ``ttl`` seconds."""

    def __init__(self, base: ScoringSettings, ttl: float = 2.0) -> None:
        self.base = base
        self.ttl = ttl
        self._cached: tuple[int, ScoringSettings] = (0, base)
        self._read_at = -1e9

    def current(self, session: Session) -> tuple[int, ScoringSettings]:
        if time.monotonic() - self._read_at < self.ttl:
            return self._cached
        version = session.scalar(select(func.max(RuleSet.version))) or 0
        if version != self._cached[0]:
            document = session.get(RuleSet, version)
            settings = (
                self.base
                if document is None
                else settings_from_document(document.document, self.base)
            )
            self._cached = (version, settings)
        self._read_at = time.monotonic()
        return self._cached

    def invalidate(self) -> None:
        self._read_at = -1e9


RuleTotals = dict[str, tuple[int, str]]
"""rule id → (points it gave a lead in all, its reason)."""


def points_by_rule(session: Session, lead_ids: Sequence[str]) -> dict[str, RuleTotals]:
    """Each lead's stored points per rule (one grouped query)."""
    out: dict[str, RuleTotals] = {}
    if not lead_ids:
        return out
    for lead_id, rule_id, points, reason in session.execute(
        select(
            ScoreEntry.lead_id,
            ScoreEntry.rule_id,
            func.sum(ScoreEntry.points),
            func.max(ScoreEntry.reason),
        )
        .where(ScoreEntry.lead_id.in_(lead_ids))
        .group_by(ScoreEntry.lead_id, ScoreEntry.rule_id)
    ):
        out.setdefault(lead_id, {})[rule_id] = (int(points), reason)
    return out


def totals(awards: Sequence[Award]) -> RuleTotals:
    out: RuleTotals = {}
    for award in awards:
        points, _ = out.get(award.rule_id, (0, award.reason))
        out[award.rule_id] = (points + award.points, award.reason)
    return out


def explain_change(
    before: RuleTotals, after: RuleTotals, cause: str, event_id: str
) -> list[dict[str, Any]]:
    """The points of a rescore, per rule: what each rule gives now minus what it gave,
    so ``lead.scored`` points still add up to its delta. ``cause`` says why (a new rule
    set, merged histories); ``event_id`` is what caused it."""
    out = []
    for rule_id in sorted(before.keys() | after.keys()):
        old, old_reason = before.get(rule_id, (0, ""))
        new, reason = after.get(rule_id, (0, old_reason))
        if new != old:
            out.append(
                {
                    "rule_id": rule_id,
                    "points": new - old,
                    "reason": f"{reason}: {old} → {new} points ({cause})",
                    "event_id": event_id,
                }
            )
    return out


def rescore_leads(
    session: Session,
    leads: Sequence[Lead],
    version: int,
    settings: ScoringSettings,
    now: datetime,
    *,
    publish: bool = True,
) -> list[Outgoing]:
    """Replace the leads' points with their history scored under ``settings``; returns
    one ``lead.scored`` per changed score and any forward stage moves. ``publish=False``
    (the live handler, which moves stages and publishes for the whole event itself) only
    rebuilds the points."""
    if not leads:
        return []
    ids = [lead.id for lead in leads]
    rows = session.scalars(
        select(LeadEvent)
        .where(LeadEvent.lead_id.in_(ids))
        .order_by(LeadEvent.lead_id, LeadEvent.occurred_at, LeadEvent.id)
    ).all()
    by_lead = {lead_id: list(group) for lead_id, group in groupby(rows, key=lambda r: r.lead_id)}
    identities: dict[str, list[tuple[str, str]]] = {}
    if publish:  # one query for the whole chunk, before anything is dirty
        for lead_id, kind, value in session.execute(
            select(Identity.lead_id, Identity.kind, Identity.value)
            .where(Identity.lead_id.in_(ids))
            .order_by(Identity.kind, Identity.value)
        ):
            identities.setdefault(lead_id, []).append((kind, value))
    before = points_by_rule(session, ids) if publish else {}
    session.execute(delete(ScoreEntry).where(ScoreEntry.lead_id.in_(ids)))
    entries: list[dict[str, Any]] = []
    out: list[Outgoing] = []
    store = LeadStore(session)
    for lead in leads:
        result = score_history(settings, by_lead.get(lead.id, []), lead.traits, lead.account_traits)
        entries += [
            {
                "lead_id": lead.id,
                "event_id": a.event_id,
                "rule_id": a.rule_id,
                "points": a.points,
                "reason": a.reason,
                "occurred_at": at,
            }
            for a, at in result.awards
        ]
        score_before = lead.score
        lead.score, lead.engagement_raw, lead.intent = (
            result.score,
            result.engagement_raw,
            result.intent,
        )
        lead.fit_score, lead.fit_grade, lead.rules_version = (
            result.fit_score,
            result.fit_grade,
            version,
        )
        if not publish:
            continue
        moves = store.advance(
            lead, mql_threshold=settings.mql_threshold, changed_by=f"rescore:v{version}", at=now
        )
        if lead.score == score_before and not moves:
            continue
        cause = f"rescore:{version}:{lead.id}"
        snap = snapshot(store, lead, identities.get(lead.id, []))
        if lead.score != score_before:
            out.append(
                lead_event(
                    "lead.scored",
                    {
                        "lead": snap,
                        "delta": lead.score - score_before,
                        "points": explain_change(
                            before.get(lead.id, {}),
                            totals([award for award, _ in result.awards]),
                            f"rules v{version}",
                            f"rules:v{version}",
                        ),
                    },
                    lead,
                    event_id=derived_event_id(cause, "scored"),
                    occurred_at=now,
                )
            )
        for i, (from_stage, step) in enumerate(moves):
            out.append(
                lead_event(
                    "lead.stage_changed",
                    {
                        "lead": snap,
                        "from_stage": from_stage,
                        "to_stage": step.to_stage,
                        "reason": f"{step.reason} (rules v{version})",
                        "changed_by": f"rescore:v{version}",
                    },
                    lead,
                    event_id=derived_event_id(cause, f"stage:{i}"),
                    occurred_at=now,
                )
            )
    if entries:
        session.execute(insert(ScoreEntry), entries)
    session.flush()
    return out


def rescore_step(
    sessions: sessionmaker,
    active: ActiveSettings,
    *,
    check_infrastructure: Callable[[Session], None] = database_check,
    chunk: int = 1000,
    budget_s: float = 2.0,
) -> int:
    """Advance the newest unfinished rescore job by chunks for up to ``budget_s``;
    returns leads rescored. Superseded jobs (an even newer version exists) finish at once.

    A lead that cannot be rescored alone (see :func:`shared.runner.apply_isolated`) keeps
    its points, is marked as done for the job so the job can finish, is counted in
    ``failed`` and reported as a dead letter with the error. Infrastructure errors
    propagate."""
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
            version, settings = active.current(session)
            if version < job.version:  # the cache predates the job's rule set
                active.invalidate()
                version, settings = active.current(session)
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
            _rescore_chunk(session, job, leads, settings, check_infrastructure)
            job.done = min(job.total, job.done + len(leads))
            done += len(leads)
    return done


def _rescore_chunk(
    session: Session,
    job: RescoreJob,
    leads: Sequence[Lead],
    settings: ScoringSettings,
    check_infrastructure: Callable[[Session], None],
) -> None:
    outgoing: list[Outgoing] = []

    def apply(some: Sequence[Lead]) -> None:
        outgoing.extend(rescore_leads(session, some, job.version, settings, utcnow()))

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
