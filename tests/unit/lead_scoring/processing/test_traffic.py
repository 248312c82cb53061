"""Applying traffic through the real runner batch, on SQLite and PostgreSQL: identities,
merges, scoring, the lifecycle, dead letters."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select

from services.lead_scoring.models import Identity, Lead, ScoreEntry
from services.lead_scoring.state import STATE as SCORING_STATE
from shared.events import new_event
from tests.unit.lead_scoring.conftest import Feeder, types


def page(anon: str, path: str = "/"):
    return new_event("page", {"properties": {"path": path}}, source="web", anonymous_id=anon)


def identify(anon: str | None, user: str, email: str | None = None, **traits):
    if email:
        traits["email"] = email
    return new_event("identify", {"traits": traits}, source="web", anonymous_id=anon, user_id=user)


def track(user: str, name: str, **props):
    return new_event("track", {"event": name, "properties": props}, source="web", user_id=user)


def leads(app: Flask) -> list[Lead]:
    with app.extensions[SCORING_STATE].sessions() as s:
        return list(s.scalars(select(Lead).where(Lead.merged_into.is_(None))))


def test_anonymous_visitor_becomes_a_subscriber_lead_with_points(
    scoring_app: Flask, feed: Feeder
) -> None:
    result = feed(page("a1"), page("a1", "/pricing"))
    assert result.applied == 2
    [lead] = leads(scoring_app)
    assert (lead.stage, lead.score, lead.email) == ("subscriber", 12, None)
    # One lead.scored for the batch, with both events' points (coalesced).
    assert types(result) == ["lead.scored"]
    [scored] = result.outgoing
    assert scored.key == lead.id
    assert (scored.envelope.payload["delta"], scored.envelope.payload["lead"]["score"]) == (12, 12)
    assert len({p["event_id"] for p in scored.envelope.payload["points"]}) == 2


def test_identify_ties_earlier_anonymous_activity_and_walks_the_lifecycle(
    scoring_app: Flask, feed: Feeder
) -> None:
    feed(page("a1"), page("a1", "/pricing"))
    result = feed(identify("a1", "u1", "Ada@Example.COM", name="Ada"))
    [lead] = leads(scoring_app)
    assert (lead.email, lead.user_id, lead.stage, lead.score) == (
        "ada@example.com",
        "u1",
        "lead",
        17,
    )
    assert types(result) == ["lead.scored", "lead.stage_changed"]
    change = result.outgoing[1].envelope.payload
    assert (change["from_stage"], change["to_stage"]) == ("subscriber", "lead")
    assert change["lead"]["anonymous_ids"] == ["a1"]

    result = feed(track("u1", "Form Submitted"))
    [lead] = leads(scoring_app)
    assert (lead.stage, lead.score) == ("mql", 67)
    assert types(result) == ["lead.scored", "lead.stage_changed"]

    result = feed(track("u1", "Order Completed", revenue=99))
    [lead] = leads(scoring_app)
    assert lead.stage == "customer"
    assert types(result) == ["lead.stage_changed"]


def test_two_profiles_merge_without_losing_history(scoring_app: Flask, feed: Feeder) -> None:
    feed(page("a1", "/pricing"))  # anonymous lead A
    feed(identify(None, "u1", "ada@example.com"))  # known lead B
    result = feed(identify("a1", "u1"))  # the same person
    [survivor] = leads(scoring_app)
    assert "lead.merged" in types(result)
    merged = next(o for o in result.outgoing if o.envelope.type == "lead.merged").envelope
    assert merged.payload["lead"]["lead_id"] == survivor.id
    with scoring_app.extensions[SCORING_STATE].sessions() as s:
        assert s.scalar(select(func.count()).select_from(Lead)) == 2  # nothing deleted
        owners = set(s.scalars(select(Identity.lead_id)))
        rules = sorted(s.scalars(select(ScoreEntry.rule_id)))
    assert owners == {survivor.id}
    # both one-time "identified" awards existed; after the merge it counts once
    assert rules == ["identified", "intent:pricing", "page-view"]
    assert survivor.score == 16


def test_a_merge_explains_the_points_it_takes_away(scoring_app: Flask, feed: Feeder) -> None:
    anonymous_two = new_event(
        "identify", {"traits": {"email": "two@x.co"}}, source="web", anonymous_id="a2"
    )
    feed(identify("a1", "u1", "one@x.co"), anonymous_two)  # 5 + 5
    alias = new_event("alias", {"previous_id": "a2"}, source="web", user_id="u1")
    result = feed(alias)
    [survivor] = leads(scoring_app)
    assert survivor.score == 5  # "identified" is one-time: it counts once after the merge
    scored = next(o for o in result.outgoing if o.envelope.type == "lead.scored").envelope
    assert scored.payload["delta"] == -5 == sum(p["points"] for p in scored.payload["points"])
    [adjustment] = scored.payload["points"]
    assert (adjustment["rule_id"], adjustment["points"]) == ("identified", -5)
    assert adjustment["reason"] == "Told us who they are: 10 → 5 points (histories merged)"
    assert adjustment["event_id"] == alias.event_id  # what caused it


def test_redelivered_events_are_not_counted_twice(scoring_app: Flask, feed: Feeder) -> None:
    event = page("a1")
    feed(event)
    again = feed(event, event)
    assert (again.applied, again.duplicates) == (0, 2)
    assert leads(scoring_app)[0].score == 1


def test_poison_messages_become_dead_letters_and_others_still_apply(
    scoring_app: Flask, feed: Feeder
) -> None:
    wrong_topic_type = new_event(
        "campaign.dispatch",
        {"campaign_id": 1, "run_id": 1, "contact_id": "c", "channel": "email", "message": {}},
        source="x",
    )
    result = feed(b"{garbage", page("a1"), wrong_topic_type)
    assert result.applied == 1
    assert [(d.offset, d.kind) for d in result.dead_letters] == [
        (0, "bad_json"),
        (2, "unknown_type"),
    ]
    assert all(d.source == "funnel.traffic" and d.reason for d in result.dead_letters)


def test_junk_ids_never_merge_strangers(scoring_app: Flask, feed: Feeder) -> None:
    feed(identify("undefined", "u1", "one@x.co"), identify("undefined", "u2", "two@x.co"))
    feed(new_event("alias", {"previous_id": "null"}, source="web", user_id="u3"))
    assert sorted(lead.email or "" for lead in leads(scoring_app)) == ["", "one@x.co", "two@x.co"]
    result = feed(new_event("page", {"properties": {}}, source="web", anonymous_id="0"))
    assert [d.reason for d in result.dead_letters] == [
        "event names no person (no usable user_id or anonymous_id)"
    ]
