"""Signed webhooks against a real HTTP receiver: one that fails half of the calls still
sees every dispatch exactly once (it goes by the idempotency key) with valid signatures;
one that is down for a minute gets everything afterwards; one that refuses for good, or
never recovers, leaves a dead letter with the reason — never a lost dispatch. An SMS
bridge posting the provider's receipts back closes the loop into the campaign report."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from flask import Flask
from sqlalchemy import func, insert, select

from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.config import DeliveryConfig, RetargetingConfig
from services.member_retargeting.delivery.dispatcher import Dispatcher, handlers
from services.member_retargeting.delivery.webhook import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    signature,
    verify,
)
from services.member_retargeting.model.suppression import PHONE, suppression_key
from services.member_retargeting.models import (
    Contact,
    Delivery,
    Dispatch,
    Suppression,
    dispatcher_outbox,
    outbox,
    processed_events,
)
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.broker import free_port
from shared.db import utcnow
from shared.deadletter import parse_headers
from shared.events import decode
from shared.runner import BatchProcessor
from shared.topics import DEADLETTER, DELIVERY, DISPATCH, DISPATCHER
from tests.helpers import FakeRecord
from tests.helpers import serving as serving_app
from tests.integration.delivery_helpers import populate, run_campaign
from tests.unit.member_retargeting.conftest import MARKETING, TOKENS, feed

SECRET = "whsec-integration-test-secret"


@dataclass
class Receiver:
    """A careful receiver: it checks the signature, then does the work once per
    idempotency key (a retried key is answered 200 and not done again). ``fail(n)``
    True answers call ``n`` with ``status`` before any work."""

    fail: Callable[[int], bool] = lambda n: False
    status: int = 500
    calls: int = 0
    bad_signatures: int = 0
    done: Counter[str] = field(default_factory=Counter)  # work done per key
    answered_ok: Counter[str] = field(default_factory=Counter)  # 2xx answers per key
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get(IDEMPOTENCY_HEADER, "")
                with receiver.lock:
                    receiver.calls += 1
                    code = 200
                    if not verify(SECRET, self.headers.get(SIGNATURE_HEADER, ""), body):
                        receiver.bad_signatures += 1
                        code = 401
                    elif receiver.fail(receiver.calls):
                        code = receiver.status
                    else:
                        if key not in receiver.done:
                            receiver.done[key] += 1
                        receiver.answered_ok[key] += 1
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@contextmanager
def serving(receiver: Receiver, port: int) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", port), receiver.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def make_app(database_url: str, port: int, **delivery: object) -> Flask:
    settings: dict[str, object] = {
        "webhook_url": f"http://127.0.0.1:{port}/hooks/sms",
        "webhook_secret": SECRET,
        "webhook_timeout_seconds": 5.0,
        "rates": {"sms": 10_000.0},
        "retry_base_seconds": 0.05,
        "retry_ceiling_seconds": 0.5,
        "breaker_base_seconds": 0.05,
        "breaker_ceiling_seconds": 0.5,
        "max_attempts": 100,
        **delivery,
    }
    config = RetargetingConfig(
        database_url=database_url,
        tokens=TOKENS,
        delivery=DeliveryConfig(**settings),  # type: ignore[arg-type]
    )
    app = create_app(config)
    init_db(app.extensions[RETARGETING_STATE].engine)
    return app


def queue_dispatches(app: Flask, people: int) -> set[str]:
    """An SMS campaign to ``people``; its dispatches through the dispatcher's consumer
    handler into its store. Returns the dispatch ids."""
    populate(app, people, phones=True)
    run_campaign(app, "sms", "Your code is ready", channel="sms")
    state = app.extensions[RETARGETING_STATE]
    with state.engine.connect() as conn:
        values = list(conn.scalars(select(outbox.c.value).where(outbox.c.topic == DISPATCH)))
        ids = set(conn.scalars(select(Dispatch.event_id).where(Dispatch.status == "sent")))
    processor = BatchProcessor(
        consumer_name=DISPATCHER,
        sessions=state.sessions,
        handlers=handlers(),
        processed_table=processed_events,
        outbox_table=dispatcher_outbox,
    )
    result = processor.process([FakeRecord(DISPATCH, 0, i, b"k", v) for i, v in enumerate(values)])
    assert result.applied == people and len(ids) == people
    return ids


def send_until(app: Flask, done: Callable[[], bool], timeout: float) -> None:
    state = app.extensions[RETARGETING_STATE]
    dispatcher = Dispatcher(state.sessions, state.config)
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not delivered in time"
        if dispatcher.run_once() == 0:
            time.sleep(0.02)


def statuses(app: Flask) -> dict[str, int]:
    with app.extensions[RETARGETING_STATE].engine.connect() as conn:
        return dict(
            conn.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )


def test_a_receiver_failing_half_the_calls_sees_each_dispatch_once_signed(
    database_url: str,
) -> None:
    port = free_port()
    app = make_app(database_url, port)
    ids = queue_dispatches(app, 200)
    receiver = Receiver(fail=lambda n: n % 2 == 0)
    with serving(receiver, port):
        send_until(app, lambda: set(receiver.done) == ids, timeout=120)
        send_until(app, lambda: statuses(app) == {"sent": 200}, timeout=30)
    assert receiver.bad_signatures == 0
    assert receiver.calls >= 2 * 200 - 1  # half of them failed and were retried
    assert set(receiver.done.values()) == {1}
    # Nothing was sent again after the receiver said yes.
    assert set(receiver.answered_ok) == ids and set(receiver.answered_ok.values()) == {1}


def test_a_receiver_down_for_a_minute_gets_everything_afterwards(sqlite_url: str) -> None:
    port = free_port()
    app = make_app(
        sqlite_url,
        port,
        retry_base_seconds=0.5,
        retry_ceiling_seconds=5.0,
        breaker_base_seconds=0.5,
        breaker_ceiling_seconds=5.0,
        max_attempts=3,  # an outage is the receiver's: it costs no dispatch an attempt
    )
    ids = queue_dispatches(app, 50)
    state = app.extensions[RETARGETING_STATE]
    dispatcher = Dispatcher(state.sessions, state.config)
    down_until = time.monotonic() + 60
    while time.monotonic() < down_until:  # nothing listens on the port
        if dispatcher.run_once() == 0:
            time.sleep(0.05)
    assert statuses(app) == {"queued": 50}  # retried, paused, never lost
    receiver = Receiver()
    with serving(receiver, port):
        send_until(app, lambda: statuses(app) == {"sent": 50}, timeout=60)
    assert set(receiver.done) == ids and set(receiver.done.values()) == {1}


def test_a_refusal_or_a_receiver_that_never_recovers_leaves_a_dead_letter(
    sqlite_url: str,
) -> None:
    port = free_port()
    app = make_app(sqlite_url, port, max_age_hours=3 / 3600)  # given up after 3 seconds
    ids = queue_dispatches(app, 4)
    receiver = Receiver(fail=lambda n: True, status=503)
    with serving(receiver, port):
        send_until(app, lambda: statuses(app) == {"failed": 4}, timeout=60)
    assert receiver.calls >= 4  # tried, the channel slowed down, then given up by age
    refusing = Receiver(fail=lambda n: True, status=422)
    app2 = make_app(sqlite_url.replace("test.db", "second.db"), port)
    queue_dispatches(app2, 2)
    with serving(refusing, port):
        send_until(app2, lambda: statuses(app2) == {"failed": 2}, timeout=60)
    assert refusing.calls == 2  # a 4xx is final: no retries
    with app.extensions[RETARGETING_STATE].engine.connect() as conn:
        letters = list(
            conn.execute(select(dispatcher_outbox).where(dispatcher_outbox.c.topic == DEADLETTER))
        )
    assert len(letters) == 4
    info = [parse_headers([(k, v.encode()) for k, v in row.headers.items()]) for row in letters]
    assert {i["source"] for i in info} == {DISPATCH}
    assert {i["consumer"] for i in info} == {DISPATCHER}
    assert all("not delivered within" in i["reason"] for i in info)
    assert {row.key for row in letters} <= {f"P{i:05}" for i in range(4)}
    assert len(ids) == 4


def test_a_redirect_is_never_followed_nor_counted_as_delivered(sqlite_url: str) -> None:
    port = free_port()
    app = make_app(sqlite_url, port)
    queue_dispatches(app, 2)
    redirecting = Receiver(fail=lambda n: True, status=302)
    with serving(redirecting, port):
        state = app.extensions[RETARGETING_STATE]
        dispatcher = Dispatcher(state.sessions, state.config)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if dispatcher.run_once() == 0:
                time.sleep(0.05)
    assert redirecting.calls >= 2
    assert statuses(app) == {"queued": 2}  # the receiver's trouble: waiting, not sent


def test_an_address_suppressed_after_the_dispatch_is_not_sent(sqlite_url: str) -> None:
    port = free_port()
    app = make_app(sqlite_url, port)
    queue_dispatches(app, 3)
    state = app.extensions[RETARGETING_STATE]
    with state.engine.begin() as conn:
        phone = conn.scalar(select(Contact.phone).where(Contact.lead_id == "P00001"))
        conn.execute(
            insert(Suppression).values(
                value_hash=suppression_key(PHONE, phone),
                kind="phone",
                reason="unsubscribed",
                created_by="test",
                created_at=utcnow(),
            )
        )
    receiver = Receiver()
    with serving(receiver, port):
        send_until(app, lambda: statuses(app) == {"sent": 2, "suppressed": 1}, timeout=30)
    assert len(receiver.done) == 2
    with state.engine.connect() as conn:
        letters = conn.scalar(select(func.count()).where(dispatcher_outbox.c.topic == DEADLETTER))
    assert letters == 0  # not a failure: the person asked not to be contacted


def test_an_sms_bridge_posting_receipts_back_makes_the_report_count_delivered(
    database_url: str,
) -> None:
    """The whole receipt loop over real HTTP: the dispatcher posts each SMS to the
    bridge; the bridge answers, then posts the provider's receipt back to the receipts
    endpoint (retrying its 409 until the dispatcher has recorded the send, as a bridge
    must); the statuses go through the consumer's handler into the campaign report."""
    port = free_port()
    app = make_app(database_url, port)
    ids = queue_dispatches(app, 20)
    answers: Counter[int] = Counter()
    threads: list[threading.Thread] = []
    receipted: set[str] = set()

    with serving_app(app) as funnel:

        def post_receipt(dispatch_id: str, status: str) -> None:
            body = json.dumps({"id": dispatch_id, "status": status, "code": None}).encode()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                request = urllib.request.Request(
                    f"{funnel}/delivery/receipts",
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: signature(SECRET, int(time.time()), body),
                    },
                )
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        code = response.status
                except urllib.error.HTTPError as error:
                    code = error.code
                except urllib.error.URLError:
                    code = -1  # no answer at all: counted, and the test says so
                with receiver.lock:
                    answers[code] += 1
                if code != 409:
                    return
                time.sleep(0.05)

        receiver = Receiver()
        handler = receiver.handler()

        class Bridge(handler):  # type: ignore[misc, valid-type]
            """The receiver, then (as the provider reports) the receipt posted back."""

            def do_POST(self) -> None:
                key = self.headers.get(IDEMPOTENCY_HEADER, "")
                super().do_POST()
                with receiver.lock:  # one receipt per message, however often it came
                    first = key not in receipted
                    receipted.add(key)
                if first:
                    status = "undelivered" if key == min(ids) else "delivered"
                    thread = threading.Thread(target=post_receipt, args=(key, status))
                    threads.append(thread)
                    thread.start()

        server = ThreadingHTTPServer(("127.0.0.1", port), Bridge)
        serve = threading.Thread(target=server.serve_forever, daemon=True)
        serve.start()
        try:
            send_until(app, lambda: statuses(app) == {"sent": 20}, timeout=60)
            # The last answers went out before their receipts' threads began: wait for
            # every receipt to be answered (the bridge gives up on a 409 after 30 s).
            deadline = time.monotonic() + 40
            while sum(n for code, n in answers.items() if code != 409) < 20:
                assert time.monotonic() < deadline, answers
                time.sleep(0.05)
            for thread in list(threads):
                thread.join(timeout=5)
        finally:
            server.shutdown()
            server.server_close()
    assert set(receiver.done) == ids
    assert answers[200] == 20 and set(answers) <= {200, 409}  # never a 4xx otherwise
    state = app.extensions[RETARGETING_STATE]
    with state.engine.connect() as conn:
        sent = [decode(v) for v in conn.scalars(select(dispatcher_outbox.c.value))]
        receipts = [
            decode(v)
            for v in conn.scalars(select(outbox.c.value).where(outbox.c.topic == DELIVERY))
        ]
    assert len(receipts) == 20
    feed(app, *((DELIVERY, e) for e in sent if e.type == "delivery.status"))
    feed(app, *((DELIVERY, e) for e in receipts))
    campaign_id = receipts[0].payload["campaign_id"]
    report = app.test_client().get(f"/campaigns/{campaign_id}/report", headers=MARKETING).json
    delivery = report["delivery"]
    assert (delivery["sent"], delivery["delivered"], delivery["failed"]) == (19, 19, 1)
