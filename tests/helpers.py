"""Small helpers shared by tests: plain Kafka-like records and topic readers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from shared.config import KafkaConfig
from shared.kafka import make_consumer


@dataclass
class FakeRecord:
    """Just the fields the runner reads; for BatchProcessor tests without a broker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


@contextmanager
def serving(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve a WSGI app on a real HTTP server (a thread) at ``port``; yields its URL.

    With no ``port`` the server binds port 0 and the kernel picks a free one as it binds.
    Picking a "free" port first and binding it later lets the kernel hand that port to an
    outgoing connection in between (it did, in CI, to a port picked at collection time)."""
    httpd = make_server("127.0.0.1", port or 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class LateApp:
    """A WSGI app set after its server listens, for an app that must know its own URL (or
    another server's) before it can be built. Answers 503 until ``app`` is set."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"not set yet"]
        return self.app(environ, start_response)


@contextmanager
def open_site(site: tuple[LateApp, str], app: Any) -> Iterator[str]:
    """``app`` served on ``site`` (a late app and its origin) for the block; yields the
    origin."""
    late, origin = site
    late.app = app
    try:
        yield origin
    finally:
        late.app = None


def message_ids(values: list[dict[str, Any]], source: str = "web") -> list[str]:
    """The client messageIds of intake events from ``source`` (intake's event id is
    ``<source tag>:<messageId>``); other events are left out."""
    from services.traffic_intake.segment import source_tag

    prefix = f"{source_tag(source)}:"
    return [v["event_id"].removeprefix(prefix) for v in values if v["event_id"].startswith(prefix)]


def intake_app(
    database: Path, write_key: str, kafka: KafkaConfig | None = None, **config: Any
) -> Any:
    """A traffic-intake app on a SQLite file with its tables, taking ``write_key``, with
    no rate limit unless ``config`` sets one."""
    from services.traffic_intake.app import create_app, init_db
    from services.traffic_intake.config import IntakeConfig
    from services.traffic_intake.state import STATE

    config.setdefault("rate_limit_per_second", 0)
    app = create_app(
        IntakeConfig(
            database_url=f"sqlite:///{database}",
            write_keys=(write_key,),
            kafka=kafka or KafkaConfig(),
            **config,
        )
    )
    init_db(app.extensions[STATE].engine)
    return app


class TopicReader:
    """Reads a topic from the beginning in a throwaway group and accumulates records."""

    def __init__(self, config: KafkaConfig, topic: str) -> None:
        self.consumer = make_consumer(config, f"test-reader-{uuid.uuid4().hex}", [topic])
        self.records: list[Any] = []

    def poll(self) -> list[Any]:
        for batch in self.consumer.poll(timeout_ms=300).values():
            self.records.extend(batch)
        return self.records

    def values(self) -> list[dict[str, Any]]:
        """Decoded envelopes; other tests' deliberate poison on a shared topic is skipped."""
        out = []
        for record in self.records:
            try:
                value = json.loads(record.value or b"")
            except ValueError:
                continue
            if isinstance(value, dict) and {"event_id", "type", "payload"} <= set(value):
                out.append(value)
        return out

    def wait(self, predicate: Any, timeout: float = 40.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if predicate(self.values()):
                return self.values()
        raise AssertionError(
            f"topic never satisfied the condition in {timeout}s; saw {len(self.records)} records"
        )

    def close(self) -> None:
        self.consumer.close()


def form_csrf(page: str) -> str:
    """The CSRF token a page's forms carry."""
    import re

    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None, page
    return match.group(1)


def login_csrf(client: Any) -> str:
    """The CSRF token of the sign-in form, as a browser gets it (GET /app/login first)."""
    return form_csrf(client.get("/app/login").text)


def page_login(client: Any, token: str, home: str = "/app/") -> str:
    """Signs a test client in to a service's pages through the sign-in form (its CSRF
    token included); returns the new session's CSRF token."""
    response = client.post("/app/login", data={"token": token, "csrf": login_csrf(client)})
    assert response.status_code == 302, response.text
    return form_csrf(client.get(home).text)
