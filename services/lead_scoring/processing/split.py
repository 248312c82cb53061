"""A split: undoing a wrong merge, or giving one of a lead's identifiers a lead of its own.

Sales or an admin names a merge recorded on the lead (undo it) or one identifier the lead
holds (separate it), with a reason. The lead's stored events are divided by the
identifiers each named: one that named only the other side's goes there; one that named
both sides' (the event that wrongly linked them, or a later one as ambiguous) is set
aside — kept on the lead, marked, counted for neither; the rest stay. Then both leads are
rebuilt from their events from scratch by the same code that applies live traffic
(:func:`.traffic.apply_event`), so each ends as a replay without the linking event would
have left it: identity fields, traits, points with their explanations, automatic stages.
Sales moves stay with the lead they were made on (a later one still decides its stage).

Published: one ``lead.split`` with both leads' snapshots, for consumers to follow; the
rebuilt leads' own ``lead.*`` events are not published again (their ids are the
originals', which consumers already hold). Recorded: the merge is marked split with who
and why, and the stage history of each lead shows the split.

Failure modes: :class:`SplitError` (404 for an unknown lead, merge or identifier; 409
when the merge is already split, belongs to another lead, or nothing would be left).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from services.lead_scoring.handoff.actions import HandoffError
from services.lead_scoring.model.fit import LOWEST_GRADE
from services.lead_scoring.model.history import as_event
from services.lead_scoring.model.identity import IdentityRules, Key
from services.lead_scoring.models import (
    Identity,
    Lead,
    LeadEvent,
    LeadMerge,
    ScoreEntry,
    StageChange,
)
from services.lead_scoring.processing.batch import TrafficBatch
from services.lead_scoring.processing.lead_events import lead_event, snapshot
from services.lead_scoring.processing.traffic import apply_event
from services.lead_scoring.rulesets.active import RuleSetCache
from shared.limits import MAX_REASON_LENGTH, truncate
from shared.outbox import Outgoing

AUTOMATIC = ("system", "rescore:")


class SplitError(HandoffError):
    """A split the lead's state does not allow (answered like any sales action's error)."""


@dataclass(frozen=True)
class SplitRequest:
    """What to split off ``lead_id``: a merge recorded on it, or one identifier."""

    lead_id: str
    merge_id: int | None = None
    identifier: Key | None = None


def split(
    session: Session,
    request: SplitRequest,
    *,
    actor: str,
    reason: str,
    now: datetime,
    rule_sets: RuleSetCache,
    identity_rules: IdentityRules,
) -> list[Outgoing]:
    """Split as the module docstring says; returns the ``lead.split`` to publish."""
    lead = session.scalar(select(Lead).where(Lead.id == request.lead_id).with_for_update())
    if lead is None or lead.merged_into:
        raise SplitError(404, f"no lead {request.lead_id!r}")
    held = {
        (kind, value)
        for kind, value in session.execute(
            select(Identity.kind, Identity.value).where(Identity.lead_id == lead.id)
        )
    }
    merge, other, theirs = _other_side(session, lead, request, held)
    mine = held - theirs
    if not mine:
        raise SplitError(409, "the lead would keep no identifier")
    label = f"merge {merge.id}" if merge else f"{request.identifier}"
    rows = session.scalars(
        select(LeadEvent).where(LeadEvent.lead_id == lead.id).order_by(LeadEvent.id)
    ).all()
    sides = [_side(row, mine, theirs) for row in rows]
    kept_moves = _sales_moves(session, lead)
    _reset(session, lead, other, theirs)
    version, model = rule_sets.current(session)
    lead.rules_version = other.rules_version = version
    batch = TrafficBatch(
        session,
        model.history_scope,
        since=min((row.occurred_at for row in rows), default=now),
    )
    batch.preload([*mine, *theirs])  # reads and locks both leads
    for row, side in sorted(
        zip(rows, sides, strict=True), key=lambda rs: (rs[0].occurred_at, rs[0].id)
    ):
        event = as_event(row)
        keys = [(k[0], k[1]) for k in row.identities or []]
        if side == "both" or row.excluded:
            why = row.excluded or f"set aside by the split of {label}: it named both people"
            batch.add_event(lead, event, keys, excluded=why)
            continue
        # The rebuilt leads' events are the originals': consumers hold them already.
        apply_event(event, batch, rule_sets, identity_rules, to=other if side == "theirs" else lead)
    batch.flush()
    _restore_sales_moves(session, lead, kept_moves)
    why = truncate(f"split ({label}) by {actor}: {reason}", MAX_REASON_LENGTH)
    for side_lead in (lead, other):  # the split in each lead's history, its stage unchanged
        session.add(
            StageChange(
                lead_id=side_lead.id,
                from_stage=side_lead.stage,
                to_stage=side_lead.stage,
                reason=why,
                changed_by=truncate(actor, 100),
                changed_at=now,
            )
        )
    if merge is not None:
        merge.split_at, merge.split_by, merge.split_reason = now, actor, why
    batch.flush()
    return [
        lead_event(
            "lead.split",
            {
                "lead": snapshot(batch, lead),
                "split_lead": snapshot(batch, other),
                "reason": why,
                "changed_by": actor,
            },
            lead,
            event_id=uuid.uuid4().hex,
            occurred_at=now,
        )
    ]


def _other_side(
    session: Session, lead: Lead, request: SplitRequest, held: set[Key]
) -> tuple[LeadMerge | None, Lead, set[Key]]:
    """The merge (if any), the lead that gets the other side, and its identifiers."""
    if request.merge_id is not None:
        merge = session.get(LeadMerge, request.merge_id)
        if merge is None:
            raise SplitError(404, f"no merge {request.merge_id}")
        if merge.lead_id != lead.id:
            raise SplitError(409, f"merge {merge.id} was recorded on lead {merge.lead_id}")
        if merge.split_at is not None:
            raise SplitError(409, f"merge {merge.id} was split already")
        theirs = {(k[0], k[1]) for k in merge.merged_identities or []} & held
        if not theirs:
            raise SplitError(409, "nothing the merged lead held is on this lead any more")
        other = session.get(Lead, merge.merged_lead_id)
        if other is None:
            raise SplitError(404, f"no lead {merge.merged_lead_id!r}")
        return merge, other, theirs
    if request.identifier is None or tuple(request.identifier) not in held:
        raise SplitError(404, f"the lead holds no identifier {request.identifier}")
    other = Lead(
        id=uuid.uuid4().hex,
        stage="subscriber",
        score=0,
        version=0,
        created_at=lead.created_at,
        updated_at=lead.updated_at,
    )
    session.add(other)
    return None, other, {(request.identifier[0], request.identifier[1])}


def _side(row: LeadEvent, mine: set[Key], theirs: set[Key]) -> str:
    named = {(k[0], k[1]) for k in row.identities or []}
    ours, others = bool(named & mine), bool(named & theirs)
    if ours and others:
        return "both"
    return "theirs" if others else "mine"


def _sales_moves(session: Session, lead: Lead) -> list[dict[str, object]]:
    """The lead's explicit stage history (sales moves, earlier splits): it stays with it."""
    columns = ("from_stage", "to_stage", "reason", "reason_code", "changed_by", "changed_at")
    return [
        {c: getattr(change, c) for c in columns}
        for change in session.scalars(
            select(StageChange).where(StageChange.lead_id == lead.id).order_by(StageChange.id)
        )
        if not change.changed_by.startswith(AUTOMATIC)
    ]


