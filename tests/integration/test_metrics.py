"""Prometheus metrics under gunicorn's several workers: intake in a real gunicorn with two
workers (multiprocess mode), events sent over separate connections so both workers take
some; ``/metrics`` counts every accepted and rejected event across the workers, and reads
the outbox depth from the database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from shared.broker import free_port
from tests.conftest import wait_for

ROOT = Path(__file__).parents[2]
KEY = "wk-metrics-test"
SCRAPER = "scrape-only-token-for-the-test"
SENT = 400


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_counters_add_up_across_two_gunicorn_workers(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "TRAFFIC_INTAKE_DATABASE_URL": f"sqlite:///{tmp_path / 'intake.db'}",
        "FUNNEL_WRITE_KEY": KEY,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "FUNNEL_METRICS_TOKEN": SCRAPER,
        "GUNICORN_WORKERS": "2",
        "INTAKE_RATE_LIMIT_PER_SECOND": "0",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # no relay here
    }
    subprocess.run(
        [sys.executable, "-m", "services.traffic_intake", "init-db"], env=env, cwd=ROOT, check=True
    )
    log = (tmp_path / "gunicorn.log").open("ab")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "deploy" / "gunicorn.conf.py"),
            "-b",
            f"127.0.0.1:{port}",
            "services.traffic_intake.wsgi:app",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(up, timeout=30, message="gunicorn up")

        def send(i: int) -> int:
            return requests.post(
                f"{base}/v1/track",
                json={"anonymousId": f"a{i}", "event": "Viewed", "messageId": f"m{i}"},
                auth=(KEY, ""),
                headers={"Connection": "close"},  # a new connection each
                timeout=10,
            ).status_code

        # Eight at a time, on new connections: the two workers share them out.
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(send, range(SENT))) == {200}
        again = requests.post(
            f"{base}/v1/track",
            json={"anonymousId": "a0", "event": "Viewed", "messageId": "m0"},
            auth=(KEY, ""),
            timeout=5,
        )
        assert again.json()["duplicates"] == 1
        bad = requests.post(f"{base}/v1/track", json={"event": "x"}, auth=(KEY, ""), timeout=5)
        assert bad.status_code == 422
        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401
        scrape = {"Authorization": f"Bearer {SCRAPER}"}
        text = requests.get(f"{base}/metrics", headers=scrape, timeout=5).text
        # The scraper's token reaches nothing else.
        assert requests.get(f"{base}/admin/sources", headers=scrape, timeout=5).status_code == 403
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    workers = {p.name.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}
    assert len(workers) >= 2, workers  # both workers counted something
    assert metric(text, "funnel_intake_events_accepted_total", source="web") == SENT
    assert metric(text, "funnel_intake_events_duplicate_total", source="web") == 1
    assert metric(text, "funnel_intake_events_rejected_total", reason="schema_violation") == 1
    # Waiting for the relay (none runs here): the accepted events and the rejected one's
    # dead letter.
    depth = metric(text, "funnel_outbox_depth", service="traffic-intake", outbox="outbox")
    assert depth == SENT + 1
