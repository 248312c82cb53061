"""The funnel's projection: each person's journey (first seen, first touch, the first
time they reached each stage), kept from the traffic and lead events this consumer reads
anyway — analytics asks no other service, and needs no topic of its own.

Traffic comes first and names people only by their ids: a journey starts on the first
event of an id nobody holds, and every id an event carries joins it. Lead events are the
truth about who is whom: a lead's journey takes in the journeys of every id its snapshot
lists (an anonymous visit found to be the lead's), a merge folds the merged lead's
journey into the survivor's, a split brings the split-off lead's back. Two ids already on
two journeys are never joined by traffic alone (lead-scoring decides that, then says so).

Folding keeps the earliest of everything: first seen, first touch (by
:func:`..model.funnel.better_touch`), the first time each stage was reached, and the
furthest stage; a split gives each side the stage its rebuilt lead has (an identifier
given a lead of its own starts with the first touch of the journey it came from).
Traffic never gives a user id a journey that is another user's lead (a shared
computer): it starts one of its own. Stage times come from ``lead.stage_changed`` (when
the move happened); a snapshot's stage moves ``reached`` on even when its stage change is
missing or late.

Retention (:func:`prune`, the scheduler's daily work): a journey that never became a
lead's is deleted ``behaviour_days`` after it was first seen, with the ids that lead to
it — what the anonymous did is kept as long as what people did. A lead's journey stays
(it holds the earliest of what was folded into it), so the funnel's visitor counts for
windows older than that retention count only the visitors who became leads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from services.member_retargeting.model.funnel import RANK, Touch, better_touch, funnel_stage, touch
from services.member_retargeting.models import Contact, ContactIdentity, Journey, JourneyIdentity
from shared.events import Envelope
from shared.identity import ANONYMOUS_ID, USER_ID

# How far a chain of folded journeys is followed (each fold points at a live journey when
# it is made, so chains stay short; the bound only stops a loop a bug could make).
MAX_CHAIN = 32
STAGE_TIMES = {"lead": "lead_at", "mql": "mql_at", "sql": "sql_at", "customer": "customer_at"}
# Journeys the daily prune deletes per transaction.
PRUNE_CHUNK = 1_000


def on_traffic(session: Session, event: Envelope) -> None:
    """Start or extend the journey of the event's ids with what the event says."""
    ids = _ids(event.user_id, event.anonymous_id)
    if not ids:
        return
    rows = {
        (row.kind, row.value): row
        for row in session.scalars(select(JourneyIdentity).where(_any_of(ids)))
    }
    held = {key: row.journey_id for key, row in rows.items()}
    journey = None
    # The user id names a person more surely than a browser's anonymous id does; a
    # browser's journey already another user's (a shared computer) is not this user's.
    for key in ids:
        found = _live(session, jid) if (jid := held.get(key)) else None
        if found is not None and not (
            key[0] == ANONYMOUS_ID and _someone_else(session, found, event.user_id)
        ):
            journey = found
            break
    if journey is None:
        # A user id speaks for itself: a browser id is another user's lead (see above).
        lead_id = _known_lead(session, ids[:1])
        journey = (
            _lead_journey(session, lead_id, event.effective_at)
            if lead_id is not None
            else _for_lead(session, None, event.effective_at)
        )
    for key in ids:
        row = rows.get(key)
        if row is None:
            session.add(JourneyIdentity(kind=key[0], value=key[1], journey_id=journey.id))
        elif row.journey_id != journey.id and _live(session, row.journey_id) is None:
            # Its journey was pruned (:func:`prune`) while this id was joining it: the
            # id is this journey's now, rather than pointing nowhere for good.
            row.journey_id = journey.id
    _apply_touch(journey, touch(event.type, event.context), event.effective_at)
    journey.first_seen_at = min(journey.first_seen_at, event.effective_at)


