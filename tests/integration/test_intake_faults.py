"""Intake never loses or doubles an event, under faults, against real processes.

* a relay that dies between Kafka's ack and stamping the outbox does not re-send;
* ≥ 5,000 events through gunicorn while the broker is frozen (SIGSTOP: to every client it
  is down; Tansu keeps its memory), the relay is kill -9'd, a gunicorn worker is kill -9'd,
  and a slice is resent with the same messageIds: every event that got a 2xx appears
  exactly once on the traffic topic.

Tansu here stores in memory only, so a broker *restart* empties it; the restart case is
covered at the relay level in test_intake_delivery.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, update

from services.traffic_intake.app import create_app, init_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.models import outbox
from services.traffic_intake.state import STATE as INTAKE_STATE
from shared.broker import EmbeddedBroker, free_port, port_open
from shared.config import KafkaConfig
from shared.db import make_engine
from shared.kafka import ensure_topics, make_producer, make_tail_reader
from shared.outbox import OutboxRelay
from shared.topics import TRAFFIC
from tests.conftest import wait_for
from tests.helpers import TopicReader, message_ids
from tests.unit.traffic_intake.conftest import basic

ROOT = Path(__file__).parents[2]
WRITE_KEY = "wk-faults"


def test_relay_killed_between_ack_and_stamp_does_not_resend(
    kafka_config: KafkaConfig, tmp_path: Path
) -> None:
    app = create_app(
        IntakeConfig(database_url=f"sqlite:///{tmp_path / 'i.db'}", write_keys=("wk-test",))
    )
    engine = app.extensions[INTAKE_STATE].engine
    init_db(engine)
    ids = [f"crash-{uuid.uuid4().hex}" for _ in range(50)]
    client = app.test_client()
    response = client.post(
        "/v1/batch",
        headers=basic(),
        json={
            "batch": [
                {"type": "track", "anonymousId": "a", "event": "E", "messageId": m} for m in ids
            ]
        },
    )
    assert response.json["accepted"] == 50

    def relay() -> OutboxRelay:
        return OutboxRelay(
            engine,
            outbox,
            lambda: make_producer(kafka_config, "t"),
            reader_factory=lambda: make_tail_reader(kafka_config),
        )

    first = relay()
    assert first.publish_pending() == 50
    first.close()
    with engine.begin() as conn:  # the crash: acked by Kafka, never stamped
        conn.execute(update(outbox).values(sent_at=None))

    second = relay()
    assert second.publish_pending() == 0  # reconciled, nothing re-sent
    second.close()
    with engine.connect() as conn:
        assert (
            conn.scalar(select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None)))
            == 0
        )
    reader = TopicReader(kafka_config, TRAFFIC)
    try:
        values = reader.wait(lambda vs: set(message_ids(vs)) >= set(ids))
        time.sleep(1)
        values = reader.wait(lambda vs: True)
    finally:
        reader.close()
    counts = Counter(m for m in message_ids(values) if m in ids)
    assert set(counts.values()) == {1} and len(counts) == 50


@dataclass
class Stack:
    broker: EmbeddedBroker
    kafka: KafkaConfig
    db_url: str
    port: int
    env: dict[str, str]
    log_dir: Path
    gunicorn: subprocess.Popen[bytes] | None = None
    relay: subprocess.Popen[bytes] | None = None
    logs: list = field(default_factory=list)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = (self.log_dir / f"{name}.log").open("ab")
        self.logs.append(out)
        return subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def start_relay(self) -> None:
        self.relay = self._spawn(
            "relay", [sys.executable, "-m", "services.traffic_intake", "relay"]
        )

    def start_gunicorn(self) -> None:
        self.gunicorn = self._spawn(
            "gunicorn",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(ROOT / "deploy/gunicorn.conf.py"),
                "-b",
                f"127.0.0.1:{self.port}",
                "services.traffic_intake.wsgi:app",
            ],
        )
        wait_for(lambda: port_open("127.0.0.1", self.port), message="gunicorn listening")

    def unsent(self) -> int:
        with make_engine(self.db_url).connect() as conn:
            return (
                conn.scalar(
                    select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
                )
                or 0
            )

    def stop(self) -> None:
        for process in (self.relay, self.gunicorn):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        self.broker.stop()
        for f in self.logs:
            f.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    broker = EmbeddedBroker(free_port(), tmp_path / "broker.log").start()
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
    ensure_topics(kafka)
    db_url = f"sqlite:///{tmp_path / 'intake.db'}"
    init_db(make_engine(db_url))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TRAFFIC_INTAKE_DATABASE_URL": db_url,
        "FUNNEL_WRITE_KEY": WRITE_KEY,
        "GUNICORN_WORKERS": "2",
    }
    s = Stack(broker, kafka, db_url, free_port(), env, tmp_path)
    s.start_gunicorn()
    s.start_relay()
    try:
        yield s
    finally:
        s.stop()


class Sender:
    """Posts events until each got a 2xx, retrying the same messageIds on any failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted: set[str] = set()
        self.duplicates_reported = 0
        self.session = requests.Session()
        self.session.auth = (WRITE_KEY, "")

    def send_batch(self, ids: list[str], deadline: float) -> None:
        body = {
            "batch": [
                {
                    "type": "track",
                    "anonymousId": f"anon-{i % 97}",
                    "event": "Viewed",
                    "messageId": m,
                    "properties": {"n": i},
                }
                for i, m in enumerate(ids)
            ]
        }
        while time.monotonic() < deadline:
            try:
                response = self.session.post(f"{self.url}/v1/batch", json=body, timeout=10)
            except requests.RequestException:
                time.sleep(0.1)
                continue
            if response.status_code == 200:
                self.accepted.update(ids)
                self.duplicates_reported += response.json()["duplicates"]
                return
            assert response.status_code in (429, 503), response.text  # retryable only
            time.sleep(float(response.headers.get("Retry-After", "0.2")))
        raise AssertionError("could not deliver a batch before the deadline")


