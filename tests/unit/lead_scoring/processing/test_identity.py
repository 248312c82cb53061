"""Identity resolution you can trust, through the real runner batch on SQLite and
PostgreSQL: a shared device never merges two people, two devices of one person still
merge, an alias carries a third device, conflicts are recorded, and random interleavings
never give one lead two user ids."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from services.lead_scoring.app import create_app, init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.models import Identity, IdentityConflict, Lead, LeadEvent
from services.lead_scoring.state import STATE as SCORING_STATE
from shared.events import Envelope, new_event
from shared.identity import ANONYMOUS_ID, USER_ID
from tests.unit.lead_scoring.conftest import TOKENS, Feeder

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class Clock:
    """Event times a minute apart, so a replay scores the same moments."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> datetime:
        return T0 + timedelta(minutes=next(self._ticks))


def event(clock: Clock, event_type: str, payload: dict[str, Any], **ids: str) -> Envelope:
    return new_event(event_type, payload, source="web", occurred_at=clock(), **ids)


def page(clock: Clock, **ids: str) -> Envelope:
    return event(clock, "page", {"properties": {"path": "/"}}, **ids)


def identify(clock: Clock, email: str | None = None, **ids: str) -> Envelope:
    traits = {"email": email, "name": email.split("@")[0]} if email else {}
    return event(clock, "identify", {"traits": traits}, **ids)


def track(clock: Clock, name: str, **ids: str) -> Envelope:
    return event(clock, "track", {"event": name, "properties": {}}, **ids)


def live_leads(app: Flask) -> dict[str | None, Lead]:
    with app.extensions[SCORING_STATE].sessions() as s:
        return {x.user_id: x for x in s.scalars(select(Lead).where(Lead.merged_into.is_(None)))}


def held(app: Flask, lead_id: str) -> set[tuple[str, str]]:
    with app.extensions[SCORING_STATE].sessions() as s:
        rows = s.execute(select(Identity.kind, Identity.value).where(Identity.lead_id == lead_id))
        return {(r.kind, r.value) for r in rows}


def event_names(app: Flask, lead_id: str) -> list[str]:
    with app.extensions[SCORING_STATE].sessions() as s:
        rows = s.scalars(
            select(LeadEvent).where(LeadEvent.lead_id == lead_id).order_by(LeadEvent.occurred_at)
        )
        return [f"{r.type}:{r.name or ''}" for r in rows]


def test_a_shared_computer_gives_two_people_two_leads(scoring_app: Flask, feed: Feeder) -> None:
    clock = Clock()
    feed(page(clock, anonymous_id="laptop"))
    feed(identify(clock, "p1@x.co", user_id="P1", anonymous_id="laptop"))
    feed(page(clock, anonymous_id="laptop"))  # between the sign-ins: person 1's
    result = feed(identify(clock, "p2@x.co", user_id="P2", anonymous_id="laptop"))
    feed(track(clock, "Demo Requested", user_id="P2", anonymous_id="laptop"))
    assert result.dead_letters == []

    leads = live_leads(scoring_app)
    assert set(leads) == {"P1", "P2"}
    one, two = leads["P1"], leads["P2"]
    assert (one.email, two.email) == ("p1@x.co", "p2@x.co")
    assert (one.traits["name"], two.traits["name"]) == ("p1", "p2")
    assert event_names(scoring_app, one.id) == ["page:", "identify:", "page:"]
    assert event_names(scoring_app, two.id) == ["identify:", "track:Demo Requested"]
    assert (one.score, two.score) == (1 + 5 + 1, 5 + 30)
    # The browser follows whoever signed in last; the conflict is on record.
    assert (ANONYMOUS_ID, "laptop") in held(scoring_app, two.id)
    assert held(scoring_app, one.id) == {(USER_ID, "P1"), ("email", "p1@x.co")}
    with scoring_app.extensions[SCORING_STATE].sessions() as s:
        [conflict] = s.scalars(select(IdentityConflict))
    assert (conflict.lead_id, conflict.other_lead_id) == (two.id, one.id)
    assert (conflict.kind, conflict.value, conflict.moved) == (ANONYMOUS_ID, "laptop", True)

    # Person 1 signs in again on the same laptop: the browser goes back to them.
    feed(identify(clock, user_id="P1", anonymous_id="laptop"))
    feed(page(clock, anonymous_id="laptop"))
    leads = live_leads(scoring_app)
    assert (ANONYMOUS_ID, "laptop") in held(scoring_app, leads["P1"].id)
    assert event_names(scoring_app, leads["P1"].id)[-2:] == ["identify:", "page:"]
    assert len(leads) == 2


