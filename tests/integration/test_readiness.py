"""Liveness and readiness of every service against the real broker and PostgreSQL:
``/readyz`` is 200 while the database answers and a broker accepts connections, 503
naming the database once it is gone (``/healthz`` still 200: restart nothing), and 503
naming Kafka when no bootstrap server answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from services.lead_scoring.app import create_app as scoring_app
from services.lead_scoring.config import ScoringConfig
from services.member_retargeting.app import create_app as retargeting_app
from services.member_retargeting.config import RetargetingConfig
from services.traffic_intake.app import create_app as intake_app
from services.traffic_intake.config import IntakeConfig
from shared.broker import free_port
from shared.config import KafkaConfig
from tests.conftest import POSTGRES_ADMIN_URL

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

SERVICES: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "intake": (intake_app, lambda url, kafka: IntakeConfig(url, (), kafka=kafka)),
    "scoring": (scoring_app, lambda url, kafka: ScoringConfig(url, kafka=kafka)),
    "retargeting": (retargeting_app, lambda url, kafka: RetargetingConfig(url, kafka=kafka)),
}


def drop(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE "{name}"'))
    admin.dispose()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_readiness_follows_the_database_and_the_broker(
    service: str, postgres_url: str, kafka_config: KafkaConfig
) -> None:
    make_app, make_config = SERVICES[service]
    config = make_config(postgres_url, kafka_config)
    client = make_app(config).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json
    assert ready.json["checks"] == {"database": "ok", "kafka": "ok"}

    unreachable = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}")
    lonely = make_app(replace(config, kafka=unreachable)).test_client()
    answer = lonely.get("/readyz")
    assert answer.status_code == 503 and set(answer.json["error"]["fields"]) == {"kafka"}

    drop(postgres_url)
    gone = client.get("/readyz")
    assert gone.status_code == 503
    assert set(gone.json["error"]["fields"]) == {"database"}
    assert gone.headers["Retry-After"] == "5"
    assert client.get("/healthz").status_code == 200  # alive: not a reason to restart
