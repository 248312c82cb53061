"""Fixtures for real infrastructure: the Kafka-protocol broker, SQLite, PostgreSQL.

* ``kafka_config`` starts the embedded broker once per test session on a free port (or uses
  ``KAFKA_BOOTSTRAP_SERVERS`` when set, e.g. an Apache Kafka). Tests that use it are
  marked ``kafka``.
* ``postgres_url`` creates a fresh database on the PostgreSQL at 127.0.0.1:5432 (or
  ``FUNNEL_TEST_POSTGRES_URL``) and drops it afterwards. Without a server the test is
  skipped with the reason, unless ``CI`` or ``FUNNEL_REQUIRE_POSTGRES`` is set: then it
  fails, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from shared.broker import EmbeddedBroker, free_port
from shared.config import KafkaConfig
from shared.kafka import ensure_topics

POSTGRES_ADMIN_URL = os.environ.get(
    "FUNNEL_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def wait_for(
    condition: Callable[[], object],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")


@pytest.fixture(scope="session")
def kafka_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaConfig]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    if external:
        config = KafkaConfig(bootstrap_servers=external)
    else:
        log = tmp_path_factory.mktemp("broker") / "broker.log"
        broker = EmbeddedBroker(free_port(), log).start()
        config = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
    ensure_topics(config)
    yield config
    if broker is not None:
        broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaConfig]:
    """A broker of the test's own, for a test that reads every record of its topics."""
    broker = EmbeddedBroker(free_port(), tmp_path / "broker.log").start()
    config = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
    ensure_topics(config)
    try:
        yield config
    finally:
        broker.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


def _postgres_required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("FUNNEL_REQUIRE_POSTGRES"))


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the test server (dropped afterwards); skips or fails
    (in CI) when there is no server."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        if _postgres_required():
            pytest.fail(
                f"PostgreSQL is required here but unreachable at {POSTGRES_ADMIN_URL}: {exc}"
            )
        pytest.skip(f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {exc}")
    name = f"funnel_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """A maker of fresh databases of one kind (each service needs its own): every test
    using this runs on SQLite and on PostgreSQL."""
    with ExitStack() as stack:

        def make() -> str:
            if request.param == "sqlite":
                return f"sqlite:///{tmp_path / f'{uuid.uuid4().hex[:8]}.db'}"
            return stack.enter_context(fresh_postgres_database())

        if request.param == "postgres":
            request.applymarker(pytest.mark.postgres)
        yield make


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both real databases: each test using this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    request.applymarker(pytest.mark.postgres)
    return request.getfixturevalue("postgres_url")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that takes a fixture of real infrastructure carries its marker, so
    # ``-m "not kafka"`` and friends select correctly without anyone remembering to mark.
    for item in items:
        # schemathesis 4's lazy schemas (schemathesis.pytest.from_fixture) still read
        # ``node._nodeid``, which pytest 9.2 no longer sets: give it the public node id.
        if not hasattr(item, "_nodeid"):
            item._nodeid = item.nodeid  # type: ignore[attr-defined]
        names = getattr(item, "fixturenames", ())
        if "kafka_config" in names or "own_broker" in names:
            item.add_marker(pytest.mark.kafka)
        if "postgres_url" in names:
            item.add_marker(pytest.mark.postgres)
