"""Group commit at intake (:mod:`services.traffic_intake.group_commit`), through the Flask
app on SQLite and PostgreSQL: concurrent requests share one transaction, each answers 200
only once its rows are committed, deduplication stays exact inside a group, a failing
member fails alone, the queue is bounded, and ``max_rows=0`` commits per request."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from werkzeug.test import TestResponse

from services.traffic_intake import group_commit
from services.traffic_intake.app import create_app, init_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.group_commit import GroupCommit
from services.traffic_intake.state import STATE
from tests.conftest import wait_for
from tests.unit.traffic_intake.conftest import WRITE_KEY, basic, outbox_rows


def track(message_id: str, anonymous_id: str = "anon-1") -> dict[str, Any]:
    return {
        "anonymousId": anonymous_id,
        "event": "Viewed",
        "messageId": message_id,
        "properties": {"n": 1},
    }


def js(response: TestResponse) -> dict[str, Any]:
    body: dict[str, Any] = response.get_json()
    return body


def make_app(database_url: str, **overrides: Any) -> Flask:
    config = replace(
        IntakeConfig(database_url=database_url, write_keys=(WRITE_KEY,)),
        rate_limit_per_second=0,
        **overrides,
    )
    app = create_app(config)
    init_db(app.extensions[STATE].engine)
    return app


def writes(app: Flask) -> GroupCommit:
    return app.extensions[STATE].writes


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    app = make_app(database_url, group_commit_wait_ms=5)
    yield app
    writes(app).close()
    app.extensions[STATE].engine.dispose()


class Gate:
    """Holds the writer inside its first transaction until opened; records group sizes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self.opened = threading.Event()
        real = group_commit.write_group

        def gated(conn: Any, group: Any) -> Any:
            self.sizes.append(len(group))
            self.entered.set()
            assert self.opened.wait(30), "gate never opened"
            return real(conn, group)

        monkeypatch.setattr(group_commit, "write_group", gated)

    def open(self) -> None:
        self.opened.set()


def post_in_thread(
    app: Flask, path: str, body: dict[str, Any]
) -> tuple[threading.Thread, Callable[[], TestResponse]]:
    box: list[TestResponse] = []

    def run() -> None:
        box.append(app.test_client().post(path, json=body, headers=basic()))

    thread = threading.Thread(target=run)
    thread.start()

    def result() -> TestResponse:
        thread.join(30)
        assert box, "request never answered"
        return box[0]

    return thread, result


def queued(app: Flask, count: int) -> None:
    wait_for(lambda: writes(app)._queue.qsize() == count, timeout=10, message=f"{count} queued")


def test_concurrent_requests_all_answer_200_and_every_event_is_stored_once(app: Flask) -> None:
    threads, per_thread = 12, 10
    answers: list[tuple[int, int]] = []
    lock = threading.Lock()

    def send(t: int) -> None:
        client = app.test_client()
        for i in range(per_thread):
            response = client.post("/v1/track", json=track(f"m-{t}-{i}"), headers=basic())
            with lock:
                answers.append((response.status_code, js(response)["accepted"]))

    pool = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert answers == [(200, 1)] * (threads * per_thread)
    ids = [row.event_id for row in outbox_rows(app)]
    assert len(ids) == len(set(ids)) == threads * per_thread


def test_a_group_shares_one_transaction_and_counts_a_repeated_message_id_once(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch)
    _, first = post_in_thread(app, "/v1/track", track("first"))
    assert gate.entered.wait(10)
    # While the writer is busy, three requests queue: two carry messageId "dup", the
    # batch carries it twice more and a new one.
    posts = [
        post_in_thread(app, "/v1/track", track("dup")),
        post_in_thread(app, "/v1/track", track("dup")),
        post_in_thread(
            app,
            "/v1/batch",
            {"batch": [{"type": "track", **track(m)} for m in ("dup", "new", "dup")]},
        ),
    ]
    queued(app, 3)
    gate.open()
    answers = [js(result()) for _, result in posts]
    assert js(first())["accepted"] == 1
    assert gate.sizes == [1, 3]  # the three queued requests: one transaction
    assert sum(a["accepted"] for a in answers) == 2  # "dup" once, "new" once
    assert sum(a["duplicates"] for a in answers) == 3
    assert answers[2]["accepted"] + answers[2]["duplicates"] == 3
    ids = sorted(row.event_id for row in outbox_rows(app))
    assert len(ids) == len(set(ids)) == 3


def _install_poison_trigger(app: Flask) -> None:
    """Any outbox row keyed ``poison`` makes its INSERT fail: a fault of one request."""
    engine = app.extensions[STATE].engine
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON outbox WHEN NEW.key = 'poison' "
                    "BEGIN SELECT RAISE(ABORT, 'poison row'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.key = 'poison' THEN RAISE EXCEPTION 'poison row'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON outbox "
                    "FOR EACH ROW EXECUTE FUNCTION poison()"
                )
            )


def _drop_poison_trigger(app: Flask) -> None:
    engine = app.extensions[STATE].engine
    with engine.begin() as conn:
        conn.execute(
            text("DROP TRIGGER poison" + ("" if engine.dialect.name == "sqlite" else " ON outbox"))
        )


