"""Campaign runs: the audience fixed at start, chunks, the checks at send time with every
skip recorded by reason, exactly once per recipient across a failed chunk; SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import Engine, func, select, text

from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.campaigns.runs import Limits, start, work
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.models import Campaign, CampaignRun, Dispatch, SharingRecord
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.db import utcnow
from shared.events import new_event
from shared.topics import DISPATCH, TRAFFIC
from tests.conftest import wait_for
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    TOKENS,
    consent,
    create,
    did,
    feed,
    published,
    seed,
    stage,
    state_of,
    work_runs,
)
from tests.unit.member_retargeting.conftest import trigger as run_now


def people(app: Flask, count: int, *, marketing: bool | None = True) -> None:
    """``count`` leads P000… with e-mail, user id and the given marketing decision."""
    events = [stage(f"P{i:03}", "lead", email=f"p{i}@x.co", user=f"p{i}") for i in range(count)]
    if marketing is not None:
        events += [consent(f"p{i}", marketing=marketing) for i in range(count)]
    feed(app, *events)


def trigger(app: Flask, campaign: dict, key: str | None = None) -> dict:
    return run_now(app.test_client(), campaign, key)


def report(app: Flask, campaign: dict) -> dict:
    return app.test_client().get(f"/campaigns/{campaign['id']}/report", headers=MARKETING).json


def test_a_run_goes_in_chunks_with_progress(app: Flask) -> None:
    people(app, 120)  # the app's chunk is 50
    campaign = create(app.test_client(), {"all": []})
    run = trigger(app, campaign)
    assert run["audience_size"] == 120
    state = state_of(app)
    limits = Limits(per_day=5, per_week=10, chunk=50)
    sizes = []
    for _ in range(4):
        with state.sessions.begin() as session:
            row = session.get(CampaignRun, run["run_id"])
            assert row is not None
            sizes.append(work(session, row, limits, utcnow()))
            progress = (row.status, row.processed)
        if sizes[-1]:
            assert len(published(app, DISPATCH)) == sum(sizes)
    assert sizes == [50, 50, 20, 0]
    assert progress == ("done", 120)


def test_every_skipped_recipient_is_recorded_with_its_reason(app: Flask) -> None:
    feed(
        app,
        stage("A", "lead", email="a@x.co", user="a"),  # consents: sent
        stage("B", "lead", email="b@x.co", user="b"),  # never said: no consent
        stage("C", "lead", email="c@x.co", user="c"),  # denied
        stage("D", "lead", email="Dee@X.co", user="d"),  # suppressed (by its normal form)
        stage("E", "lead", user="e"),  # no e-mail
        consent("a", marketing=True),
        consent("c", marketing=False),
        consent("d", marketing=True),
        consent("e", marketing=True),
    )
    client = app.test_client()
    suppressed = client.post(
        "/suppressions", headers=MARKETING, json={"email": " dee@x.co", "reason": "asked us"}
    )
    assert suppressed.status_code == 201
    assert "dee" not in str(suppressed.json)  # only the hash is kept
    campaign = create(client, {"all": []})
    trigger(app, campaign)
    work_runs(app)
    assert [e.payload["contact_id"] for e in published(app, DISPATCH)] == ["A"]
    body = report(app, campaign)
    assert body["skipped"] == {"no_consent": 2, "suppressed": 1, "no_address": 1}
    assert (body["audience_size"], body["dispatched_count"], body["skipped_count"]) == (5, 1, 4)
    with state_of(app).sessions() as session:
        ledger = session.execute(select(SharingRecord.contact_id, SharingRecord.destination))
        assert ledger.all() == [("A", "email")]  # only what was sent is shared


def test_the_frequency_cap_holds_across_campaigns_and_spares_transactional_ones(
    app: Flask,
) -> None:
    seed(app)  # L1, L2, L4 reachable by e-mail, all consenting
    client = app.test_client()
    first = create(client, {"all": []}, name="first")
    second = create(client, {"all": []}, name="second")
    receipt = create(client, {"all": []}, name="receipt", kind="transactional")
    for campaign in (first, second, receipt):
        trigger(app, campaign)
        work_runs(app)
    assert report(app, first)["dispatched_count"] == 3
    assert report(app, second)["skipped"] == {"frequency_cap": 3, "no_address": 1}
    assert report(app, receipt)["dispatched_count"] == 3  # exempt from the cap
    sent = published(app, DISPATCH)
    assert [e.payload["kind"] for e in sent].count("transactional") == 3


def test_consent_is_checked_when_sending_not_when_the_run_starts(app: Flask) -> None:
    seed(app)
    campaign = create(app.test_client(), {"all": []})
    trigger(app, campaign)
    feed(app, consent("u1", marketing=False))  # withdrawn after the trigger
    work_runs(app)
    assert sorted(e.payload["contact_id"] for e in published(app, DISPATCH)) == ["L2", "L4"]


def test_the_audience_is_fixed_when_the_run_starts(app: Flask) -> None:
    seed(app)
    campaign = create(app.test_client(), {"attribute": "stage", "op": "eq", "value": "lead"})
    run = trigger(app, campaign)
    feed(app, stage("L1", "lead", email="mql@x.co", user="u1"))  # joins the segment late
    work_runs(app)
    assert run["audience_size"] == 1
    assert [e.payload["contact_id"] for e in published(app, DISPATCH)] == ["L4"]


def test_a_failed_chunk_is_done_again_exactly_once(app: Flask) -> None:
    """A chunk is one transaction: a crash inside it leaves nothing behind, and the next
    pass sends each of its recipients once."""
    people(app, 30)
    campaign = create(app.test_client(), {"all": []})
    run = trigger(app, campaign)
    state = state_of(app)
    limits = Limits(per_day=5, per_week=10, chunk=20)
    with pytest.raises(RuntimeError), state.sessions.begin() as session:
        row = session.get(CampaignRun, run["run_id"])
        assert row is not None
        assert work(session, row, limits, utcnow()) == 20
        raise RuntimeError("killed mid-chunk")
    assert published(app, DISPATCH) == []
    work_runs(app)
    ids = [e.payload["contact_id"] for e in published(app, DISPATCH)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 30
    with state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Dispatch)) == 30


def test_a_concurrent_start_with_the_same_key_returns_the_first_run(app: Flask) -> None:
    people(app, 3)
    state = state_of(app)
    with state.sessions.begin() as session:
        campaign = Campaign(
            name="c", segment={"all": []}, channel="email", message={"subject": "s", "body": "b"}
        )
        session.add(campaign)
        session.flush()
        first, created = start(
            session, campaign, key="k", trigger="t", requested_by="m", now=utcnow()
        )
        again, created_again = start(
            session, campaign, key="k", trigger="t", requested_by="m", now=utcnow()
        )
        assert (created, created_again, first.id) == (True, False, again.id)


def test_messages_carry_the_persons_fields_and_their_favourite_product(app: Flask) -> None:
    feed(
        app,
        stage(
            "A",
            "lead",
            email="a@x.co",
            user="a",
            traits={"firstName": "Ada", "company": "Analytical"},
        ),
        consent("a", marketing=True),
        did("a", "Product Viewed", product_id="p1", name="Lamp", category="lights"),
        did("a", "Product Added", product_id="p2", name="Desk", category="tables"),
    )
    campaign = create(
        app.test_client(),
        {"all": []},
        message={
            "subject": "{{ first_name | default('Hi') }}, still want the {{ product }}?",
            "body": "{{ company }} · {{ category }} · {{ last_name | default('-') }}",
        },
    )
    trigger(app, campaign)
    work_runs(app)
    [event] = published(app, DISPATCH)
    assert event.payload["message"]["subject"] == "Ada, still want the Desk?"
    assert event.payload["message"]["body"] == "Analytical · tables · -"
    assert (event.payload["email"], event.payload["phone"]) == ("a@x.co", None)


def test_sms_goes_to_the_phone_and_never_carries_the_email(app: Flask) -> None:
    feed(
        app,
        stage("A", "lead", email="a@x.co", user="a", traits={"phone": "+886 912 345 678"}),
        stage("B", "lead", email="b@x.co", user="b"),
        consent("a", marketing=True),
        consent("b", marketing=True),
    )
    campaign = create(app.test_client(), {"all": []}, channel="sms")
    trigger(app, campaign)
    work_runs(app)
    [event] = published(app, DISPATCH)
    assert (event.payload["contact_id"], event.payload["email"]) == ("A", None)
    assert event.payload["phone"] == "+886 912 345 678"
    assert report(app, campaign)["skipped"] == {"no_address": 1}


def test_conversions_count_purchases_inside_the_attribution_window(app: Flask) -> None:
    seed(app)
    campaign = create(app.test_client(), {"members": False}, attribution_days=3)
    trigger(app, campaign)
    sent_at = utcnow() - timedelta(days=5)
    work_runs(app, now=sent_at)
    feed(
        app,
        did("u1", "Order Completed", revenue=80, at=sent_at + timedelta(hours=2)),
        did("u1", "Order Completed", revenue=20, at=sent_at + timedelta(days=1)),
        did("u1", "Order Completed", revenue=7, at=sent_at - timedelta(hours=1)),  # before
        did("u4", "Order Completed", revenue=999, at=sent_at + timedelta(days=4)),  # too late
        did("u2", "Order Completed", revenue=50, at=sent_at + timedelta(hours=1)),  # not reached
    )
    body = report(app, campaign)
    assert (body["dispatched_count"], body["conversions"], body["revenue"]) == (2, 1, "100.00")


def sent_to(app: Flask) -> Counter[str]:
    return Counter(
        e.payload["contact_id"] for e in published(app, DISPATCH) if e.type == "campaign.dispatch"
    )


def test_an_address_that_cannot_be_normalised_is_never_sent_to(app: Flask) -> None:
    """Regression (review finding 3): a phone written without its country code (and a
    country written out) had no suppression key, so a suppressed number was texted."""
    feed(
        app,
        # Suppressed, written nationally with the country as a name: found, not sent.
        stage(
            "A", "lead", user="a", traits={"phone": "(415) 555-0132", "country": "United States"}
        ),
        # Written nationally with no country at all: cannot be checked, not sent.
        stage("B", "lead", user="b", traits={"phone": "(415) 555-0199"}),
        stage("C", "lead", user="c", traits={"phone": "+1 415 555 0100"}),  # fine: sent
        stage("D", "lead", email="not an address", user="d"),
        *(consent(user, marketing=True) for user in "abcd"),
    )
    client = app.test_client()
    stop = {"phone": "+1 415 555 0132", "reason": "STOP reply"}
    assert client.post("/suppressions", headers=MARKETING, json=stop).status_code == 201
    sms = create(client, {"all": []}, name="sms", channel="sms", kind="transactional")
    mail = create(client, {"all": []}, name="mail", kind="transactional")
    for campaign in (sms, mail):
        trigger(app, campaign)
        work_runs(app)
    assert sent_to(app) == {"C": 1}
    assert report(app, sms)["skipped"] == {
        "suppressed": 1,
        "unverifiable_address": 1,
        "no_address": 1,
    }
    # The person is suppressed on every channel, by any of their keys.
    assert report(app, mail)["skipped"] == {
        "suppressed": 1,
        "unverifiable_address": 1,
        "no_address": 2,
    }


def test_conflicting_categories_in_one_event_are_a_denial(app: Flask) -> None:
    """Regression (review finding 4): ``{"marketing": false, "email": true}`` in one
    event granted marketing (the later key won)."""
    preferences = {"marketing": False, "email": True}
    feed(
        app,
        stage("A", "lead", email="a@x.co", user="a"),
        (
            TRAFFIC,
            new_event(
                "page",
                {"properties": {}},
                source="web",
                user_id="a",
                context={"consent": {"categoryPreferences": preferences}},
            ),
        ),
    )
    campaign = create(app.test_client(), {"all": []})
    trigger(app, campaign)
    work_runs(app)
    assert sent_to(app) == {}
    assert report(app, campaign)["skipped"] == {"no_consent": 1}


def test_ads_exports_never_use_up_the_message_cap(app: Flask) -> None:
    """Regression (review finding 5): an ads run's exported people counted as messaged,
    so the day's first real message to them was skipped as capped."""
    seed(app)
    feed(app, *(consent(f"u{i}", advertising=True) for i in range(1, 5)))
    client = app.test_client()
    ads = create(client, {"all": []}, name="ads", channel="ads", message={"platform": "meta"})
    trigger(app, ads)
    work_runs(app)
    assert report(app, ads)["dispatched_count"] == 3  # L1, L2, L4: an e-mail to match
    mail = create(client, {"all": []}, name="mail")
    trigger(app, mail)
    work_runs(app)
    assert report(app, mail)["dispatched_count"] == 3
    assert sent_to(app) == {"L1": 1, "L2": 1, "L4": 1}


