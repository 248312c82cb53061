"""The dispatcher under kill -9, on PostgreSQL and the real broker: a campaign to 1,000
people is being sent to a real SMTP server when the dispatcher process is killed —
twice — and restarted. Every person receives the e-mail exactly once: none twice, none
missed."""

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

from deploy.mailsink import Caught, MailSink
from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.config import KafkaConfig
from tests.conftest import wait_for
from tests.integration.delivery_helpers import email_of, populate, relay, run_campaign
from tests.unit.member_retargeting.conftest import TOKENS

ROOT = Path(__file__).parents[2]
PEOPLE = 1000
pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def slow_a_little(_: Caught) -> None:
    time.sleep(0.003)  # a server that takes a moment, so the kills land mid-campaign


@pytest.fixture
def sink() -> Iterator[MailSink]:
    sink = MailSink(port=0, keep=5000, on_message=slow_a_little).start()
    yield sink
    sink.stop()


def test_kill_9_mid_campaign_sends_everyone_exactly_once(
    postgres_url: str, own_broker: KafkaConfig, sink: MailSink, tmp_path: Path
) -> None:
    app = create_app(
        RetargetingConfig(database_url=postgres_url, tokens=TOKENS, kafka=own_broker, run_chunk=500)
    )
    init_db(app.extensions[RETARGETING_STATE].engine)
    populate(app, PEOPLE)
    run_campaign(app, "everyone", "<p>Hello {{ first_name }}</p>")
    assert relay(app, own_broker) == PEOPLE

    env = {
        **os.environ,
        "MEMBER_RETARGETING_DATABASE_URL": postgres_url,
        "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers,
        "RETARGETING_SMTP_HOST": sink.host,
        "RETARGETING_SMTP_PORT": str(sink.port),
        "RETARGETING_RATES": "email=100000",
        "RETARGETING_DELIVERY_LEASE_SECONDS": "2",
        "RETARGETING_DELIVERY_POLL_SECONDS": "0.05",
    }
    log = (tmp_path / "dispatcher.log").open("ab")
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.member_retargeting", "dispatch"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        processes.append(process)
        return process

    try:
        for kill_at in (250, 600):
            process = start()
            wait_for(
                lambda at=kill_at: sink.accepted >= at,  # type: ignore[misc]
                timeout=120,
                message=f"{kill_at} sent",
            )
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            assert sink.accepted < PEOPLE, "killed mid-campaign"
        start()
        wait_for(
            lambda: len({r for c in sink.messages() for r in c.recipients}) >= PEOPLE,
            # Three starts, each joining the dispatcher's group after a killed member's
            # session ran out: the embedded broker forms a group in 7 to 55 s.
            timeout=300,
            message="everyone reached after the restarts",
        )
        time.sleep(4)  # past the claim lease: a second copy would have gone by now
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    per_person = Counter(r for c in sink.messages() for r in c.recipients)
    assert set(per_person) == {email_of(i) for i in range(PEOPLE)}
    twice = {address: n for address, n in per_person.items() if n > 1}
    assert twice == {}
    assert sink.accepted == PEOPLE
