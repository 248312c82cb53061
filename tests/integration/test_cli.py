"""The ``funnel`` operator tool (deploy/cli.py) against real SQLite databases (one per
service, as ``make run`` lays them out under ``FUNNEL_VAR_DIR``) and a real embedded
broker of this module's own (its topics hold only what these tests write, so offsets are
exact). Consumer offsets are committed by hand with assigned consumers: no group joins."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from sqlalchemy import Engine, Table, insert, select

from deploy.cli import main
from services.lead_scoring import models as scoring
from services.lead_scoring.app import init_db as init_scoring
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import handlers as scoring_handlers
from services.lead_scoring.handoff import rep_tokens
from services.lead_scoring.rulesets.documents import create_rule_set, document_from_model
from services.member_retargeting import models as retargeting
from services.member_retargeting.app import init_db as init_retargeting
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.delivery.dispatcher import Dispatcher
from services.traffic_intake import models as intake
from services.traffic_intake.app import init_db as init_intake
from services.traffic_intake.sources import SourceDirectory
from shared import accounts as shared_accounts
from shared.broker import EmbeddedBroker, free_port
from shared.config import KafkaConfig
from shared.db import make_engine, make_sessionmaker, utcnow
from shared.events import encode, new_event
from shared.kafka import ensure_topics, make_producer, read_from_start
from shared.runner import BatchProcessor
from shared.topics import DEADLETTER, LEADS, REGISTRY, TRAFFIC
from tests.helpers import FakeRecord

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaConfig]:
    embedded = EmbeddedBroker(free_port(), tmp_path_factory.mktemp("cli") / "broker.log")
    embedded.start()
    config = KafkaConfig(bootstrap_servers=embedded.bootstrap_servers)
    ensure_topics(config)
    try:
        yield config
    finally:
        embedded.stop()


def service_env(var_dir: Path, bootstrap: str) -> dict[str, str]:
    return {
        "FUNNEL_ENV": "development",
        "FUNNEL_VAR_DIR": str(var_dir),
        "TRAFFIC_INTAKE_DATABASE_URL": f"sqlite:///{var_dir / 'traffic_intake.db'}",
        "LEAD_SCORING_DATABASE_URL": f"sqlite:///{var_dir / 'lead_scoring.db'}",
        "MEMBER_RETARGETING_DATABASE_URL": f"sqlite:///{var_dir / 'member_retargeting.db'}",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
    }


@pytest.fixture
def env(tmp_path: Path, broker: KafkaConfig) -> dict[str, str]:
    """Every service's database made (as ``deploy.init`` makes them), the broker set."""
    values = service_env(tmp_path, broker.bootstrap_servers)
    for name, init in (
        ("TRAFFIC_INTAKE", init_intake),
        ("LEAD_SCORING", init_scoring),
        ("MEMBER_RETARGETING", init_retargeting),
    ):
        init(make_engine(values[f"{name}_DATABASE_URL"]))
    return values