def on_lead(session: Session, event: Envelope) -> None:
    """Bring the lead's journey up to date with a lead event (any type). A snapshot older
    than the one the contact holds moves no ids (a split may have moved them since)."""
    at = event.effective_at
    lead = event.payload["lead"]
    if event.type == "lead.split":
        # Lead-scoring rebuilt both leads from their own events: both snapshots are the
        # truth, stages included (what the fold gave the survivor goes back).
        split = event.payload["split_lead"]
        survivor = _lead_journey(session, lead["lead_id"], at)
        split_off = session.scalar(select(Journey).where(Journey.lead_id == split["lead_id"]))
        if split_off is None:  # an identifier given a lead of its own: its past came along
            split_off = _for_lead(session, split["lead_id"], survivor.first_seen_at)
            _copy_touch(survivor, split_off)
        split_off.merged_into = None
        _take_in(session, split_off, split, exact=True)
        _take_in(session, survivor, lead, exact=True)
        return
    journey = _lead_journey(session, lead["lead_id"], at)
    if _current(session, lead):
        _take_in(session, journey, lead)
    if event.type == "lead.merged":
        # Made now when the merged lead's own events are still on their way (another
        # partition): they then land on a journey that already counts as folded.
        merged = _for_lead(session, event.payload["merged_lead_id"], at)
        if merged.merged_into is None and merged.id != journey.id:
            _fold(session, merged, journey)
    elif event.type == "lead.stage_changed":
        _reach(journey, event.payload["to_stage"], at)


def _current(session: Session, snapshot: dict[str, Any]) -> bool:
    """Whether the contact took this snapshot (:func:`.leads.upsert_contact` keeps the
    newest by ``version``; unversioned snapshots are applied)."""
    version = snapshot.get("version")
    held = session.scalar(
        select(Contact.lead_version).where(Contact.lead_id == snapshot["lead_id"])
    )
    return version is None or held is None or version >= held


def _someone_else(session: Session, journey: Journey, user_id: str | None) -> bool:
    """The journey is a lead's whose user id is not ``user_id``."""
    if not user_id or journey.lead_id is None:
        return False
    theirs = session.scalar(select(Contact.user_id).where(Contact.lead_id == journey.lead_id))
    return theirs is not None and theirs != user_id


# A journey's first-touch columns, named as Touch names them.
_TOUCH_FIELDS = ("channel", "engine", "landing_page", "campaign")


def _copy_touch(source: Journey, target: Journey) -> None:
    target.first_seen_at = source.first_seen_at
    target.touch_at = source.touch_at
    for name in _TOUCH_FIELDS:
        setattr(target, name, getattr(source, name))


def _touch_of(journey: Journey) -> Touch | None:
    """The first touch the journey holds, or None before any."""
    if journey.touch_at is None:
        return None
    channel, engine, landing_page, campaign = (getattr(journey, n) for n in _TOUCH_FIELDS)
    return Touch(channel, engine, landing_page, campaign, from_page=landing_page is not None)


def _lead_journey(session: Session, lead_id: str, at: datetime) -> Journey:
    """The journey that counts for the lead: its own, or the one it was folded into."""
    own = _for_lead(session, lead_id, at)
    return _live(session, own.id) or own


def _take_in(
    session: Session, journey: Journey, snapshot: dict[str, Any], *, exact: bool = False
) -> Journey:
    """Join the ids the lead's snapshot lists to its journey, folding in the anonymous
    journeys they held; move ``reached`` on to the snapshot's stage (``exact``: set it to
    that stage, forgetting the times of stages after it — a split's rebuilt lead)."""
    ids = _ids(snapshot.get("user_id"), *(snapshot.get("anonymous_ids") or []))
    if ids:
        for row in session.scalars(select(JourneyIdentity).where(_any_of(ids))).all():
            other = _live(session, row.journey_id)
            if other is not None and other.id != journey.id and other.lead_id is None:
                _fold(session, other, journey)  # an anonymous visit found to be the lead's
        known = set()
        for row in session.scalars(select(JourneyIdentity).where(_any_of(ids))).all():
            row.journey_id = journey.id  # the lead holds the id now (lead-scoring says so)
            known.add((row.kind, row.value))
        for key in ids:
            if key not in known:
                session.add(JourneyIdentity(kind=key[0], value=key[1], journey_id=journey.id))
    stage = funnel_stage(snapshot.get("stage", ""))
    if stage is not None and exact:
        journey.reached = RANK[stage]
        for step, column in STAGE_TIMES.items():
            if RANK[step] > RANK[stage]:
                setattr(journey, column, None)
    elif stage is not None:
        journey.reached = max(journey.reached, RANK[stage])
    return journey


def _for_lead(session: Session, lead_id: str | None, at: datetime) -> Journey:
    """The lead's journey (a new one when it has none yet), or a new anonymous one."""
    if lead_id is not None:
        found = session.scalar(select(Journey).where(Journey.lead_id == lead_id))
        if found is not None:
            return found
    journey = Journey(lead_id=lead_id, first_seen_at=at, channel="direct", reached=0)
    session.add(journey)
    session.flush()  # its id, for the ids that join it
    return journey


