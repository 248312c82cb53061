"""member-retargeting's handlers through the real runner batch, on SQLite and PostgreSQL:
contacts from lead events: the newest snapshot wins, merges and splits followed."""

from __future__ import annotations

from decimal import Decimal

from flask import Flask
from sqlalchemy import select

from services.member_retargeting.model.suppression import PHONE, suppression_key
from services.member_retargeting.models import Contact, Order
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.events import new_event
from shared.topics import LEADS
from tests.unit.member_retargeting.conftest import (
    create,
    feed,
    order,
    snapshot,
    stage,
)


def test_merged_contacts_are_not_targeted_twice(app: Flask) -> None:
    feed(app, stage("L1", "mql", email="a@x.co"), stage("L2", "mql", email="a@x.co"))
    feed(
        app,
        (
            LEADS,
            new_event(
                "lead.merged",
                {
                    "lead": snapshot("L1", "mql", email="a@x.co"),
                    "merged_lead_id": "L2",
                    "reason": "same person",
                },
                source="lead-scoring",
            ),
        ),
    )
    assert create(app.test_client(), {"stages": ["mql"]})["current_audience"] == 1


def test_an_older_snapshot_never_overwrites_a_newer_one(app: Flask) -> None:
    """Lead events of one lead can arrive out of order (an API action and the consumer
    publish through the same outbox): the contact keeps the newest picture."""
    feed(
        app,
        stage("L1", "sql", email="new@x.co", version=7),
        stage("L1", "mql", email="old@x.co", version=6),
    )
    feed(app, stage("L1", "lead", email="unversioned@x.co"))  # an older producer: applied
    feed(app, stage("L1", "customer", email="newest@x.co", version=8))
    with app.extensions[RETARGETING_STATE].sessions() as session:
        contact = session.get(Contact, "L1")
        assert contact is not None
        assert (contact.stage, contact.email, contact.lead_version) == (
            "customer",
            "newest@x.co",
            8,
        )


def test_an_order_amount_beyond_the_column_is_skipped_not_a_stop(app: Flask) -> None:
    feed(app, order("u1", 10**13), order("u1", "1e999999"), order("u1", "12.5"))
    with app.extensions[RETARGETING_STATE].sessions() as session:
        assert [o.revenue for o in session.scalars(select(Order))] == [Decimal("12.50")]


def test_a_country_written_out_gives_a_national_phone_its_region(app: Flask) -> None:
    """Regression (review finding 3): only a two-letter country was a phone's region, so
    "(415) 555-0132" in the "United States" had no suppression key."""
    feed(
        app,
        stage("A", "lead", traits={"phone": "(415) 555-0132", "country": "United States"}),
        stage("B", "lead", traits={"phone": "(415) 555-0132", "country": "us"}),
        stage("C", "lead", traits={"phone": "+1 415-555-0132"}),
        stage("D", "lead", traits={"phone": "(415) 555-0132"}),  # no country: no key
    )
    expected = suppression_key(PHONE, "+14155550132")
    with app.extensions[RETARGETING_STATE].sessions() as session:
        keys = {c.lead_id: c.phone_key for c in session.scalars(select(Contact))}
    assert keys == {"A": expected, "B": expected, "C": expected, "D": None}