def _waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        )


@pytest.fixture
def postgres_app(postgres_url: str) -> Flask:
    """The race below needs PostgreSQL: SQLite lets one writer at a time."""
    app = create_app(RetargetingConfig(database_url=postgres_url, tokens=TOKENS, run_chunk=50))
    init_db(app.extensions[RETARGETING_STATE].engine)
    return app


def test_two_schedulers_sending_at_once_keep_the_cap(postgres_app: Flask) -> None:
    """Regression (review finding 6): two scheduler processes working two campaigns' runs
    at once each counted the other's messages as not sent yet, and both sent."""
    app = postgres_app
    seed(app)  # L1, L2, L4 reachable by e-mail, all consenting
    client = app.test_client()
    runs = [trigger(app, create(client, {"all": []}, name=n))["run_id"] for n in ("one", "two")]
    state = state_of(app)
    limits, now = Limits(per_day=1, per_week=3, chunk=50), utcnow()
    worked, release, second_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def scheduler(run_id: int, hold: bool) -> None:
        try:
            with state.sessions.begin() as session:
                run = session.get(CampaignRun, run_id, with_for_update=True)
                assert run is not None
                work(session, run, limits, now)
                if hold:  # the first chunk is sent, not committed yet
                    worked.set()
                    assert release.wait(30)
        except BaseException as exc:
            errors.append(exc)
        finally:
            worked.set()
            if not hold:
                second_done.set()

    first = threading.Thread(target=scheduler, args=(runs[0], True))
    first.start()
    assert worked.wait(30)
    second = threading.Thread(target=scheduler, args=(runs[1], False))
    second.start()
    # The second waits for the first's people (or, unlocked, went ahead and finished).
    wait_for(
        lambda: second_done.is_set() or _waiting_on_a_lock(state.engine),
        message="the second scheduler waiting or done",
    )
    release.set()
    first.join(30)
    second.join(30)
    assert not errors, errors
    assert sent_to(app) == {"L1": 1, "L2": 1, "L4": 1}
    assert report(app, {"id": 2})["skipped"] == {"frequency_cap": 3, "no_address": 1}


