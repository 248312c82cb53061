"""traffic-intake → outbox → relay → Kafka, with a real broker, a real HTTP server and the
real Segment SDK. Includes a broker outage: intake keeps accepting; delivery resumes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from kafka import KafkaProducer
from sqlalchemy import func, select

from services.traffic_intake.app import create_app, init_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.state import STATE as INTAKE_STATE
from shared.broker import EmbeddedBroker, free_port
from shared.config import KafkaConfig
from shared.kafka import ensure_topics, make_producer
from shared.outbox import OutboxRelay, RelayLoop
from shared.topics import TRAFFIC
from tests.conftest import wait_for
from tests.helpers import TopicReader, message_ids, serving
from tests.unit.traffic_intake.conftest import basic

WRITE_KEY = "wk-test"


@pytest.fixture
def intake(tmp_path: Path) -> Flask:
    app = create_app(
        IntakeConfig(database_url=f"sqlite:///{tmp_path / 'intake.db'}", write_keys=(WRITE_KEY,))
    )
    init_db(app.extensions[INTAKE_STATE].engine)
    return app


def unsent(app: Flask) -> int:
    state = app.extensions[INTAKE_STATE]
    with state.engine.connect() as conn:
        return (
            conn.scalar(
                select(func.count())
                .select_from(state.outbox)
                .where(state.outbox.c.sent_at.is_(None))
            )
            or 0
        )


@pytest.fixture
def server(intake: Flask) -> Iterator[str]:
    with serving(intake) as url:
        yield url


def run_relay(app: Flask, producer: KafkaProducer) -> tuple[RelayLoop, threading.Thread]:
    state = app.extensions[INTAKE_STATE]
    from datetime import timedelta

    loop = RelayLoop(
        OutboxRelay(state.engine, state.outbox, lambda: producer), dedupe_window=timedelta(days=7)
    )
    thread = threading.Thread(target=loop.run, kwargs={"max_seconds": 120}, daemon=True)
    thread.start()
    return loop, thread


def _sdk_client(sdk: str) -> Any:
    if sdk == "segment":
        from segment.analytics import Client

        return Client
    from rudderstack.analytics.client import Client as RudderClient  # gzips its bodies

    return RudderClient


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_real_sdks_every_call_type_reaches_the_traffic_topic(
    kafka_config: KafkaConfig, intake: Flask, server: str, sdk: str
) -> None:
    anon, user = f"a-{uuid.uuid4().hex}", f"u-{uuid.uuid4().hex}"
    errors: list[Exception] = []
    client = _sdk_client(sdk)(
        WRITE_KEY,
        host=server,
        sync_mode=True,
        max_retries=0,
        on_error=lambda e, _batch: errors.append(e),
    )
    client.page(anonymous_id=anon, name="Pricing", properties={"path": "/pricing"})
    client.screen(anonymous_id=anon, name="Plans")
    client.identify(user, {"email": f"{user}@example.com"}, anonymous_id=anon)
    client.track(user, "Form Submitted", {"form": "demo"})
    client.group(user, "acme", {"name": "Acme"})
    client.alias(anon, user)
    client.flush()
    assert errors == []
    assert unsent(intake) == 6

    reader = TopicReader(kafka_config, TRAFFIC)
    loop, thread = run_relay(intake, make_producer(kafka_config, "relay-test"))
    try:
        values = reader.wait(
            lambda vs: (
                sum(
                    1
                    for v in vs
                    if user in (v["user_id"], v["payload"].get("previous_id"))
                    or v["anonymous_id"] == anon
                )
                >= 6
            )
        )
    finally:
        loop.request_stop()
        thread.join(timeout=30)
        reader.close()
    mine = [v for v in values if v["anonymous_id"] == anon or v["user_id"] == user]
    assert sorted(v["type"] for v in mine) == sorted(
        ["page", "screen", "identify", "track", "group", "alias"]
    )
    track = next(v for v in mine if v["type"] == "track")
    assert track["payload"] == {"event": "Form Submitted", "properties": {"form": "demo"}}
    assert track["context"]["library"]["name"]  # the SDK's own context survives
    assert track["context"]["traffic_source"]["channel"] == "direct"
    assert unsent(intake) == 0


def test_intake_keeps_accepting_while_kafka_is_down_and_delivers_later(
    intake: Flask, tmp_path: Path
) -> None:
    port = free_port()
    broker = EmbeddedBroker(port, tmp_path / "broker.log").start()
    config = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
    ensure_topics(config)

    def producer() -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=config.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            max_block_ms=2000,
            request_timeout_ms=1500,
            delivery_timeout_ms=3000,
        )

    state = intake.extensions[INTAKE_STATE]
    relay = OutboxRelay(state.engine, state.outbox, producer, flush_timeout_s=5)
    client = intake.test_client()
    ids = [f"m-{uuid.uuid4().hex}" for _ in range(30)]
    try:
        for m in ids[:10]:
            assert (
                client.post(
                    "/v1/track",
                    json={"anonymousId": "a", "event": "E", "messageId": m},
                    headers=basic(),
                ).status_code
                == 200
            )
        assert relay.publish_pending() == 10

        broker.stop()  # Kafka goes away
        for m in ids[10:]:
            response = client.post(
                "/v1/track",
                json={"anonymousId": "a", "event": "E", "messageId": m},
                headers=basic(),
            )
            assert response.status_code == 200
        from kafka.errors import KafkaError

        with pytest.raises(KafkaError):
            relay.publish_pending()
        assert unsent(intake) == 20  # nothing lost, nothing marked sent

        broker = EmbeddedBroker(port, tmp_path / "broker.log").start()  # Kafka is back
        ensure_topics(config)
        wait_for(
            lambda: _try_publish(relay) or unsent(intake) == 0,
            timeout=60,
            message="delivery after the broker returned",
        )
        reader = TopicReader(config, TRAFFIC)
        values = reader.wait(lambda vs: set(message_ids(vs)) >= set(ids[10:]))
        reader.close()
        delivered = [m for m in message_ids(values) if m in ids[10:]]
        assert sorted(delivered) == sorted(ids[10:])  # every one, exactly once
    finally:
        relay.close(timeout_s=2)
        broker.stop()


def _try_publish(relay: OutboxRelay) -> bool:
    from kafka.errors import KafkaError

    try:
        relay.publish_pending()
    except KafkaError:
        return False
    return True
