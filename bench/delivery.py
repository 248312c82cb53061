"""Campaign e-mail delivery: the dispatcher handing queued e-mails to the local SMTP
server, against that server's own acceptance rate, measured in the same run.

* ``smtp_sink_acceptance`` (baseline): a plain :mod:`smtplib` client on one reused
  connection sending ``messages`` pre-built e-mails (built by
  :func:`~services.member_retargeting.delivery.message.build`, so the same bytes) to a
  fresh :class:`~deploy.mailsink.MailSink` (aiosmtpd, in this process); messages/s.
* ``delivery_email_sqlite`` / ``_postgres``: the real
  :class:`~services.member_retargeting.delivery.dispatcher.Dispatcher` working a fresh
  store of ``messages`` queued e-mail deliveries (inserted directly, as its consumer
  queues them) into a fresh sink: claims, message building, the per-message commit of
  ``sent`` with its status event before the final dot. Messages/s from the first claim
  until the sink has accepted all of them. PostgreSQL only when a server is reachable.

Each run is bounded (``max_seconds``; a run cut short counts what was accepted).
"""

from __future__ import annotations

import email.policy
import logging
import smtplib
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from deploy.mailsink import MailSink
from services.member_retargeting.app import init_db
from services.member_retargeting.config import DeliveryConfig, RetargetingConfig
from services.member_retargeting.delivery import dispatcher as dispatcher_module
from services.member_retargeting.delivery import message as messages
from services.member_retargeting.delivery.dispatcher import Dispatcher
from services.member_retargeting.delivery.links import Links
from services.member_retargeting.delivery.smtp import SmtpSettings
from services.member_retargeting.models import Delivery
from shared.db import make_engine, make_sessionmaker, utcnow

MESSAGES = 2_000
MAX_SECONDS = 60.0
BASELINE = "smtp_sink_acceptance"
SUBJECT = "Ada, your cart is waiting"
BODY = (
    "<p>Hi Ada,</p><p>You left <b>3 items</b> in your cart. Members save 10% this week on "
    'everything in it: <a href="https://shop.example.com/cart">finish your order</a>.</p>'
    "<p>See you soon,<br>The Funnel shop</p>"
)

Row = tuple[str, float, str, str, float]


def payload(i: int, campaign_id: int = 1, run_id: int = 1) -> dict[str, Any]:
    """A ``campaign.dispatch`` payload as a campaign run writes it (rendered message)."""
    return {
        "campaign_id": campaign_id,
        "run_id": run_id,
        "contact_id": f"P{i:07}",
        "email": f"p{i}@example.com",
        "channel": "email",
        "kind": "marketing",
        "message": {"subject": SUBJECT, "body": BODY},
        "tracking": False,
    }


def config(url: str, sink: MailSink) -> RetargetingConfig:
    return RetargetingConfig(
        database_url=url,
        delivery=DeliveryConfig(
            smtp=SmtpSettings(host=sink.host, port=sink.port),
            rates={"email": 1e9},  # no pacing: as fast as it goes
            poll_seconds=0.01,
        ),
    )


def sink_acceptance(count: int = MESSAGES, max_seconds: float = MAX_SECONDS) -> float:
    """messages/s of smtplib on one connection sending ``count`` pre-built e-mails."""
    sink = MailSink(port=0, keep=count).start()
    try:
        settings = config("sqlite://", sink)
        d = settings.delivery
        sender = messages.Sender(d.sender_address, d.sender_name)
        links = Links(settings.link_keys, d.public_url)
        built = []
        for i in range(count):
            p = payload(i)
            mail = messages.build(uuid.uuid4().hex, p, sender, links)
            built.append((str(p["email"]), mail.as_bytes(policy=email.policy.SMTP)))
        smtp = smtplib.SMTP(sink.host, sink.port, timeout=30)
        smtp.ehlo()
        started = time.perf_counter()
        deadline = started + max_seconds
        for recipient, data in built:
            smtp.sendmail(sender.address, [recipient], data)
            if time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - started
        smtp.quit()
        return sink.accepted / elapsed
    finally:
        sink.stop()


def queue(url: str, count: int) -> None:
    """A fresh store at ``url`` with ``count`` queued e-mail deliveries, due now."""
    engine = make_engine(url)
    init_db(engine)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(Delivery),
            [
                {
                    "dispatch_id": uuid.uuid4().hex,
                    "channel": "email",
                    "campaign_id": 1,
                    "run_id": 1,
                    "contact_id": f"P{i:07}",
                    "payload": payload(i),
                    "status": "queued",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for i in range(count)
            ],
        )
    engine.dispose()


def dispatcher_rate(url: str, count: int = MESSAGES, max_seconds: float = MAX_SECONDS) -> float:
    """messages/s of the dispatcher working ``count`` queued e-mails at ``url`` (a fresh
    database) into a fresh sink: from the first claim until all are accepted."""
    queue(url, count)
    sink = MailSink(port=0, keep=count).start()
    engine = make_engine(url)
    # Only e-mail is queued: the warning that webhook channels wait (none configured)
    # would be printed by every run into the bench's table.
    logging.getLogger(dispatcher_module.__name__).setLevel(logging.ERROR)
    dispatcher = Dispatcher(make_sessionmaker(engine), config(url, sink))
    # The bound: a stop mid-pass finishes the message in hand and gives the rest back.
    timer = threading.Timer(max_seconds, dispatcher.request_stop)
    try:
        started = time.perf_counter()
        timer.start()
        while sink.accepted < count and not dispatcher.stopping:
            dispatcher.run_once()
        elapsed = time.perf_counter() - started
        accepted = sink.accepted
        dispatcher.mailer.close()
        with dispatcher.sessions() as session:
            sent = session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == "sent")
            )
        if sent != accepted:
            raise RuntimeError(f"{accepted} accepted by the sink but {sent} marked sent")
        if accepted < count:
            print(f"delivery: cut at {max_seconds:.0f}s with {accepted}/{count} accepted")
        return accepted / elapsed
    finally:
        timer.cancel()
        dispatcher.mailer.close()
        sink.stop()
        engine.dispose()


def rows(
    repeats: int,
    work: Path,
    postgres: AbstractContextManager[Iterator[str] | None],
    count: int = MESSAGES,
) -> list[Row]:
    """Medians of ``repeats`` runs: the sink's acceptance, the dispatcher on SQLite (WAL,
    as ``make_engine`` sets it) and, when ``postgres`` yields database URLs, on
    PostgreSQL."""

    def median(run: Callable[[], float]) -> float:
        return statistics.median(run() for _ in range(repeats))

    base = median(lambda: sink_acceptance(count))
    sqlite = median(lambda: dispatcher_rate(f"sqlite:///{work / uuid.uuid4().hex}.db", count))
    result: list[Row] = [("delivery_email_sqlite", sqlite, "msg/s", BASELINE, base)]
    with postgres as urls:
        if urls is None:
            print("PostgreSQL unreachable: delivery_email_postgres not measured")
        else:
            pg = median(lambda: dispatcher_rate(next(urls), count))
            result.append(("delivery_email_postgres", pg, "msg/s", BASELINE, base))
    return result
