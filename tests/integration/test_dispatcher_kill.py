"""The dispatcher under kill -9, on PostgreSQL and the real broker: a campaign to 1,000
people is being sent to a real SMTP server when the dispatcher process is killed —
twice — and restarted.

What e-mail allows: SMTP has no idempotency key, so a sender killed between marking a
message sent and the server taking it either loses it or sends it again on restart. The
dispatcher chose never twice: it commits ``sent`` right before the final dot. So:

* the first kill lands while the server holds a message it has not yet acknowledged
  (the sender is waiting for the 250): that person gets it once, never again;
* the second lands wherever it falls; it may fall between the pre-dot commit and the
  dot, and then that one message (at most one per kill) is lost, recorded as sent;
* nobody gets it twice, and everyone else gets it exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from deploy.mailsink import Caught, MailSink
from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.delivery.dispatcher import QUEUED, SENDING
from services.member_retargeting.delivery.status import SENT
from services.member_retargeting.models import Delivery
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.config import KafkaConfig
from tests.conftest import wait_for
from tests.integration.delivery_helpers import email_of, populate, relay, run_campaign
from tests.unit.member_retargeting.conftest import TOKENS

ROOT = Path(__file__).parents[2]
PEOPLE = 1000
KILLED_HOLDING = 250  # the server's 250th message: the dispatcher is killed before its 250
KILLED_ANYWHERE = 600
# The first start joins the dispatcher's consumer group (the embedded broker forms one
# in 7 to 55 s); sending needs no group, so the restarts send at once.
pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(600)]


class Dispatchers:
    """The dispatcher processes the test starts; the newest is the one running."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log.open("ab")
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.member_retargeting", "dispatch"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.started.append(process)
        return process

    def kill_newest(self) -> None:
        os.kill(self.started[-1].pid, signal.SIGKILL)

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def holder() -> dict[str, Dispatchers]:
    return {}


@pytest.fixture
def sink(holder: dict[str, Dispatchers]) -> Iterator[MailSink]:
    def on_message(caught: Caught) -> None:
        time.sleep(0.003)  # a server that takes a moment, so the kills land mid-campaign
        if caught.number == KILLED_HOLDING:
            holder["dispatchers"].kill_newest()  # before this message's 250 goes back

    sink = MailSink(port=0, keep=5000, on_message=on_message).start()
    yield sink
    sink.stop()


def test_kill_9_mid_campaign_never_sends_twice_and_loses_at_most_the_message_in_hand(
    postgres_url: str,
    own_broker: KafkaConfig,
    sink: MailSink,
    holder: dict[str, Dispatchers],
    tmp_path: Path,
) -> None:
    app = create_app(
        RetargetingConfig(database_url=postgres_url, tokens=TOKENS, kafka=own_broker, run_chunk=500)
    )
    engine = app.extensions[RETARGETING_STATE].engine
    init_db(engine)
    populate(app, PEOPLE)
    run_campaign(app, "everyone", "<p>Hello {{ first_name }}</p>")
    assert relay(app, own_broker) == PEOPLE

    dispatchers = holder["dispatchers"] = Dispatchers(
        {
            **os.environ,
            "MEMBER_RETARGETING_DATABASE_URL": postgres_url,
            "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers,
            "RETARGETING_SMTP_HOST": sink.host,
            "RETARGETING_SMTP_PORT": str(sink.port),
            "RETARGETING_RATES": "email=100000",
            "RETARGETING_DELIVERY_LEASE_SECONDS": "2",
            "RETARGETING_DELIVERY_POLL_SECONDS": "0.05",
        },
        tmp_path / "dispatcher.log",
    )

    def statuses() -> Counter[str]:
        with engine.connect() as conn:
            return Counter(conn.scalars(select(Delivery.status)))

    def settled() -> bool:
        now = statuses()
        return sum(now.values()) == PEOPLE and now[QUEUED] + now[SENDING] == 0

    try:
        first = dispatchers.start()
        assert first.wait(timeout=180) == -signal.SIGKILL  # by the sink, at its 250th
        second = dispatchers.start()
        wait_for(lambda: sink.accepted >= KILLED_ANYWHERE, timeout=90, message="600 sent")
        dispatchers.kill_newest()
        second.wait(timeout=10)
        assert sink.accepted < PEOPLE, "killed mid-campaign"
        dispatchers.start()
        wait_for(settled, timeout=180, message="every delivery finished")
        time.sleep(3)  # the last message's final dot goes after its commit
    finally:
        dispatchers.stop()

    per_person = Counter(r for c in sink.messages() for r in c.recipients)
    held = next(c for c in sink.messages() if c.number == KILLED_HOLDING).recipients
    assert [per_person[r] for r in held] == [1]
    assert {address: n for address, n in per_person.items() if n > 1} == {}
    assert statuses() == {SENT: PEOPLE}
    lost = {email_of(i) for i in range(PEOPLE)} - set(per_person)
    assert len(lost) <= 1, lost  # only the kill that landed anywhere can lose one