def run(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    # An expected failure is a message and an exit status, never a traceback.
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(env: dict[str, str], *args: str) -> str:
    result = run(env, *args)
    assert result.exit_code == 0, result.output
    return result.output


def engine_of(env: dict[str, str], service: str) -> Engine:
    return make_engine(env[f"{service}_DATABASE_URL"])


# ------------------------------------------------------------------------ write keys


def test_a_write_key_is_created_and_rotated(env: dict[str, str]) -> None:
    created = ok(env, "keys", "create", "shop")
    first = re.search(r"write key (wk_\S+)", created).group(1)  # type: ignore[union-attr]
    engine = engine_of(env, "TRAFFIC_INTAKE")
    # ttl=0: every lookup reads the database, as a running intake does past its cache.
    directory = SourceDirectory(engine, (), "web", ttl=0)
    found = directory.lookup(first)
    assert found is not None and (found.name, found.kind, found.enabled) == ("shop", "server", True)

    rotated = ok(env, "keys", "rotate", "shop")
    second = re.search(r"new write key (wk_\S+)", rotated).group(1)  # type: ignore[union-attr]
    assert second != first
    assert directory.lookup(first) is None
    assert directory.lookup(second) is not None

    listing = ok(env, "keys", "list")
    assert "shop" in listing and second[-4:] in listing and second not in listing
    with engine.connect() as conn:
        log = conn.execute(select(intake.audit_log).order_by(intake.audit_log.c.id)).all()
    assert [(e.action, e.actor) for e in log] == [
        ("source.create", "cli"),
        ("source.rotate_key", "cli"),
    ]
    assert first not in json.dumps([e.after for e in log])  # keys never reach the log

    taken = run(env, "keys", "create", "shop")
    assert taken.exit_code == 1 and "a source named 'shop' exists" in taken.output
    no_origin = run(env, "keys", "create", "site", "--kind", "browser")
    assert no_origin.exit_code == 1 and "needs at least one" in no_origin.output
    browser = ok(
        env, "keys", "create", "site", "--kind", "browser", "--origin", "https://a.example"
    )
    key = re.search(r"write key (wk_\S+)", browser).group(1)  # type: ignore[union-attr]
    source = directory.lookup(key)
    assert source is not None and source.origins == frozenset({"https://a.example"})
    assert run(env, "keys", "rotate", "nope").exit_code == 1


# -------------------------------------------------------------------------- accounts


@pytest.mark.parametrize(
    ("service", "variable", "table"),
    [
        ("traffic-intake", "TRAFFIC_INTAKE", intake.accounts),
        ("lead-scoring", "LEAD_SCORING", scoring.accounts),
        ("member-retargeting", "MEMBER_RETARGETING", retargeting.accounts),
    ],
)
def test_account_tokens_are_created_and_rotated_per_service(
    env: dict[str, str], service: str, variable: str, table: Table
) -> None:
    added = ok(
        env,
        "accounts",
        service,
        "add",
        "--name",
        "Ann",
        "--email",
        "ann@corp.example",
        "--role",
        "admin",
    )
    account_id, token = re.search(r"account (\d+) \(admin\): token (\S+)", added).groups()  # type: ignore[union-attr]
    engine = engine_of(env, variable)
    with engine.connect() as conn:
        who = shared_accounts.principal(conn, table, token)
    assert who is not None and (who.role, who.name) == ("admin", "Ann")

    rotated = ok(env, "accounts", service, "rotate", account_id)
    new = re.search(r"new token (\S+)", rotated).group(1)  # type: ignore[union-attr]
    with engine.connect() as conn:
        assert shared_accounts.principal(conn, table, token) is None
        assert shared_accounts.principal(conn, table, new) is not None
    assert "ann@corp.example\tactive" in ok(env, "accounts", service, "list")
    missing = run(env, "accounts", service, "rotate", "999")
    assert missing.exit_code == 1 and "no account 999" in missing.output


def test_a_rep_token_is_issued_replaced_and_revoked(env: dict[str, str]) -> None:
    sessions = make_sessionmaker(engine_of(env, "LEAD_SCORING"))
    with sessions.begin() as session:
        rep = scoring.Rep(name="Rita", email="rita@corp.example")
        session.add(rep)
        session.flush()
        rep_id = rep.id
    first = re.search(r"token (\S+)", ok(env, "reps", "token", str(rep_id))).group(1)  # type: ignore[union-attr]
    second = re.search(r"token (\S+)", ok(env, "reps", "token", str(rep_id))).group(1)  # type: ignore[union-attr]
    with sessions() as session:
        assert rep_tokens.principal(session, first) is None
        found = rep_tokens.principal(session, second)
        assert found is not None and found.person_id == rep_id
    ok(env, "reps", "revoke", str(rep_id))
    with sessions() as session:
        assert rep_tokens.principal(session, second) is None
    assert run(env, "reps", "token", "999").exit_code == 1


# ---------------------------------------------------------------------------- topics


def test_topics_are_created_on_a_broker_without_them(tmp_path: Path) -> None:
    fresh = EmbeddedBroker(free_port(), tmp_path / "broker.log").start()
    env = service_env(tmp_path, fresh.bootstrap_servers)
    try:
        assert "funnel.traffic     4           no" in ok(env, "topics", "list")
        created = ok(env, "topics", "create")
        assert all(f"{name} " in created for name in REGISTRY) and "created" in created
        admin = KafkaAdminClient(bootstrap_servers=fresh.bootstrap_servers)
        reader = KafkaConsumer(bootstrap_servers=fresh.bootstrap_servers)
        try:
            assert set(REGISTRY) <= set(admin.list_topics())
            for topic in REGISTRY.values():
                assert len(reader.partitions_for_topic(topic.name) or ()) == topic.partitions
        finally:
            admin.close()
            reader.close()
        again = ok(env, "topics", "create")
        assert "created" not in again and again.count("exists") == len(REGISTRY)
    finally:
        fresh.stop()


def test_an_unreachable_broker_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    env = service_env(tmp_path, f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    for command in (["lag"], ["topics", "create"], ["replay"]):
        result = run(env, *command, "--timeout", "1")
        assert result.exit_code == 1
        assert "no Kafka broker reachable at 127.0.0.1:" in result.output
    assert time.monotonic() - started < 15


# ---------------------------------------------------------------------------- outbox


def test_outbox_depth_counts_unsent_rows(env: dict[str, str]) -> None:
    now = utcnow()

    def rows(count: int, sent: bool) -> list[dict]:
        return [
            {
                "event_id": uuid.uuid4().hex,
                "topic": TRAFFIC,
                "key": "k",
                "value": b"{}",
                "created_at": now - timedelta(minutes=5),
                "sent_at": now if sent else None,
            }
            for _ in range(count)
        ]

    with engine_of(env, "TRAFFIC_INTAKE").begin() as conn:
        conn.execute(insert(intake.outbox), rows(3, sent=False) + rows(2, sent=True))
    with engine_of(env, "MEMBER_RETARGETING").begin() as conn:
        conn.execute(insert(retargeting.dispatcher_outbox), rows(1, sent=False))

    report = json.loads(ok(env, "outbox", "--json"))
    depths = {(r["service"], r["outbox"]): r["unsent"] for r in report}
    assert depths == {
        ("traffic-intake", "outbox"): 3,
        ("traffic-intake", "privacy_outbox"): 0,
        ("lead-scoring", "outbox"): 0,
        ("member-retargeting", "outbox"): 0,
        ("member-retargeting", "dispatcher_outbox"): 1,
    }
    assert "traffic-intake      outbox             3       0:05:" in ok(env, "outbox")

    Path(env["LEAD_SCORING_DATABASE_URL"].removeprefix("sqlite:///")).unlink()
    broken = run(env, "outbox")
    assert broken.exit_code == 1
    assert (
        "no database at" in broken.output
        and "could not read the outboxes of lead-scoring" in broken.output
    )
    assert "traffic-intake      outbox             3" in broken.output  # the others still shown


# ------------------------------------------------------------------------------- lag


def test_lag_is_the_end_offset_minus_the_committed_one(
    env: dict[str, str], broker: KafkaConfig
) -> None:
    group = f"cli-lag-{uuid.uuid4().hex[:8]}"
    producer = make_producer(broker, "cli-lag-test")
    try:
        for i in range(7):  # one batch each: the embedded broker's ends count batches
            producer.send(LEADS, key=b"lead", value=f"{i}".encode(), partition=0)
            producer.flush()
    finally:
        producer.close()
    committer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    partition = TopicPartition(LEADS, 0)
    try:
        committer.assign([partition])
        committer.commit({partition: OffsetAndMetadata(3, "", -1)})
    finally:
        committer.close()

    report = json.loads(ok(env, "lag", "--json", "--group", group))
    assert [r for r in report if r["partition"] == 0] == [
        {"group": group, "topic": LEADS, "partition": 0, "committed": 3, "end": 7, "lag": 4}
    ]
    assert {r["lag"] for r in report if r["partition"] != 0} == {0}
    text = ok(env, "lag", "--group", group, "--group", "member-retargeting")
    assert f"{group}: 4 behind" in text
    # member-retargeting reads the leads topic and has committed nothing: all 7 ahead.
    assert re.search(rf"member-retargeting\s+{re.escape(LEADS)}\s+0\s+-\s+7\s+7", text)


# ---------------------------------------------------------------------------- replay


def test_replay_sends_a_dead_letter_back_to_its_topic(
    env: dict[str, str], broker: KafkaConfig
) -> None:
    marker = uuid.uuid4().hex.encode()
    producer = make_producer(broker, "cli-replay-test")
    try:
        letter = [("dlq.source", TRAFFIC.encode()), ("dlq.partition", b"0"), ("dlq.offset", b"9")]
        producer.send(DEADLETTER, key=marker, value=b'{"fixed": true}', headers=letter)
        producer.send(
            DEADLETTER, key=marker, value=b"raw", headers=[("dlq.source", b"http:/v1/track")]
        )
        producer.flush()
    finally:
        producer.close()
    group = f"cli-replay-{uuid.uuid4().hex[:8]}"
    args = ("replay", "--limit", "10", "--idle-seconds", "1.5", "--group", group)
    assert "replayed 1, skipped 1" in ok(env, *args)
    assert "replayed 0, skipped 0" in ok(env, *args)  # committed: a second run goes on from there

    reader = read_from_start(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), TRAFFIC)
    try:
        found: list[bytes] = []
        deadline = time.monotonic() + 15
        while not found and time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=300).values():
                found += [r.value for r in records if r.key == marker]
    finally:
        reader.close()
    assert found == [b'{"fixed": true}']


