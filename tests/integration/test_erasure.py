"""Access and erasure across the funnel, on a real broker with SQLite and PostgreSQL.

A person (and a bystander) go through the whole funnel: page views, identify with an
e-mail and consent, a form, an order, a rejected event kept as a failed event, a campaign
message with its sharing-ledger line. An admin exports everything held on the person (one
document from all three services), then erases them by e-mail at
lead-scoring; every service answers. Then: a new event of theirs is dropped at intake;
new consumer groups replay the traffic and lead topics from the start with the person's
events not known as seen; and every row of every table of every service,
and intake's failed-events admin view, is searched for any of the person's identifiers —
none is found, while the bystander is intact.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import delete, select

from services.lead_scoring.app import create_app as scoring_app
from services.lead_scoring.app import init_db as init_scoring
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import make_runner as scoring_runner
from services.lead_scoring.models import Lead
from services.lead_scoring.models import metadata as scoring_metadata
from services.lead_scoring.models import processed_events as scoring_processed
from services.member_retargeting.app import create_app as retargeting_app
from services.member_retargeting.app import init_db as init_retargeting
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.consumer import make_runner as retargeting_runner
from services.member_retargeting.jobs.scheduler import Scheduler
from services.member_retargeting.models import Contact, SharingRecord
from services.member_retargeting.models import metadata as retargeting_metadata
from services.member_retargeting.models import processed_events as retargeting_processed
from services.traffic_intake.app import create_app as intake_app
from services.traffic_intake.app import init_db as init_intake
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.consumer import make_runner as intake_runner
from services.traffic_intake.models import metadata as intake_metadata
from services.traffic_intake.models import outbox as intake_outbox
from shared.config import KafkaConfig, Tokens
from shared.db import make_engine
from shared.kafka import make_producer
from shared.outbox import OutboxRelay
from tests.conftest import wait_for
from tests.helpers import serving

WRITE_KEY = "wk-erasure"
TOKENS = Tokens("sales-t", "marketing-t", "admin-t")
ADMIN = {"Authorization": "Bearer admin-t"}
MARKETING = {"Authorization": "Bearer marketing-t"}
PERSON = {"anonymousId": "anon-grace-77", "userId": "user-grace-77"}
EMAIL = "Grace.Erased@Example.com"
BYSTANDER = {"anonymousId": "anon-ada-12", "userId": "user-ada-12"}


def _send(url: str, path: str, body: dict[str, Any]) -> requests.Response:
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    return requests.post(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": auth, "Content-Type": "application/json"},
        timeout=30,
    )


def _journey(url: str, who: dict[str, str], email: str) -> None:
    consent = {"consent": {"categoryPreferences": {"analytics": True, "marketing": True}}}
    calls = [
        ("/v1/page", {**who, "properties": {"path": "/pricing"}}),
        ("/v1/identify", {**who, "traits": {"email": email, "name": "Grace"}, "context": consent}),
        ("/v1/track", {**who, "event": "Form Submitted", "properties": {"form": "demo"}}),
        ("/v1/track", {**who, "event": "Order Completed", "properties": {"revenue": 120}}),
    ]
    for path, body in calls:
        assert _send(url, path, body).status_code == 200, (path, body)


@contextmanager
def _running(runners: list[Any], relay: OutboxRelay) -> Iterator[None]:
    """Each consumer (and intake's relay) polls in a thread of its own, as in its own
    process."""
    stop = threading.Event()

    def relay_loop() -> None:
        while not stop.is_set():
            relay.publish_pending()
            stop.wait(0.1)

    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    threads.append(threading.Thread(target=relay_loop, daemon=True))
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for runner in runners:
            runner.request_stop()
        for thread in threads:
            thread.join(timeout=30)
        relay.close()


def _everything(url: str, metadata: Any) -> str:
    """Every row of every table of a service's database, as one text."""
    engine = make_engine(url)
    parts = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("utf-8", "replace")
                    parts.append(json.dumps(value, default=str, ensure_ascii=False))
    engine.dispose()
    return "\n".join(parts)


def test_an_erased_person_is_gone_from_every_store_even_after_a_replay(
    own_broker: KafkaConfig, database_urls: Callable[[], str], tmp_path: Path
) -> None:
    kafka = own_broker
    urls = {"intake": database_urls(), "scoring": database_urls(), "retargeting": database_urls()}
    intake_config = IntakeConfig(
        database_url=urls["intake"],
        write_keys=(WRITE_KEY,),
        kafka=kafka,
        tokens=TOKENS,
        rate_limit_per_second=0,
    )
    scoring_config = ScoringConfig(database_url=urls["scoring"], kafka=kafka, tokens=TOKENS)
    retargeting_config = RetargetingConfig(
        database_url=urls["retargeting"], kafka=kafka, tokens=TOKENS
    )
    init_intake(make_engine(urls["intake"]))
    init_scoring(make_engine(urls["scoring"]))
    init_retargeting(make_engine(urls["retargeting"]))
    intake, scoring, retargeting = (
        intake_app(intake_config),
        scoring_app(scoring_config),
        retargeting_app(retargeting_config),
    )

    def runners(group: str) -> list[Any]:
        return [
            intake_runner(intake_config, f"i-{group}"),
            scoring_runner(scoring_config, f"s-{group}"),
            retargeting_runner(retargeting_config, f"r-{group}"),
        ]

    def relay() -> OutboxRelay:
        engine = make_engine(urls["intake"])
        return OutboxRelay(engine, intake_outbox, lambda: make_producer(kafka, "t-relay"))

    person_ids = [PERSON["anonymousId"], PERSON["userId"], EMAIL.lower()]
    with serving(intake) as url, _running(runners(uuid.uuid4().hex[:6]), relay()):
        _journey(url, PERSON, EMAIL)
        _journey(url, BYSTANDER, "ada@example.com")
        # A rejected event of the person's, kept as a failed event (person data too).
        bad = {**PERSON, "event": "Order Completed", "properties": {"revenue": 1e13}}
        assert _send(url, "/v1/track", bad).status_code == 422
        marketing = retargeting.test_client()

        def member(email: str) -> Any:
            with make_engine(urls["retargeting"]).connect() as conn:
                return conn.scalar(
                    select(Contact.lead_id).where(Contact.email == email, Contact.is_member)
                )

        wait_for(lambda: member(EMAIL.lower()) and member("ada@example.com"), timeout=90)
        campaign = marketing.post(
            "/campaigns",
            headers=MARKETING,
            json={
                "name": "thanks",
                "segment": {"all": []},
                "message": {"subject": "Hi {{ first_name }}", "body": "Thanks"},
            },
        ).json
        marketing.post(
            f"/campaigns/{campaign['id']}/runs",
            headers=MARKETING,
            json={"idempotency_key": "thanks-1"},
        )
        scheduler = Scheduler(
            retargeting.extensions["member_retargeting"].sessions, retargeting_config
        )
        scheduler.run_once()
        with make_engine(urls["retargeting"]).connect() as conn:
            assert conn.scalar(select(SharingRecord.id).limit(1)) is not None
        stores = (
            ("intake", intake_metadata),
            ("scoring", scoring_metadata),
            ("retargeting", retargeting_metadata),
        )
        for name, metadata in stores:  # the person really is everywhere first
            before = _everything(urls[name], metadata)
            assert PERSON["userId"] in before and PERSON["anonymousId"] in before, name

        admin = scoring.test_client()
        # Access first: everything every service holds on the person, as one document.
        export = admin.get(
            f"/privacy/people/{EMAIL}",
            headers=ADMIN,
            query_string={"kind": "email", "wait_seconds": 30},
        )
        assert export.status_code == 200 and export.json["complete"], export.json["services"]
        parts = export.json["parts"]
        assert set(parts) == {"traffic-intake", "lead-scoring", "member-retargeting"}
        scored = parts["lead-scoring"]["data"]
        assert [lead["email"] for lead in scored["leads"]] == [EMAIL.lower()]
        assert {(c["purpose"], c["granted"]) for c in scored["consents"]} == {
            ("analytics", True),
            ("marketing", True),
        }
        retargeted = parts["member-retargeting"]["data"]
        assert [line["destination"] for line in retargeted["sharing_ledger"]] == ["email"]
        assert len(retargeted["orders"]) == 1 and retargeted["contacts"][0]["is_member"]
        intake_part = parts["traffic-intake"]["data"]
        assert len(intake_part["accepted_events"]) >= 4 and len(intake_part["failed_events"]) == 1
        assert "ada@example.com" not in json.dumps(export.json)  # only the person asked for

        with make_engine(urls["intake"]).connect() as conn:
            theirs = [
                row.event_id
                for row in conn.execute(select(intake_outbox))
                if PERSON["userId"].encode() in bytes(row.value)
            ]
        assert len(theirs) >= 4

        started = time.monotonic()
        erasure = admin.post(
            "/privacy/erasure", headers=ADMIN, json={"kind": "email", "value": EMAIL}
        )
        assert erasure.status_code == 202, erasure.json
        request_id = erasure.json["request_id"]
        done = wait_for(
            lambda: (
                (s := admin.get(f"/privacy/erasure/{request_id}", headers=ADMIN).json)["complete"]
                and s
            ),
            timeout=60,
            message="every service answered the erasure",
        )
        elapsed = time.monotonic() - started
        assert all(done["services"][s]["answered"] for s in done["services"])  # type: ignore[index]
        print(f"erasure complete in {elapsed:.2f}s")
        (tmp_path / "erasure-seconds.txt").write_text(f"{elapsed:.3f}\n")

        # A new event of the person is answered as usual and dropped.
        with make_engine(urls["intake"]).connect() as conn:
            rows_before = len(conn.execute(select(intake_outbox.c.id)).all())
        late = {**PERSON, "event": "Came Back", "properties": {}}
        assert _send(url, "/v1/track", late).status_code == 200
        with make_engine(urls["intake"]).connect() as conn:
            assert len(conn.execute(select(intake_outbox.c.id)).all()) == rows_before

    # The topics are replayed from the start by new groups, and the person's events are
    # not recognised as seen (their processed ids gone, as after pruning): only the
    # erased-people check stands between them and the stores. Retargeting forgets every
    # processed id (its traffic handling is idempotent by event id).
    with make_engine(urls["scoring"]).begin() as conn:
        conn.execute(delete(scoring_processed).where(scoring_processed.c.event_id.in_(theirs)))
    with make_engine(urls["retargeting"]).begin() as conn:
        conn.execute(delete(retargeting_processed))
    with _running(runners(uuid.uuid4().hex[:6]), relay()):

        def replayed() -> bool:
            with make_engine(urls["scoring"]).connect() as conn:
                return len(conn.execute(select(scoring_processed.c.event_id)).all()) >= 8

        wait_for(replayed, timeout=90, message="the traffic topic replayed")
        time.sleep(3)  # let the lead topic's replay reach retargeting too

    for name, metadata in stores:
        text = _everything(urls[name], metadata)
        found = [value for value in person_ids if value in text]
        assert found == [], f"{name} still holds {found}"
        assert BYSTANDER["userId"] in text, f"{name} lost the bystander"
    failed = intake.test_client().get("/admin/failed-events", headers=ADMIN)
    assert failed.status_code == 200
    assert not any(value in failed.text for value in person_ids)
    with make_engine(urls["scoring"]).connect() as conn:
        assert conn.scalar(select(Lead.id).where(Lead.email == "ada@example.com")) is not None
