"""Hashed ads audiences: a segment exported for Meta Custom Audiences or Google Customer
Match. Only people with advertising consent who are not suppressed and can be matched
(an e-mail or a phone); each identifier normalised and SHA-256-hashed as the platform
wants (:mod:`..model.audiences`) — no plain identifier ever leaves. The rows go out as
``audience.batch`` events on the dispatch topic in numbered parts (at most 1,000 rows;
an ``ads`` run's chunk is a part), and every person exported
gets a ledger line. An ``ads`` campaign's run exports its recipients the same way, a
chunk at a time, each recipient recorded as a dispatch: ``sent``, or ``skipped`` with the
reason (``no_consent``, ``suppressed``, ``no_address``: no e-mail or phone the platform
can match, ``merged_or_gone``), and its ledger lines name whoever started the run;
:func:`export_segment` exports a segment in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from services.member_retargeting.campaigns.runs import GONE, NO_ADDRESS, NO_CONSENT, SUPPRESSED
from services.member_retargeting.model.audiences import FIELDS, hashed_person, upload_row
from services.member_retargeting.model.segments import Rule
from services.member_retargeting.models import (
    AudienceExport,
    Campaign,
    CampaignRun,
    Contact,
    Dispatch,
    outbox,
)
from services.member_retargeting.people.policy import consented, suppressed
from services.member_retargeting.people.segments import condition
from services.member_retargeting.sharing.ledger import record_many
from shared.consent import ADVERTISING
from shared.events import new_event
from shared.outbox import Outgoing, enqueue
from shared.topics import DISPATCH, MEMBER_RETARGETING

PART = 1000
DESTINATIONS = {"meta": "meta:custom_audience", "google": "google:customer_match"}


def export_segment(
    session: Session, rule: Rule, platform: str, *, requested_by: str, now: datetime
) -> AudienceExport:
    """Export everyone the segment matches now (who may be exported) to ``platform``."""
    export = AudienceExport(
        platform=platform,
        segment={},
        fields=list(FIELDS[platform]),  # type: ignore[index]
        people=0,
        parts=0,
        requested_by=requested_by,
        created_at=now,
    )
    session.add(export)
    session.flush()
    ids = list(
        session.scalars(
            select(Contact.lead_id)
            .where(Contact.merged_into.is_(None), condition(rule, now))
            .order_by(Contact.lead_id)
        )
    )
    for start in range(0, len(ids), PART):
        _export(session, export, ids[start : start + PART], now)
    return export


def export_run_chunk(
    session: Session, campaign: Campaign, run: CampaignRun, ids: Sequence[str], now: datetime
) -> None:
    """An ``ads`` campaign's run: its chunk of recipients exported, each recorded as a
    dispatch (sent, or skipped with the reason) so the run counts and resumes as any."""
    platform = str(campaign.message.get("platform", "meta"))
    export = session.scalar(
        select(AudienceExport).where(AudienceExport.requested_by == f"run:{run.id}")
    )
    if export is None:
        export = AudienceExport(
            platform=platform,
            segment=campaign.segment,
            fields=list(FIELDS[platform]),  # type: ignore[index]
            people=0,
            parts=0,
            requested_by=f"run:{run.id}",
            created_at=now,
        )
        session.add(export)
        session.flush()
    skipped: dict[str, str] = {}
    _export(
        session,
        export,
        ids,
        now,
        campaign_id=campaign.id,
        requested_by=run.requested_by,
        skipped=skipped,
    )
    session.execute(
        insert(Dispatch),
        [
            {
                "run_id": run.id,
                "campaign_id": campaign.id,
                "contact_id": contact_id,
                "channel": "ads",
                "kind": campaign.kind,
                "status": "skipped" if contact_id in skipped else "sent",
                "skip_reason": skipped.get(contact_id),
                "event_id": None,
                "created_at": now,
                "attributed_until": None,
            }
            for contact_id in ids
        ],
    )


def _export(
    session: Session,
    export: AudienceExport,
    ids: Sequence[str],
    now: datetime,
    *,
    campaign_id: int | None = None,
    requested_by: str | None = None,
    skipped: dict[str, str] | None = None,
) -> set[str]:
    """Hash and publish the exportable ones among ``ids`` as the export's next part
    (numbered by the export, so a part's event id is never reused); returns who was
    exported, and puts why each other one was not into ``skipped``. The ledger lines
    name ``requested_by`` (default: who asked for the export)."""
    platform = export.platform
    skipped = {} if skipped is None else skipped
    wanted = list(ids)
    live = set(
        session.scalars(
            select(Contact.lead_id).where(
                Contact.lead_id.in_(wanted), Contact.merged_into.is_(None)
            )
        )
    )
    allowed = set(
        session.scalars(
            select(Contact.lead_id).where(Contact.lead_id.in_(wanted), consented(ADVERTISING))
        )
    )
    blocked = set(
        session.scalars(select(Contact.lead_id).where(Contact.lead_id.in_(wanted), suppressed()))
    )
    for contact_id in wanted:
        if contact_id not in live:
            skipped[contact_id] = GONE
        elif contact_id not in allowed:
            skipped[contact_id] = NO_CONSENT
        elif contact_id in blocked:
            skipped[contact_id] = SUPPRESSED
    contacts = session.scalars(
        select(Contact)
        .where(Contact.lead_id.in_([i for i in wanted if i not in skipped]))
        .order_by(Contact.lead_id)
    ).all()
    rows: list[dict[str, str]] = []
    exported: set[str] = set()
    for contact in contacts:
        hashed = hashed_person(
            email=contact.email,
            phone=contact.phone,
            first_name=contact.first_name,
            last_name=contact.last_name,
            country=contact.country,
            platform=platform,  # type: ignore[arg-type]
        )
        if hashed is None:
            skipped[contact.lead_id] = NO_ADDRESS  # no e-mail or phone the platform matches
            continue
        rows.append(upload_row(hashed, platform))  # type: ignore[arg-type]
        exported.add(contact.lead_id)
    if rows:
        part, export.parts = export.parts, export.parts + 1
        event = new_event(
            "audience.batch",
            {"export_id": export.id, "platform": platform, "part": part, "rows": rows},
            source=MEMBER_RETARGETING,
            event_id=f"audience-{export.id}-{part}",
            occurred_at=now,
        )
        enqueue(session, outbox, [Outgoing(DISPATCH, str(export.id), event)])
        ledger: list[dict[str, Any]] = [
            {
                "contact_id": contact_id,
                "destination": DESTINATIONS[platform],
                "fields": [f"sha256({f})" for f in FIELDS[platform]],  # type: ignore[index]
                "purpose": ADVERTISING,
                "campaign_id": campaign_id,
                "export_id": export.id,
                "requested_by": requested_by or export.requested_by,
                "at": now,
            }
            for contact_id in sorted(exported)
        ]
        record_many(session, ledger)
    export.people += len(exported)
    return exported