# ------------------------------------------------------------------------ deliveries


def test_requeue_puts_failed_deliveries_back_where_the_dispatcher_claims_them(
    env: dict[str, str],
) -> None:
    now = utcnow()
    sessions = make_sessionmaker(engine_of(env, "MEMBER_RETARGETING"))

    def delivery(dispatch_id: str, status: str, campaign: int, age_hours: float = 1) -> dict:
        return {
            "dispatch_id": dispatch_id,
            "channel": "email",
            "campaign_id": campaign,
            "run_id": 1,
            "contact_id": "P00001",
            "payload": {
                "email": "p1@example.com",
                "campaign_id": campaign,
                "run_id": 1,
                "contact_id": "P00001",
                "channel": "email",
            },
            "status": status,
            "attempts": 10,
            "next_attempt_at": now - timedelta(hours=age_hours),
            "claim": "old-claim",
            "claimed_at": now - timedelta(hours=age_hours),
            "last_error": "550 refused",
            "created_at": now - timedelta(hours=age_hours),
            "finished_at": now - timedelta(minutes=30),
        }

    with sessions.begin() as session:
        session.execute(
            insert(retargeting.Delivery),
            [
                delivery("a", "failed", 1),
                delivery("b", "failed", 1),
                delivery("c", "failed", 2),
                delivery("stale", "failed", 2, age_hours=100),  # past the 72 h max age
                delivery("bounced", "bounced", 1),
                delivery("sent", "sent", 1),
            ],
        )

    def statuses() -> dict[str, tuple[str, int]]:
        with sessions() as session:
            rows = session.execute(select(retargeting.Delivery)).scalars()
            return {d.dispatch_id: (d.status, d.attempts) for d in rows}

    assert "requeued 1 failed deliveries" in ok(
        env, "deliveries", "requeue", "--campaign", "1", "--limit", "1"
    )
    first = {k for k, v in statuses().items() if v == ("queued", 0)}
    assert len(first) == 1 and first <= {"a", "b"}

    output = ok(env, "deliveries", "requeue", "--limit", "10")
    assert "requeued 2 failed deliveries" in output and "left 1 older than" in output
    assert statuses() == {
        "a": ("queued", 0),
        "b": ("queued", 0),
        "c": ("queued", 0),
        "stale": ("failed", 10),
        "bounced": ("bounced", 10),
        "sent": ("sent", 10),
    }
    with sessions() as session:
        row = session.get(retargeting.Delivery, "c")
        assert row is not None and row.claim is None and row.finished_at is None
    # The real dispatcher's claim takes exactly the requeued ones, counting an attempt.
    dispatcher = Dispatcher(
        sessions, RetargetingConfig(database_url=env["MEMBER_RETARGETING_DATABASE_URL"])
    )
    token, claimed = dispatcher.claim("email", 10)
    assert sorted(claimed) == ["a", "b", "c"]
    assert statuses()["a"] == ("sending", 1)
    with sessions() as session:
        actions = session.scalars(select(retargeting.audit_log.c.action)).all()
    assert actions == ["delivery.requeue", "delivery.requeue"]

    # Sent, then bounced (failed again), requeued and sent again: the second sending is
    # a status event of its own (the first one's id would drop it as a duplicate).
    def send(token: str) -> None:
        with sessions() as session:
            row = session.get(retargeting.Delivery, "a")
        assert row is not None and dispatcher._mark_sent(row, token, "250 accepted")

    send(token)
    with sessions.begin() as session:
        row = session.get(retargeting.Delivery, "a")
        assert row is not None
        row.status, row.finished_at = "failed", utcnow()
    ok(env, "deliveries", "requeue", "--limit", "10")
    token, claimed = dispatcher.claim("email", 10)
    assert "a" in claimed and statuses()["a"] == ("sending", 1)  # attempts started over
    send(token)
    with sessions() as session:
        sent = [
            json.loads(value)
            for value in session.scalars(select(retargeting.dispatcher_outbox.c.value))
        ]
    ids = [e["event_id"] for e in sent if e["payload"]["dispatch_id"] == "a"]
    assert len(ids) == 2 and len(set(ids)) == 2