def test_the_ledger_names_what_each_dispatch_carries(app: Flask) -> None:
    """Regression (review finding 10): the ledger listed a fixed set of fields per channel
    — not the last name and company an SMS's template put in it."""
    feed(
        app,
        stage(
            "A",
            "lead",
            email="a@x.co",
            user="a",
            traits={"phone": "+14155550132", "lastName": "Doe", "company": "Acme"},
        ),
        stage("B", "lead", email="b@x.co"),  # no user id
        consent("a", marketing=True),
        (
            TRAFFIC,
            new_event(
                "identify",
                {"traits": {"consent": {"marketing": True}}},
                source="web",
                anonymous_id="b-browser",
            ),
        ),
        stage("B", "lead", email="b@x.co", anon=("b-browser",)),
    )
    client = app.test_client()
    sms = {"subject": "s", "body": "{{ last_name }} at {{ company }}"}
    campaigns = [
        create(client, {"all": []}, name="sms", channel="sms", kind="transactional", message=sms),
        create(client, {"all": []}, name="mail", kind="transactional"),
        create(
            client,
            {"all": []},
            name="hook",
            channel="webhook",
            kind="transactional",
            message={"subject": "{% if tier %}VIP{% endif %}", "body": "{{ first_name }}"},
        ),
    ]
    for campaign in campaigns:
        trigger(app, campaign)
        work_runs(app)
    with state_of(app).sessions() as session:
        ledger = {
            (r.contact_id, r.destination): r.fields
            for r in session.scalars(select(SharingRecord).order_by(SharingRecord.id))
        }
    assert ledger == {
        ("A", "sms"): ["contact_id", "phone", "company", "last_name", "user_id"],
        ("A", "email"): ["contact_id", "email", "user_id"],
        ("B", "email"): ["contact_id", "email"],
        ("A", "webhook"): ["contact_id", "first_name", "tier", "user_id"],
        ("B", "webhook"): ["contact_id", "first_name", "tier"],
    }
    [text_message] = [e for e in published(app, DISPATCH) if e.payload["channel"] == "sms"]
    assert text_message.payload["message"]["body"] == "Doe at Acme"
    assert text_message.user_id == "a"  # the user id it carries is in the ledger


def test_email_bodies_escape_the_persons_fields(app: Flask) -> None:
    """Regression (review finding 13): a name such as ``<a href=…>`` went into an e-mail's
    HTML body as markup."""
    feed(
        app,
        stage(
            "A",
            "lead",
            email="a@x.co",
            user="a",
            traits={"firstName": "<a href='x'>Ann</a>", "phone": "+14155550132"},
        ),
        consent("a", marketing=True),
    )
    client = app.test_client()
    message = {"subject": "Hi {{ first_name }}", "body": "<p>Hi {{ first_name }} & co</p>"}
    for channel in ("email", "sms"):
        campaign = create(
            client,
            {"all": []},
            name=channel,
            channel=channel,
            kind="transactional",
            message=message,
        )
        trigger(app, campaign)
        work_runs(app)
    by_channel = {e.payload["channel"]: e.payload["message"] for e in published(app, DISPATCH)}
    assert by_channel["email"] == {
        "subject": "Hi <a href='x'>Ann</a>",  # a subject is no HTML
        "body": "<p>Hi &lt;a href=&#39;x&#39;&gt;Ann&lt;/a&gt; & co</p>",
    }
    assert by_channel["sms"]["body"] == "<p>Hi <a href='x'>Ann</a> & co</p>"
