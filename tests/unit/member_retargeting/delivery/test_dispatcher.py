"""The dispatcher's claims on both databases: what a sender killed mid-claim costs the
dispatches it held."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import insert, select, update
from sqlalchemy.exc import OperationalError

from services.member_retargeting.delivery.dispatcher import QUEUED, SENDING, Dispatcher
from services.member_retargeting.delivery.smtp import Attempt, Result
from services.member_retargeting.delivery.status import SENT
from services.member_retargeting.models import Delivery
from shared.db import utcnow
from tests.unit.member_retargeting.conftest import state_of

IDS = ["d1", "d2", "d3", "d4", "d5"]


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def queue(app: Flask, due: datetime) -> None:
    """Five e-mail deliveries due at the same moment (their order is by id)."""
    with state_of(app).sessions.begin() as session:
        session.execute(
            insert(Delivery),
            [
                {
                    "dispatch_id": dispatch_id,
                    "channel": "email",
                    "campaign_id": 1,
                    "run_id": 1,
                    "contact_id": f"P{n}",
                    "payload": {"email": f"p{n}@example.com"},
                    "status": QUEUED,
                    "next_attempt_at": due,
                }
                for n, dispatch_id in enumerate(IDS)
            ],
        )


def rows(app: Flask) -> dict[str, tuple[str, int]]:
    with state_of(app).sessions() as session:
        return {d.dispatch_id: (d.status, d.attempts) for d in session.scalars(select(Delivery))}


def died_holding(app: Flask, dispatch_id: str, token: str) -> None:
    """The sender sent everything before ``dispatch_id`` and was killed holding it."""
    with state_of(app).sessions.begin() as session:
        for done in IDS[: IDS.index(dispatch_id)]:
            session.execute(
                update(Delivery)
                .where(Delivery.dispatch_id == done, Delivery.claim == token)
                .values(status=SENT, finished_at=utcnow())
            )


def test_a_claim_lists_its_deliveries_in_sending_order_and_charges_each_an_attempt(
    app: Flask,
) -> None:
    clock = Clock()
    queue(app, clock.now)
    dispatcher = Dispatcher(state_of(app).sessions, state_of(app).config, clock=clock)
    _, owned = dispatcher.claim("email", 10)
    assert owned == IDS
    assert rows(app) == {i: (SENDING, 1) for i in IDS}
    _, again = dispatcher.claim("email", 10)
    assert again == []  # held, and the lease has not run out


def test_only_the_delivery_in_hand_pays_for_a_killed_sender(app: Flask) -> None:
    clock = Clock()
    queue(app, clock.now)
    sessions, config = state_of(app).sessions, state_of(app).config
    lease = timedelta(seconds=config.delivery.lease_seconds + 1)
    token, _ = Dispatcher(sessions, config, clock=clock).claim("email", 10)
    died_holding(app, "d3", token)

    clock.now += lease
    _, owned = Dispatcher(sessions, config, clock=clock).claim("email", 10)
    assert owned == ["d3", "d4", "d5"]
    assert rows(app) == {
        "d1": (SENT, 1),
        "d2": (SENT, 1),
        "d3": (SENDING, 2),  # the crash, and this claim
        "d4": (SENDING, 1),  # never started: the first claim's charge is this one's
        "d5": (SENDING, 1),
    }

    # A dispatch that kills its sender every time runs out of attempts alone; the ones
    # queued behind it are not worn out by its crashes.
    for _ in range(config.delivery.max_attempts):
        clock.now += lease
        _, owned = Dispatcher(sessions, config, clock=clock).claim("email", 10)
        assert owned == ["d3", "d4", "d5"]
    attempts = {i: n for i, (_, n) in rows(app).items()}
    assert attempts["d3"] == config.delivery.max_attempts + 2
    assert attempts["d4"] == attempts["d5"] == 1


def test_a_dead_claim_taken_back_in_parts_never_charges_too_little(app: Flask) -> None:
    clock = Clock()
    queue(app, clock.now)
    sessions, config = state_of(app).sessions, state_of(app).config
    Dispatcher(sessions, config, clock=clock).claim("email", 10)  # then killed at once

    clock.now += timedelta(seconds=config.delivery.lease_seconds + 1)
    dispatcher = Dispatcher(sessions, config, clock=clock)
    _, first = dispatcher.claim("email", 2)
    _, second = dispatcher.claim("email", 10)
    assert (first, second) == (["d1", "d2"], ["d3", "d4", "d5"])
    attempts = {i: n for i, (_, n) in rows(app).items()}
    assert attempts == {"d1": 2, "d2": 1, "d3": 2, "d4": 1, "d5": 1}


def test_a_delivery_that_raises_stays_claimed_and_the_rest_go_back(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send that fails the loop (here a database error on d2) is treated as a crash on
    that delivery: it alone stays claimed and pays an attempt when taken again; the rows
    behind it go back unpaid. d1 was abandoned before its dot (its pre-dot commit could
    not be made): it is back in the queue before the next send starts."""
    clock = Clock()
    queue(app, clock.now)
    sessions, config = state_of(app).sessions, state_of(app).config
    dispatcher = Dispatcher(sessions, config, clock=clock)
    seen: dict[str, tuple[str, int]] = {}

    def send(sender: str, recipient: str, message: object, before_dot: object) -> Attempt:
        if recipient == "p0@example.com":
            return Attempt(Result.ABANDONED, "the pre-dot commit could not be made")
        seen.update(rows(app))
        raise OperationalError("INSERT", {}, Exception("the database went away"))

    monkeypatch.setattr(dispatcher.mailer, "send", send)
    with pytest.raises(OperationalError):
        dispatcher.run_once()
    assert seen["d1"] == (QUEUED, 0)  # given back before d2 was sent
    assert rows(app) == {
        "d1": (QUEUED, 0),
        "d2": (SENDING, 1),
        "d3": (QUEUED, 0),
        "d4": (QUEUED, 0),
        "d5": (QUEUED, 0),
    }
    clock.now += timedelta(seconds=config.delivery.lease_seconds + 1)
    _, owned = Dispatcher(sessions, config, clock=clock).claim("email", 10)
    assert owned == IDS
    assert rows(app)["d2"] == (SENDING, 2)