# --------------------------------------------------------------------------- rescore


def test_rescore_runs_the_pending_job_to_the_end(env: dict[str, str]) -> None:
    url = env["LEAD_SCORING_DATABASE_URL"]
    sessions = make_sessionmaker(make_engine(url))
    processor = BatchProcessor(
        consumer_name="lead-scoring",
        sessions=sessions,
        handlers=scoring_handlers(ScoringConfig(database_url=url)),
        processed_table=scoring.processed_events,
        outbox_table=scoring.outbox,
    )
    records = []
    for offset, user in enumerate(("ann", "bob", "cy")):
        event = new_event(
            "identify", {"traits": {"email": f"{user}@x.co"}}, source="w", user_id=user
        )
        records.append(FakeRecord(TRAFFIC, 0, offset, user.encode(), encode(event)))
    processor.process(records)
    with sessions.begin() as session:
        job = create_rule_set(
            session, document_from_model(ScoringConfig(database_url=url).base_model()), "cli"
        )
        version = job.version
    assert "done: 3 leads rescored" in ok(env, "rescore")
    with sessions() as session:
        versions = set(session.scalars(select(scoring.Lead.rules_version)))
        job_status = session.scalar(select(scoring.RescoreJob.status))
    assert versions == {version} and job_status == "done"
    assert "done: 0 leads rescored" in ok(env, "rescore")
