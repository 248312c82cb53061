"""Group commit under the real gunicorn (2 forked workers x 4 threads, each worker with its
own writer thread), on SQLite and PostgreSQL: many clients at once, the same messageIds
sent by several of them, every answer 200, every event in the outbox exactly once, the
accepted counts adding up to exactly the distinct events; then a clean SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from services.traffic_intake.app import init_db
from services.traffic_intake.models import outbox
from shared.broker import free_port, port_open
from shared.db import make_engine
from shared.topics import TRAFFIC
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
WRITE_KEY = "wk-group-commit"


@pytest.fixture
def intake(database_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    engine = make_engine(database_url)
    init_db(engine)
    engine.dispose()
    port = free_port()
    env = {
        **os.environ,
        "TRAFFIC_INTAKE_DATABASE_URL": database_url,
        "FUNNEL_WRITE_KEY": WRITE_KEY,
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "4",
        "INTAKE_RATE_LIMIT_PER_SECOND": "0",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # intake never waits for Kafka
    }
    with (tmp_path / "gunicorn.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(ROOT / "deploy/gunicorn.conf.py"),
                "-b",
                f"127.0.0.1:{port}",
                "services.traffic_intake.wsgi:app",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        wait_for(lambda: port_open("127.0.0.1", port), message="gunicorn listening")
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_concurrent_clients_through_gunicorn_store_each_event_exactly_once(
    intake: tuple[str, subprocess.Popen[bytes]], database_url: str
) -> None:
    url, process = intake
    clients, distinct, copies = 16, 240, 3
    # Each messageId goes out from three different clients, singly or in small batches.
    plan: list[list[str]] = [[] for _ in range(clients)]
    for n in range(distinct * copies):
        plan[(n * 7 + n // distinct) % clients].append(f"gc-{n % distinct}")
    statuses: list[int] = []
    accepted: list[int] = []
    lock = threading.Lock()

    def client(ids: list[str]) -> None:
        session = requests.Session()
        session.auth = (WRITE_KEY, "")
        for start in range(0, len(ids), 4):
            chunk = ids[start : start + 4]
            if len(chunk) == 1 or start % 8 == 0:
                for m in chunk:
                    body = {"anonymousId": f"anon-{m}", "event": "Viewed", "messageId": m}
                    r = session.post(f"{url}/v1/track", json=body, timeout=30)
                    with lock:
                        statuses.append(r.status_code)
                        accepted.append(r.json().get("accepted", 0))
            else:
                batch = [
                    {"type": "track", "anonymousId": f"anon-{m}", "event": "Viewed", "messageId": m}
                    for m in chunk
                ]
                r = session.post(f"{url}/v1/batch", json={"batch": batch}, timeout=30)
                with lock:
                    statuses.append(r.status_code)
                    accepted.append(r.json().get("accepted", 0))

    pool = [threading.Thread(target=client, args=(ids,)) for ids in plan]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    assert set(statuses) == {200}
    assert sum(accepted) == distinct  # each event accepted by exactly one answer
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows, unique = conn.execute(
                select(func.count(), func.count(outbox.c.event_id.distinct())).where(
                    outbox.c.topic == TRAFFIC
                )
            ).one()
    finally:
        engine.dispose()
    assert rows == unique == distinct

    process.terminate()  # workers drain their writers and exit
    assert process.wait(30) == 0