def test_two_devices_of_one_person_still_merge_and_alias_carries_a_third(
    scoring_app: Flask, feed: Feeder
) -> None:
    clock = Clock()
    feed(page(clock, anonymous_id="phone"), page(clock, anonymous_id="desktop"))
    feed(page(clock, anonymous_id="tablet"))
    feed(identify(clock, "ada@x.co", user_id="ada", anonymous_id="phone"))
    feed(identify(clock, user_id="ada", anonymous_id="desktop"))
    feed(event(clock, "alias", {"previous_id": "tablet"}, user_id="ada"))
    feed(page(clock, anonymous_id="tablet"))  # later: the person's, through the alias
    [ada] = live_leads(scoring_app).values()
    assert held(scoring_app, ada.id) == {
        (USER_ID, "ada"),
        ("email", "ada@x.co"),
        (ANONYMOUS_ID, "phone"),
        (ANONYMOUS_ID, "desktop"),
        (ANONYMOUS_ID, "tablet"),
    }
    assert len(event_names(scoring_app, ada.id)) == 7  # every page view, both identifies


def test_identify_or_alias_never_merges_two_known_people(scoring_app: Flask, feed: Feeder) -> None:
    clock = Clock()
    feed(identify(clock, "p@x.co", user_id="P", anonymous_id="a"))
    feed(identify(clock, "q@x.co", user_id="Q", anonymous_id="b"))
    result = feed(event(clock, "alias", {"previous_id": "Q"}, user_id="P"))
    feed(identify(clock, "q@x.co", user_id="P"))  # P claims Q's e-mail: refused
    assert result.dead_letters == [] and not [
        o for o in result.outgoing if o.envelope.type == "lead.merged"
    ]
    leads = live_leads(scoring_app)
    assert set(leads) == {"P", "Q"}
    assert leads["P"].email == "p@x.co" and leads["Q"].email == "q@x.co"
    assert "q@x.co" not in str(leads["P"].traits)
    with scoring_app.extensions[SCORING_STATE].sessions() as s:
        conflicts = {(c.kind, c.value, c.moved) for c in s.scalars(select(IdentityConflict))}
    assert conflicts == {(USER_ID, "Q", False), ("email", "q@x.co", False)}


# ---------------------------------------------------------------- generated interleavings

people = ("P1", "P2", "P3")
devices = ("D1", "D2", "D3")
calls = st.lists(
    st.one_of(
        st.tuples(st.just("identify"), st.sampled_from(people), st.sampled_from(devices)),
        st.tuples(st.just("alias"), st.sampled_from(people), st.sampled_from(devices + people)),
        st.tuples(st.just("page"), st.sampled_from((*people, None)), st.sampled_from(devices)),
    ),
    min_size=1,
    max_size=14,
)


def test_interleavings_never_put_two_user_ids_on_one_lead(tmp_path: Path) -> None:
    """Random interleavings of identify, alias and page calls over three people and three
    devices (SQLite; a fresh database per example)."""
    databases = itertools.count()

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(calls)
    def check(script: list[tuple[str, str | None, str]]) -> None:
        url = f"sqlite:///{tmp_path / f'i{next(databases)}.db'}"
        app = create_app(ScoringConfig(database_url=url, tokens=TOKENS))
        init_db(app.extensions[SCORING_STATE].engine)
        feed, clock = Feeder(app), Clock()
        for kind, person, device in script:
            if kind == "identify":
                call = identify(clock, f"{person}@x.co", user_id=str(person), anonymous_id=device)
            elif kind == "alias":
                call = event(clock, "alias", {"previous_id": device}, user_id=str(person))
            elif person:
                call = page(clock, user_id=person, anonymous_id=device)
            else:
                call = page(clock, anonymous_id=device)
            assert feed(call).dead_letters == []
        with app.extensions[SCORING_STATE].sessions() as s:
            per_lead = s.execute(
                select(Identity.lead_id, func.count())
                .where(Identity.kind == USER_ID)
                .group_by(Identity.lead_id)
            ).all()
            assert all(count == 1 for _, count in per_lead), per_lead
            for lead in s.scalars(select(Lead).where(Lead.merged_into.is_(None))):
                ids = s.scalars(
                    select(Identity.value).where(
                        Identity.lead_id == lead.id, Identity.kind == USER_ID
                    )
                ).all()
                assert lead.user_id in (ids[0] if ids else None, None)
        app.extensions[SCORING_STATE].engine.dispose()

    check()