def test_a_failing_group_fails_only_the_guilty_request(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_poison_trigger(app)
    gate = Gate(monkeypatch)
    _, first = post_in_thread(app, "/v1/track", track("first"))
    assert gate.entered.wait(10)
    good_a = post_in_thread(app, "/v1/track", track("good-a"))[1]
    bad = post_in_thread(app, "/v1/track", track("bad", anonymous_id="poison"))[1]
    good_b = post_in_thread(app, "/v1/track", track("good-b"))[1]
    queued(app, 3)
    gate.open()
    assert first().status_code == 200
    assert [js(good_a())["accepted"], js(good_b())["accepted"]] == [1, 1]
    refused = bad()
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "2"
    # The group of three failed, then each was written alone.
    assert gate.sizes == [1, 3, 1, 1, 1]
    assert {row.key for row in outbox_rows(app)} == {"anon-1"}
    assert len(outbox_rows(app)) == 3

    # Retries: the good ones were committed (duplicates now); the refused one was not.
    client = app.test_client()
    again = client.post("/v1/track", json=track("good-a"), headers=basic())
    assert (js(again)["accepted"], js(again)["duplicates"]) == (0, 1)
    _drop_poison_trigger(app)
    retried = client.post("/v1/track", json=track("bad", anonymous_id="poison"), headers=basic())
    assert (retried.status_code, js(retried)["accepted"]) == (200, 1)
    assert len(outbox_rows(app)) == 4


def test_a_full_queue_answers_503_with_retry_after(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(database_url, group_commit_queue=1)
    try:
        gate = Gate(monkeypatch)
        _, first = post_in_thread(app, "/v1/track", track("a"))
        assert gate.entered.wait(10)
        _, second = post_in_thread(app, "/v1/track", track("b"))
        queued(app, 1)
        refused = app.test_client().post("/v1/track", json=track("c"), headers=basic())
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert js(refused)["error"]["code"] == "unavailable"
        gate.open()
        assert [first().status_code, second().status_code] == [200, 200]
        assert sorted(r.event_id.rsplit(":", 1)[-1] for r in outbox_rows(app)) == ["a", "b"]
    finally:
        writes(app).close()


def test_a_write_that_does_not_commit_in_time_answers_503_and_is_never_stored_twice(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(sqlite_url, group_commit_timeout_s=0.3)
    try:
        gate = Gate(monkeypatch)
        late = app.test_client().post("/v1/track", json=track("slow"), headers=basic())
        assert late.status_code == 503
        assert late.headers["Retry-After"] == "1"
        gate.open()
        # It was already in the writer's hands: it commits; the client's retry is a
        # duplicate, stored once.
        wait_for(lambda: len(outbox_rows(app)) == 1, timeout=10, message="the late commit")
        retry = app.test_client().post("/v1/track", json=track("slow"), headers=basic())
        assert (retry.status_code, js(retry)["duplicates"]) == (200, 1)
        assert len(outbox_rows(app)) == 1
    finally:
        writes(app).close()


def test_zero_max_rows_commits_each_request_itself(database_url: str) -> None:
    app = make_app(database_url, group_commit_max_rows=0)
    client = app.test_client()
    first = client.post("/v1/track", json=track("one"), headers=basic())
    again = client.post("/v1/track", json=track("one"), headers=basic())
    assert (js(first)["accepted"], js(again)["duplicates"]) == (1, 1)
    assert writes(app)._thread is None  # no writer thread was ever started
    assert len(outbox_rows(app)) == 1


def test_closing_drains_what_is_queued_and_later_writes_commit_alone(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(sqlite_url)
    gate = Gate(monkeypatch)
    _, first = post_in_thread(app, "/v1/track", track("a"))
    assert gate.entered.wait(10)
    _, second = post_in_thread(app, "/v1/track", track("b"))
    queued(app, 1)
    closer = threading.Thread(target=writes(app).close)
    closer.start()
    gate.open()
    closer.join(10)
    assert [first().status_code, second().status_code] == [200, 200]
    thread = writes(app)._thread
    assert thread is not None and not thread.is_alive()
    after = app.test_client().post("/v1/track", json=track("c"), headers=basic())
    assert js(after)["accepted"] == 1
    assert len(outbox_rows(app)) == 3


def test_a_write_that_cannot_be_built_answers_500_and_leaves_no_one_expected(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are built in the request's thread; if that fails, the request has stopped
    coming, so the writer does not go on lingering for it (an idle intake adds no delay)."""

    def broken(event: Any) -> Any:
        raise RuntimeError("a row nobody foresaw")

    monkeypatch.setattr(group_commit, "as_stored", broken)
    client = app.test_client()
    response = client.post("/v1/track", json=track("m-1"), headers=basic())
    assert response.status_code == 500
    assert "message" in response.get_json()["error"]
    assert writes(app)._preparing == 0
    monkeypatch.undo()
    again = client.post("/v1/track", json=track("m-1"), headers=basic())
    assert (again.status_code, js(again)["accepted"]) == (200, 1)