def _reset(session: Session, lead: Lead, other: Lead, theirs: set[Key]) -> None:
    """Both leads back to nothing but their identifiers: the events rebuild the rest."""
    session.flush()
    for model in (ScoreEntry, StageChange, LeadEvent):
        session.execute(delete(model).where(model.lead_id.in_([lead.id, other.id])))
    for kind, value in theirs:
        session.execute(
            update(Identity)
            .where(Identity.kind == kind, Identity.value == value)
            .values(lead_id=other.id)
        )
    for side in (lead, other):
        side.merged_into = None
        side.stage, side.score, side.engagement_raw, side.intent = "subscriber", 0, 0.0, {}
        side.fit_score, side.fit_grade = 0, LOWEST_GRADE
        side.traits, side.account_traits, side.account_id = {}, {}, None
        side.email = side.user_id = None
        side.mql_at = side.sla_breached_at = side.last_event_at = None
    session.flush()


def _restore_sales_moves(session: Session, lead: Lead, kept: list[dict[str, object]]) -> None:
    """Put the explicit history back; the latest sales move decides the stage unless the
    rebuilt history moved it later."""
    last_automatic = session.scalar(
        select(StageChange.changed_at)
        .where(StageChange.lead_id == lead.id)
        .order_by(StageChange.changed_at.desc())
        .limit(1)
    )
    for row in kept:
        session.add(StageChange(lead_id=lead.id, **row))
    moves = [row for row in kept if row["from_stage"] != row["to_stage"]]
    if moves:
        last = moves[-1]
        at = last["changed_at"]
        assert isinstance(at, datetime)
        if last_automatic is None or at >= last_automatic:
            lead.stage = str(last["to_stage"])