def _worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_every_accepted_event_is_on_the_topic_exactly_once_under_faults(stack: Stack) -> None:
    deadline = time.monotonic() + 240
    ids = [f"fault-{i}-{uuid.uuid4().hex[:8]}" for i in range(6000)]
    batches = [ids[i : i + 25] for i in range(0, len(ids), 25)]
    sender = Sender(f"http://127.0.0.1:{stack.port}")
    faults: list[str] = []
    accepted_while_down: list[int] = []
    assert stack.gunicorn is not None

    def inject() -> None:
        wait_for(lambda: len(sender.accepted) >= 1200, timeout=120, message="1200 accepted")
        os.kill(stack.broker._process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
        frozen_at = len(sender.accepted)
        time.sleep(4)
        accepted_while_down.append(len(sender.accepted) - frozen_at)
        os.kill(stack.broker._process.pid, signal.SIGCONT)  # type: ignore[union-attr]
        faults.append("broker frozen")
        wait_for(lambda: len(sender.accepted) >= 2500, timeout=120, message="2500 accepted")
        assert stack.relay is not None
        stack.relay.kill()
        stack.relay.wait()
        faults.append("relay killed")
        time.sleep(0.5)
        stack.start_relay()
        wait_for(lambda: len(sender.accepted) >= 3800, timeout=120, message="3800 accepted")
        workers = _worker_pids(stack.gunicorn.pid)  # type: ignore[union-attr]
        os.kill(workers[0], signal.SIGKILL)
        faults.append("worker killed")

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    for batch in batches:
        sender.send_batch(batch, deadline)
    injector.join(timeout=60)
    assert faults == ["broker frozen", "relay killed", "worker killed"]
    assert accepted_while_down[0] > 100  # intake kept answering 2xx while Kafka was down

    before = sender.duplicates_reported
    for batch in batches[:20]:  # resend a slice: acknowledged, not stored again
        sender.send_batch(batch, deadline)
    assert sender.duplicates_reported - before == 500
    assert sender.accepted == set(ids)

    wait_for(lambda: stack.unsent() == 0, timeout=120, message="outbox drained")
    reader = TopicReader(stack.kafka, TRAFFIC)
    try:
        reader.wait(lambda vs: set(message_ids(vs)) >= sender.accepted, timeout=120)
        time.sleep(2)  # keep reading a little: duplicates would arrive behind the originals
        values = reader.wait(lambda vs: True)
    finally:
        reader.close()
    counts = Counter(message_ids(values))
    doubled = {k: c for k, c in counts.items() if c > 1}
    assert doubled == {}
    assert set(counts) == sender.accepted
    assert len(values) == len(ids) >= 5000