def _known_lead(session: Session, ids: list[tuple[str, str]]) -> str | None:
    """The lead already holding one of these ids (lead events came before traffic)."""
    return session.scalar(
        select(ContactIdentity.lead_id).where(_any_of(ids, ContactIdentity)).limit(1)
    )


def _reach(journey: Journey, lead_stage: str, at: datetime) -> None:
    """Reaching a stage passes through every one before it: a stage skipped (a buyer who
    was never an MQL, a lead identified above the MQL threshold) is reached at the same
    moment, so the medians between stages cover everyone, the skipped steps as 0 s."""
    stage = funnel_stage(lead_stage)
    if stage is None:
        return
    journey.reached = max(journey.reached, RANK[stage])
    for step, column in STAGE_TIMES.items():
        if RANK[step] > RANK[stage]:
            break
        held = getattr(journey, column)
        if held is None or (step == stage and at < held):
            setattr(journey, column, at)


def _fold(session: Session, gone: Journey, into: Journey) -> None:
    """Fold one journey into another: the earliest of each, ids moved over."""
    into.first_seen_at = min(into.first_seen_at, gone.first_seen_at)
    their_touch = _touch_of(gone)
    if their_touch is not None and gone.touch_at is not None:  # (the second for mypy)
        _apply_touch(into, their_touch, gone.touch_at)
    into.reached = max(into.reached, gone.reached)
    for column in STAGE_TIMES.values():
        theirs, ours = getattr(gone, column), getattr(into, column)
        if theirs is not None and (ours is None or theirs < ours):
            setattr(into, column, theirs)
    gone.merged_into = into.id
    session.flush()
    session.execute(
        update(JourneyIdentity)
        .where(JourneyIdentity.journey_id == gone.id)
        .values(journey_id=into.id)
        .execution_options(synchronize_session=False)
    )
    # Journeys once folded into the one gone now point at the live one directly.
    session.execute(
        update(Journey)
        .where(Journey.merged_into == gone.id)
        .values(merged_into=into.id)
        .execution_options(synchronize_session=False)
    )


def _apply_touch(journey: Journey, new: Touch, at: datetime) -> None:
    if better_touch(_touch_of(journey), journey.touch_at, new, at):
        journey.touch_at = at
        for name in _TOUCH_FIELDS:
            setattr(journey, name, getattr(new, name))


def _live(session: Session, journey_id: int) -> Journey | None:
    """The journey an id leads to, following folds to the one that counts."""
    journey = session.get(Journey, journey_id)
    for _ in range(MAX_CHAIN):
        if journey is None or journey.merged_into is None:
            return journey
        journey = session.get(Journey, journey.merged_into)
    return journey


def prune(session: Session, first_seen_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` journeys that are no lead's (anonymous ones, and anonymous
    ones folded into a lead's) first seen before ``first_seen_before``, with the ids that
    lead to them, oldest first; returns how many. Call it until it returns 0 (on
    PostgreSQL, journeys the consumer holds are skipped, so a short chunk is no end);
    :data:`PRUNE_CHUNK` per transaction keeps its locks and statements small.

    An id whose journey is gone starts a new one on its next event, first seen then."""
    ids = list(
        session.scalars(
            select(Journey.id)
            .where(Journey.lead_id.is_(None), Journey.first_seen_at < first_seen_before)
            .order_by(Journey.first_seen_at)
            .limit(limit)
            # PostgreSQL: a journey the consumer is changing now is left for the next day.
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        # A folded journey's ids moved to the one it was folded into: none are left here.
        session.execute(delete(JourneyIdentity).where(JourneyIdentity.journey_id.in_(ids)))
        session.execute(delete(Journey).where(Journey.id.in_(ids), Journey.lead_id.is_(None)))
    return len(ids)


def _ids(user_id: Any, *anonymous_ids: Any) -> list[tuple[str, str]]:
    ids = [(USER_ID, user_id)] if isinstance(user_id, str) and user_id else []
    ids += [(ANONYMOUS_ID, a) for a in anonymous_ids if isinstance(a, str) and a]
    return ids


def _any_of(ids: list[tuple[str, str]], model: Any = JourneyIdentity) -> Any:
    return or_(*((model.kind == kind) & (model.value == value) for kind, value in ids))
