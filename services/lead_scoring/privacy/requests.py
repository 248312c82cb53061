"""Erasure and access requests: who the person is, the request event, its answers.

:func:`person` resolves one identifier to the whole person: the leads that hold it, the
leads ever merged into those, and every identifier any of them holds or held (merges
record what the merged lead held). A request names all of them, so each service finds
the person however it knows them. :func:`start` records the request and returns the
event that asks every service (published through the outbox). :func:`record_answer`
keeps each service's answer; when every service has answered an erasure, the request's
identifiers are replaced by their keys (hashes): nothing here remembers who was erased.
Access answers (person data) are pruned a day after the request (:func:`prune_answers`).

Failure modes: a request names at most ``MAX_REQUEST_IDENTIFIERS`` identifiers (a person
with more is cut to that many, the lead ids and the asked identifier first).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from services.lead_scoring.models import (
    Identity,
    Lead,
    LeadMerge,
    PrivacyAnswer,
    PrivacyRequest,
)
from shared.db import utcnow
from shared.events import MAX_REQUEST_IDENTIFIERS, new_event
from shared.identity import EMAIL, USER_ID
from shared.outbox import Outgoing
from shared.privacy import (
    LEAD_ID,
    SERVICES_TO_ACKNOWLEDGE,
    Identifier,
    identifier_key,
    normal_value,
)
from shared.topics import LEAD_SCORING, PRIVACY

ERASURE, ACCESS = "erasure", "access"
ANSWERS_KEPT = timedelta(days=1)
MAX_MERGE_HOPS = 1000


@dataclass(frozen=True)
class Person:
    lead_ids: list[str]
    identifiers: list[Identifier]


def person(session: Session, kind: str, value: str) -> Person:
    """Everything that names the person ``kind``/``value`` names (see the module)."""
    asked = Identifier(kind, normal_value(kind, value))
    if kind == LEAD_ID:
        seeds = {value} if session.get(Lead, value) is not None else set()
    else:
        seeds = set(
            session.scalars(
                select(Identity.lead_id).where(Identity.kind == kind, Identity.value == asked.value)
            )
        )
    leads = set(seeds)
    frontier = set(seeds)
    for _ in range(MAX_MERGE_HOPS):
        if not frontier:
            break
        merged = set(session.scalars(select(Lead.id).where(Lead.merged_into.in_(frontier))))
        into = {
            m for m in session.scalars(select(Lead.merged_into).where(Lead.id.in_(frontier))) if m
        }
        frontier = (merged | into) - leads
        leads |= frontier
    identifiers = {asked} | {Identifier(LEAD_ID, lead_id) for lead_id in leads}
    if leads:
        for k, v in session.execute(
            select(Identity.kind, Identity.value).where(Identity.lead_id.in_(leads))
        ):
            if k in (USER_ID, EMAIL, "anonymous_id"):
                identifiers.add(Identifier(k, normal_value(k, v)))
        for lead in session.scalars(select(Lead).where(Lead.id.in_(leads))):
            if lead.email:
                identifiers.add(Identifier(EMAIL, normal_value(EMAIL, lead.email)))
            if lead.user_id:
                identifiers.add(Identifier(USER_ID, lead.user_id))
        for held in session.scalars(
            select(LeadMerge.merged_identities).where(LeadMerge.lead_id.in_(leads))
        ):
            for k, v in held or []:
                if k in (USER_ID, EMAIL, "anonymous_id"):
                    identifiers.add(Identifier(k, normal_value(k, v)))
    first = sorted(i for i in identifiers if i.kind == LEAD_ID or i == asked)
    rest = sorted(identifiers - set(first))
    return Person(sorted(leads), (first + rest)[:MAX_REQUEST_IDENTIFIERS])


def start(
    session: Session, kind: str, who: Person, requested_by: str, now: datetime
) -> tuple[PrivacyRequest, Outgoing]:
    """Record a request and the event asking every service (for the caller's outbox)."""
    request = PrivacyRequest(
        id=uuid.uuid4().hex,
        kind=kind,
        identifiers=[i.as_dict() for i in who.identifiers],
        requested_by=requested_by,
        requested_at=now,
    )
    session.add(request)
    session.flush()
    envelope = new_event(
        f"privacy.{kind}_requested",
        {
            "request_id": request.id,
            "identifiers": request.identifiers,
            "requested_by": requested_by,
        },
        source=LEAD_SCORING,
        event_id=f"{kind}-request-{request.id}",
        occurred_at=now,
    )
    return request, Outgoing(PRIVACY, request.id, envelope)


def record_answer(session: Session, event: Any) -> None:
    """Keep a service's answer (idempotent); complete the request once all answered."""
    payload = event.payload
    request = session.get(PrivacyRequest, payload["request_id"])
    if request is None:
        return  # not ours (or long pruned)
    answer = session.get(PrivacyAnswer, (request.id, payload["service"]))
    if answer is None:
        answer = PrivacyAnswer(request_id=request.id, service=payload["service"])
        session.add(answer)
    answer.counts = dict(payload.get("counts") or {})
    answer.data = payload.get("data")
    answer.truncated = list(payload.get("truncated") or [])
    answer.answered_at = event.effective_at
    session.flush()
    answered = set(
        session.scalars(select(PrivacyAnswer.service).where(PrivacyAnswer.request_id == request.id))
    )
    if request.completed_at is None and set(SERVICES_TO_ACKNOWLEDGE) <= answered:
        request.completed_at = event.effective_at
        if request.kind == ERASURE:
            request.identifiers = [
                {"kind": i["kind"], "key": identifier_key(i["kind"], i["value"])}
                for i in request.identifiers
                if "value" in i
            ]


def status(session: Session, request: PrivacyRequest) -> dict[str, Any]:
    answers = {
        a.service: a
        for a in session.scalars(
            select(PrivacyAnswer).where(PrivacyAnswer.request_id == request.id)
        )
    }
    return {
        "request_id": request.id,
        "kind": request.kind,
        "requested_by": request.requested_by,
        "requested_at": request.requested_at,
        "completed_at": request.completed_at,
        "complete": request.completed_at is not None,
        "services": {
            service: {
                "answered": service in answers,
                "answered_at": answers[service].answered_at if service in answers else None,
                "counts": answers[service].counts if service in answers else {},
            }
            for service in SERVICES_TO_ACKNOWLEDGE
        },
    }


def document(session: Session, request: PrivacyRequest) -> dict[str, Any]:
    """An access request's export: every service's part, as one document."""
    answers = session.scalars(select(PrivacyAnswer).where(PrivacyAnswer.request_id == request.id))
    parts = {a.service: {"data": a.data or {}, "truncated": a.truncated} for a in answers}
    return {
        **status(session, request),
        "identifiers": request.identifiers,
        "parts": parts,
    }


def prune_answers(session: Session, now: datetime) -> int:
    """Drop access exports a day old (they are person data); returns how many."""
    old = select(PrivacyRequest.id).where(
        PrivacyRequest.kind == ACCESS, PrivacyRequest.requested_at < now - ANSWERS_KEPT
    )
    result = session.execute(
        update(PrivacyAnswer)
        .where(PrivacyAnswer.request_id.in_(old), PrivacyAnswer.data.is_not(None))
        .values(data=None)
    )
    session.execute(update(PrivacyRequest).where(PrivacyRequest.id.in_(old)).values(identifiers=[]))
    return int(getattr(result, "rowcount", 0) or 0)


def forget_requests_of(session: Session, identifiers: list[Identifier]) -> int:
    """Access requests naming the person (they hold person data) go with the erasure."""
    values = {i.value for i in identifiers}
    recent = select(PrivacyRequest).where(
        PrivacyRequest.kind == ACCESS, PrivacyRequest.requested_at >= utcnow() - ANSWERS_KEPT
    )  # older ones hold nothing any more (prune_answers)
    gone = [
        r.id
        for r in session.scalars(recent)
        if any(i.get("value") in values for i in r.identifiers)
    ]
    for start_at in range(0, len(gone), 500):
        chunk = gone[start_at : start_at + 500]
        session.execute(delete(PrivacyAnswer).where(PrivacyAnswer.request_id.in_(chunk)))
        session.execute(delete(PrivacyRequest).where(PrivacyRequest.id.in_(chunk)))
    return len(gone)
