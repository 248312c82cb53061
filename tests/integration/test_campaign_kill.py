"""A campaign run under kill -9, on PostgreSQL: the scheduler process is killed mid-run and
restarted. Every recipient is dispatched exactly once — once in ``dispatches``, once in
the outbox, once on the real broker after the relay — and a retried trigger with the same
idempotency key starts nothing new."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.models import (
    CampaignRun,
    Dispatch,
    outbox,
)
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.config import KafkaConfig, Tokens
from shared.kafka import make_producer
from shared.outbox import OutboxRelay
from shared.topics import DISPATCH
from tests.conftest import wait_for
from tests.helpers import TopicReader
from tests.integration.delivery_helpers import populate

ROOT = Path(__file__).parents[2]
PEOPLE, CHUNK = 3000, 50
MARKETING = {"Authorization": "Bearer marketing-t"}
pytestmark = pytest.mark.postgres


@pytest.fixture
def app(postgres_url: str) -> Flask:
    config = RetargetingConfig(
        database_url=postgres_url, tokens=Tokens("sales-t", "marketing-t", "admin-t")
    )
    app = create_app(config)
    init_db(app.extensions[RETARGETING_STATE].engine)
    return app


@pytest.fixture
def scheduler(postgres_url: str, tmp_path: Path) -> Iterator[object]:
    env = {
        **os.environ,
        "MEMBER_RETARGETING_DATABASE_URL": postgres_url,
        "RETARGETING_RUN_CHUNK": str(CHUNK),
        "RETARGETING_SCHEDULE_POLL_SECONDS": "0.05",
    }
    log = (tmp_path / "scheduler.log").open("ab")
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.member_retargeting", "schedule"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_kill_9_mid_run_dispatches_everyone_exactly_once(
    app: Flask, scheduler, own_broker: KafkaConfig
) -> None:
    populate(app, PEOPLE, no_consent=range(0, PEOPLE, 3))  # two in three consent
    client = app.test_client()
    campaign = client.post(
        "/campaigns",
        headers=MARKETING,
        json={
            "name": "win back",
            "segment": {"all": []},
            "message": {"subject": "Hi", "body": "Come back"},
        },
    ).json
    url = f"/campaigns/{campaign['id']}/runs"
    run = client.post(url, headers=MARKETING, json={"idempotency_key": "launch"}).json
    assert (run["created"], run["audience_size"]) == (True, PEOPLE)
    engine = app.extensions[RETARGETING_STATE].engine

    def handled() -> int:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Dispatch)) or 0

    process = scheduler()  # type: ignore[operator]
    wait_for(lambda: handled() >= 10 * CHUNK, timeout=60, message="the run under way")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    killed_at = handled()
    assert 0 < killed_at < PEOPLE, "killed mid-run"
    assert killed_at % CHUNK == 0  # a chunk commits whole or not at all

    # A retried trigger with the same key, while the run is half done: nothing new.
    retried = client.post(url, headers=MARKETING, json={"idempotency_key": "launch"}).json
    assert (retried["created"], retried["run_id"]) == (False, run["run_id"])

    scheduler()  # type: ignore[operator]
    wait_for(
        lambda: client.get(f"/runs/{run['run_id']}", headers=MARKETING).json["status"] == "done",
        timeout=120,
        message="the run finished after the restart",
    )
    with engine.connect() as conn:
        per_person = Counter(
            conn.scalars(select(Dispatch.contact_id).where(Dispatch.run_id == run["run_id"]))
        )
        queued = list(conn.execute(select(outbox.c.key).where(outbox.c.topic == DISPATCH)))
        runs = conn.scalar(select(func.count()).select_from(CampaignRun))
    assert len(per_person) == PEOPLE and set(per_person.values()) == {1}
    consenting = PEOPLE - len(range(0, PEOPLE, 3))
    assert len(queued) == consenting
    assert len({row.key for row in queued}) == consenting
    assert runs == 1

    # Relayed to the real broker: each consenting person's dispatch exactly once.
    producer = make_producer(own_broker, "test-relay")
    relay = OutboxRelay(engine, outbox, lambda: producer)
    try:
        assert relay.publish_pending() == consenting
    finally:
        relay.close()
    reader = TopicReader(own_broker, DISPATCH)
    try:
        values = reader.wait(lambda vs: len(vs) >= consenting, timeout=60)
    finally:
        reader.close()
    on_topic = Counter(v["payload"]["contact_id"] for v in values)
    assert len(on_topic) == consenting and set(on_topic.values()) == {1}
    assert not any(int(contact[1:]) % 3 == 0 for contact in on_topic)  # no consent: none
    report = client.get(f"/campaigns/{campaign['id']}/report", headers=MARKETING).json
    assert (report["dispatched_count"], report["published_count"]) == (consenting, consenting)
    assert report["skipped"] == {"no_consent": PEOPLE - consenting}
