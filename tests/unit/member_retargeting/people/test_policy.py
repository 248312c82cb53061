"""Who may receive what, on SQLite and PostgreSQL: consent (the latest decision across a
person's identifiers; unknown is no; a tie is a denial), suppression by e-mail and phone
keys, and the frequency cap by the day as the person lives it and by the week, where
transactional messages do not count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from services.member_retargeting.model.suppression import EMAIL, PHONE, suppression_key
from services.member_retargeting.models import (
    Campaign,
    CampaignRun,
    Contact,
    Dispatch,
    Suppression,
)
from services.member_retargeting.people.policy import consented, over_cap, suppressed
from shared.db import utcnow
from tests.unit.member_retargeting.conftest import consent, feed, stage, state_of

DAY = timedelta(days=1)

# ----------------------------------------------------------------------------- helpers


def matching(app: Flask, condition: ColumnElement[bool]) -> list[str]:
    with state_of(app).sessions() as session:
        return list(
            session.scalars(select(Contact.lead_id).where(condition).order_by(Contact.lead_id))
        )


# ----------------------------------------------------------------------------- consent


def test_the_latest_decision_across_identifiers_wins(app: Flask) -> None:
    now = utcnow()
    feed(app, stage("L1", "lead", user="u1", anon=("a1",)))
    feed(app, consent("a1", anonymous=True, at=now - 3 * DAY, marketing=True))
    assert matching(app, consented("marketing")) == ["L1"]
    # Signed in later and said no: the browser's older grant no longer counts.
    feed(app, consent("u1", at=now - 2 * DAY, marketing=False))
    assert matching(app, consented("marketing")) == []
    # An older grant arriving late changes nothing; a newer one does.
    feed(app, consent("a1", anonymous=True, at=now - 5 * DAY, marketing=True))
    assert matching(app, consented("marketing")) == []
    feed(app, consent("a1", anonymous=True, at=now - DAY, marketing=True))
    assert matching(app, consented("marketing")) == ["L1"]


def test_unknown_is_no(app: Flask) -> None:
    now = utcnow()
    feed(
        app,
        stage("L1", "lead", user="u1"),  # never said anything
        stage("L2", "lead", user="u2"),  # said yes to other purposes only
        stage("L3", "lead", user="u3"),  # a stranger's decision is not theirs
        stage("L4", "lead", user="u4"),
        consent("u2", at=now - DAY, analytics=True, advertising=True),
        consent("u-stranger", at=now - DAY, marketing=True),
        consent("u4", at=now - DAY, marketing=True),
    )
    assert matching(app, consented("marketing")) == ["L4"]
    assert matching(app, consented("advertising")) == ["L2"]
    assert matching(app, ~consented("marketing")) == ["L1", "L2", "L3"]
    # Purposes are decided apart: withdrawing one leaves the others.
    feed(app, consent("u2", at=now, advertising=False))
    assert matching(app, consented("advertising")) == []
    assert matching(app, consented("analytics")) == ["L2"]


def test_a_grant_and_a_denial_at_the_same_instant_are_a_denial(app: Flask) -> None:
    at = utcnow() - DAY
    feed(
        app,
        stage("L1", "lead", user="u1", anon=("a1",)),
        stage("L2", "lead", user="u2", anon=("a2",)),
        consent("u1", at=at, marketing=True),
        consent("a1", anonymous=True, at=at, marketing=False),
        # The other way round, and older decisions before them: still a denial.
        consent("u2", at=at - DAY, marketing=True),
        consent("u2", at=at, marketing=False),
        consent("a2", anonymous=True, at=at, marketing=True),
    )
    assert matching(app, consented("marketing")) == []
    feed(app, consent("a2", anonymous=True, at=at + timedelta(seconds=1), marketing=True))
    assert matching(app, consented("marketing")) == ["L2"]


# ------------------------------------------------------------------------- suppression


def suppress(app: Flask, kind: str, value: str, region: str | None = None) -> None:
    key = suppression_key(kind, value, region)
    assert key is not None
    with state_of(app).sessions.begin() as session:
        session.add(Suppression(value_hash=key, kind=kind, reason="asked", created_by="test"))


def _people(app: Flask) -> None:
    feed(
        app,
        stage("L1", "lead", email="Ann@Example.com", traits={"phone": "+14155550100"}),
        stage("L2", "lead", traits={"phone": "0912 345 678", "country": "TW"}),
        stage("L3", "lead", email="carl@example.com"),  # no phone
        stage("L4", "lead", traits={"phone": "+14155550123"}),  # no e-mail
        stage("L5", "lead"),  # neither
        stage("L6", "lead", email="dora@example.com", traits={"phone": "+14155550199"}),
    )


def test_suppressed_by_email_or_phone_key(app: Flask) -> None:
    _people(app)
    assert matching(app, suppressed()) == []
    # The same address however it is written; the same number in national or E.164 form.
    suppress(app, EMAIL, "  ann@EXAMPLE.com ")
    suppress(app, PHONE, "+886 912-345-678")
    assert matching(app, suppressed()) == ["L1", "L2"]
    suppress(app, PHONE, "(415) 555-0199", region="US")
    assert matching(app, suppressed()) == ["L1", "L2", "L6"]


def test_not_suppressed_holds_for_everyone_else(app: Flask) -> None:
    """``~suppressed()`` is how exports keep suppressed people out: everyone not on the
    list must pass, including people with no e-mail or no phone (no key is not a
    match)."""
    _people(app)
    suppress(app, EMAIL, "ann@example.com")
    assert matching(app, suppressed()) == ["L1"]
    assert matching(app, ~suppressed()) == ["L2", "L3", "L4", "L5", "L6"]


# -------------------------------------------------------------------- frequency cap


def add_person(session: Session, lead_id: str, timezone: str | None = None) -> Contact:
    contact = Contact(
        lead_id=lead_id,
        stage="lead",
        score=0,
        is_member=False,
        traits={},
        intent={},
        timezone=timezone,
    )
    session.add(contact)
    return contact


def add_dispatch(
    session: Session,
    lead_id: str,
    at: datetime,
    *,
    kind: str = "marketing",
    status: str = "sent",
    channel: str | None = "email",
) -> None:
    """A dispatch of its own run (dispatches are unique per run and person)."""
    campaign = Campaign(
        name="c",
        segment={"all": []},
        channel=channel or "email",
        message={"subject": "s", "body": "b"},
        kind=kind,
    )
    session.add(campaign)
    session.flush()
    run = CampaignRun(
        campaign_id=campaign.id,
        trigger="manual",
        idempotency_key=f"{lead_id}-{at.isoformat()}-{kind}-{status}",
        status="done",
    )
    session.add(run)
    session.flush()
    session.add(
        Dispatch(
            run_id=run.id,
            campaign_id=campaign.id,
            contact_id=lead_id,
            status=status,
            kind=kind,
            channel=channel,
            created_at=at,
            skip_reason=None if status == "sent" else "consent",
        )
    )


def capped(
    app: Flask,
    people: dict[str, tuple[str | None, list[tuple[datetime, dict[str, Any]]]]],
    now: datetime,
    per_day: int = 1,
    per_week: int = 3,
) -> set[str]:
    """Store ``people`` (lead id → time zone, dispatches) and ask ``over_cap``."""
    with state_of(app).sessions.begin() as session:
        contacts = [add_person(session, lead_id, tz) for lead_id, (tz, _) in people.items()]
        for lead_id, (_, sent) in people.items():
            for at, kw in sent:
                add_dispatch(session, lead_id, at, **kw)
        session.flush()
        return over_cap(session, contacts, now, per_day, per_week)


def test_the_daily_cap_counts_the_day_where_the_person_lives(app: Flask) -> None:
    # 17:00 UTC on 10 March is 01:00 on 11 March in Taipei (UTC+8).
    now = datetime(2024, 3, 10, 17, 0, tzinfo=UTC)
    late_evening_taipei = datetime(2024, 3, 10, 15, 0, tzinfo=UTC)  # 23:00 on the 10th there
    after_midnight_taipei = datetime(2024, 3, 10, 16, 30, tzinfo=UTC)  # 00:30 on the 11th
    result = capped(
        app,
        {
            # Yesterday for them: not capped, although it is the same day in UTC.
            "TPE-YESTERDAY": ("Asia/Taipei", [(late_evening_taipei, {})]),
            "UTC-TODAY": (None, [(late_evening_taipei, {})]),
            "TPE-TODAY": ("Asia/Taipei", [(after_midnight_taipei, {})]),
            # An unknown zone is UTC.
            "NOWHERE-TODAY": ("Mars/Olympus_Mons", [(late_evening_taipei, {})]),
            "NOTHING": ("Asia/Taipei", []),
        },
        now,
    )
    assert result == {"UTC-TODAY", "TPE-TODAY", "NOWHERE-TODAY"}


def test_a_taipei_morning_is_today_there_while_utc_is_still_yesterday(app: Flask) -> None:
    # 05:00 UTC on 10 March is 13:00 on 10 March in Taipei; 23:00 UTC on the 9th is
    # 07:00 on the 10th there (today) but yesterday in UTC.
    now = datetime(2024, 3, 10, 5, 0, tzinfo=UTC)
    sent = datetime(2024, 3, 9, 23, 0, tzinfo=UTC)
    result = capped(
        app,
        {
            "TPE": ("Asia/Taipei", [(sent, {})]),
            "UTC": ("UTC", [(sent, {})]),
            "LA": ("America/Los_Angeles", [(sent, {})]),  # 15:00 on the 9th; now 21:00 the 9th
        },
        now,
    )
    assert result == {"TPE", "LA"}


def test_the_weekly_cap_counts_the_last_seven_days(app: Flask) -> None:
    now = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    result = capped(
        app,
        {
            "WEEK": (None, [(now - d * DAY, {}) for d in (1, 3, 6)]),
            "OLD": (None, [(now - d * DAY, {}) for d in (1, 3, 8)]),
            "TWO": (None, [(now - d * DAY, {}) for d in (2, 4)]),
            # per_day 2: two today reach it, one does not.
            "TODAY2": (None, [(now - timedelta(hours=h), {}) for h in (1, 2)]),
            "TODAY1": (None, [(now - timedelta(hours=1), {})]),
        },
        now,
        per_day=2,
        per_week=3,
    )
    assert result == {"WEEK", "TODAY2"}


def test_transactional_and_skipped_dispatches_do_not_count(app: Flask) -> None:
    now = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    today = [now - timedelta(hours=h) for h in (1, 2, 3, 4)]
    result = capped(
        app,
        {
            "RECEIPTS": (None, [(at, {"kind": "transactional"}) for at in today]),
            "SKIPPED": (None, [(at, {"status": "skipped"}) for at in today]),
            "MIXED": (None, [(today[0], {"kind": "transactional"}), (today[1], {})]),
        },
        now,
    )
    assert result == {"MIXED"}
    with state_of(app).sessions() as session:
        assert over_cap(session, [], utcnow(), 1, 3) == set()


def test_only_messages_count_toward_the_cap(app: Flask) -> None:
    """Regression (review finding 5): an ads audience export counted as a message, so
    everyone exported had used up the day's message."""
    now = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    today = now - timedelta(hours=1)
    result = capped(
        app,
        {
            "EXPORTED": (None, [(today, {"channel": "ads"})]),
            "EXPORTED-ALL-WEEK": (None, [(now - d * DAY, {"channel": "ads"}) for d in range(6)]),
            **{
                f"BY-{channel.upper()}": (None, [(today, {"channel": channel})])
                for channel in ("email", "sms", "whatsapp", "webhook")
            },
            "NO-CHANNEL": (None, [(today, {"channel": None})]),  # counted: never too few
        },
        now,
    )
    assert result == {"BY-EMAIL", "BY-SMS", "BY-WHATSAPP", "BY-WEBHOOK", "NO-CHANNEL"}
