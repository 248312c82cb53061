"""``funnel``: the operator's command-line tool (also ``python -m deploy.cli``).

Every command reads the same configuration as the services (each service's
``…Config.from_env()``, ``KafkaConfig.from_env``), so it works on ``make run``'s
defaults (SQLite under ``var/``, the embedded broker on 127.0.0.1:9092) and in production
through the environment. Secrets (write keys, tokens) are printed once and stored hashed.

Commands:

* ``keys create|rotate|list``: traffic-intake sources and their write keys. A rotated key
  stops working at once in the database; running intake processes cache lookups for
  ``INTAKE_SOURCE_CACHE_SECONDS`` (5 s) at most.
* ``accounts <service> add|list|rotate|revoke``: personal accounts and their tokens, the
  :func:`shared.accounts.cli` group of each service mounted as is.
* ``reps token|revoke REP_ID``: a sales rep's personal token (lead-scoring).
* ``topics create|list``: the registered topics on the broker (``ensure_topics``).
* ``rescore``: runs pending rescore jobs (after a rule-set change) to the end, with a
  progress bar; the consumer's timer does the same in the background, a slice at a time.
* ``replay``: sends up to ``--limit`` dead letters back to their source topics
  (:func:`shared.replay.replay`, consumer group ``funnel-deadletter-replay``, so
  ``python -m shared.replay`` and this continue each other), with progress.
* ``deliveries requeue``: puts campaign deliveries the dispatcher gave up on
  (``failed``) back in its queue with their attempts reset, at most ``--limit``.
* ``lag``: per consumer group, topic and partition: committed offset, end offset, lag.
* ``outbox``: per service and outbox table, rows not yet published and the oldest's age.

Failure modes: a malformed environment variable, a missing SQLite file (run
``python -m deploy.init`` or ``make run`` first), a database error, or a broker that does
not answer within ``--timeout`` seconds end the command with a one-line message and exit
status 1; bad arguments with status 2 (click's usage errors). Nothing is retried forever:
every loop is bounded in count and in time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from marshmallow import ValidationError
from sqlalchemy import Engine, Table, func, select, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.lead_scoring import models as scoring_models
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.handoff import rep_tokens
from services.member_retargeting import models as retargeting_models
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.delivery.dispatcher import QUEUED
from services.member_retargeting.delivery.status import FAILED
from services.traffic_intake import models as intake_models
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.schemas import SourceIn
from services.traffic_intake.sources import SourceError, create_source, rotate_key
from shared.accounts import cli as accounts_cli
from shared.audit import record as audit_record
from shared.config import ConfigError, Env, KafkaConfig
from shared.db import make_engine, make_sessionmaker, utcnow
from shared.kafka import broker_reachable, ensure_topics, make_consumer, make_producer
from shared.replay import REPLAY_GROUP, replay
from shared.topics import (
    DEADLETTER,
    LEAD_SCORING,
    MEMBER_RETARGETING,
    REGISTRY,
    TRAFFIC_INTAKE,
)

CLI_ACTOR = "cli"  # who the audit log says made a change from here
DEFAULT_TIMEOUT_S = 10.0


# ------------------------------------------------------------------------ services


@dataclass(frozen=True)
class Service:
    """What the tool needs of a service: its configuration, its accounts and audit
    tables, and the outboxes its processes relay (as its ``/metrics`` counts them)."""

    name: str
    load: Callable[[], Any]
    accounts: Table
    audit_log: Table
    outboxes: tuple[Table, ...]


SERVICES: dict[str, Service] = {
    TRAFFIC_INTAKE: Service(
        TRAFFIC_INTAKE,
        IntakeConfig.from_env,
        intake_models.accounts,
        intake_models.audit_log,
        (intake_models.outbox, intake_models.privacy_outbox),
    ),
    LEAD_SCORING: Service(
        LEAD_SCORING,
        ScoringConfig.from_env,
        scoring_models.accounts,
        scoring_models.audit_log,
        (scoring_models.outbox,),
    ),
    MEMBER_RETARGETING: Service(
        MEMBER_RETARGETING,
        RetargetingConfig.from_env,
        retargeting_models.accounts,
        retargeting_models.audit_log,
        (retargeting_models.outbox, retargeting_models.dispatcher_outbox),
    ),
}


def load_config(service: Service) -> Any:
    try:
        return service.load()
    except ConfigError as exc:
        raise click.ClickException(f"{service.name} configuration: {exc}") from exc


def open_engine(url: str) -> Engine:
    """An engine on an existing database. A SQLite file that is not there is an error
    (SQLite would otherwise create an empty one and every query would fail obscurely)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise click.ClickException(f"not a database URL: {exc}") from exc
    database = parsed.database
    on_disk = parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
    if on_disk and not Path(str(database)).is_file():
        raise click.ClickException(
            f"no database at {database}: run `python -m deploy.init` (or `make run`) first"
        )
    return make_engine(url)


def service_engine(service: Service) -> Engine:
    return open_engine(load_config(service).database_url)


def kafka_config() -> KafkaConfig:
    try:
        return KafkaConfig.from_env(Env())
    except ConfigError as exc:
        raise click.ClickException(f"Kafka configuration: {exc}") from exc


def require_broker(config: KafkaConfig, timeout_s: float) -> None:
    """Fail fast with a message when no broker accepts a connection: the Kafka clients
    would otherwise retry for their own (long) timeouts."""
    if not broker_reachable(config, timeout_s=min(timeout_s, 5.0)):
        raise click.ClickException(
            f"no Kafka broker reachable at {config.bootstrap_servers} "
            "(KAFKA_BOOTSTRAP_SERVERS; `make run` starts the embedded one)"
        )


def audit(
    conn: Connection | Session, service: Service, action: str, target: str, after: Any
) -> None:
    """A change made here goes into the service's audit log, as one made through its
    admin API would (secrets are never kept: :func:`shared.audit.plain`)."""
    audit_record(
        conn,
        service.audit_log,
        action=action,
        target=target,
        before=None,
        after=after,
        actor_role=CLI_ACTOR,
        actor=CLI_ACTOR,
    )


def reason(exc: BaseException) -> str:
    """One line for an error: the driver's message, without SQL or parameters."""
    original = getattr(exc, "orig", None)
    lines = str(original if original is not None else exc).strip().splitlines()
    text, name = (lines[0] if lines else ""), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


# ---------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table, columns as wide as their widest cell."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


# ------------------------------------------------------------------------- the group


class FunnelGroup(click.Group):
    """Turns the expected failures of any subcommand (database, broker, configuration)
    into a one-line message and exit status 1 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SQLAlchemyError as exc:
            raise click.ClickException(f"database error: {reason(exc)}") from exc
        except KafkaError as exc:
            raise click.ClickException(f"Kafka error: {reason(exc)}") from exc
        except ConfigError as exc:
            raise click.ClickException(f"configuration: {exc}") from exc


@click.group("funnel", cls=FunnelGroup)
def main() -> None:
    """Operate Funnel: keys, accounts, topics, rescoring, dead letters, deliveries,
    consumer lag and outboxes. Configuration comes from the environment, as for the
    services (unset: `make run`'s development defaults)."""


# ------------------------------------------------------------------------ write keys


@main.group("keys")
def keys() -> None:
    """Write keys of traffic-intake sources (shown once, stored hashed)."""


def _find_source(conn: Connection, source: str) -> Any:
    """A source by id or by name; ClickException when there is none."""
    t = intake_models.sources
    where = t.c.id == int(source) if source.isdigit() else t.c.name == source
    row = conn.execute(select(t).where(where)).first()
    if row is None:
        raise click.ClickException(f"no source {source!r}")
    return row


@keys.command("create")
@click.argument("name")
@click.option(
    "--kind", type=click.Choice(["server", "browser"]), default="server", show_default=True
)
@click.option("--origin", "origins", multiple=True, help="allowed web origin (browser sources)")
@click.option(
    "--rate-limit", type=float, default=None, help="events per second (default: intake's)"
)
def keys_create(name: str, kind: str, origins: tuple[str, ...], rate_limit: float | None) -> None:
    """Create source NAME and its write key (printed once)."""
    try:
        # The admin API's own input schema: the same limits and origin checks.
        data = SourceIn().load(
            {
                "name": name,
                "kind": kind,
                "allowed_origins": list(origins),
                "rate_limit_per_second": rate_limit,
            }
        )
    except ValidationError as exc:
        raise click.ClickException(f"invalid source: {exc.messages}") from exc
    service = SERVICES[TRAFFIC_INTAKE]
    try:
        with service_engine(service).begin() as conn:
            issued = create_source(
                conn,
                name=data["name"],
                kind=data["kind"],
                allowed_origins=data["allowed_origins"],
                rate_limit_per_second=data["rate_limit_per_second"],
            )
            source_id = issued.row.id
            audit(conn, service, "source.create", f"source:{source_id}", dict(issued.row._mapping))
    except SourceError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"source {source_id} {name!r} ({kind}): write key {issued.key}  (shown once)")


@keys.command("rotate")
@click.argument("source")
def keys_rotate(source: str) -> None:
    """Issue a new write key for SOURCE (id or name); the old one stops working."""
    service = SERVICES[TRAFFIC_INTAKE]
    try:
        with service_engine(service).begin() as conn:
            issued = rotate_key(conn, _find_source(conn, source).id)
            row = issued.row
            audit(conn, service, "source.rotate_key", f"source:{row.id}", {"id": row.id})
    except SourceError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"source {row.id} {row.name!r}: new write key {issued.key}  (shown once)")


@keys.command("list")
def keys_list() -> None:
    """Every source (never a key: only its last characters)."""
    t = intake_models.sources
    with service_engine(SERVICES[TRAFFIC_INTAKE]).connect() as conn:
        rows = conn.execute(select(t).order_by(t.c.id)).all()
    click.echo(
        table(
            ["id", "name", "kind", "enabled", "key ends", "rotated"],
            [(r.id, r.name, r.kind, r.enabled, r.key_hint, r.key_rotated_at) for r in rows],
        )
    )


# -------------------------------------------------------------------------- accounts


@main.group("accounts")
def accounts() -> None:
    """Personal accounts and tokens, per service: funnel accounts SERVICE add|list|…"""


ACCOUNT_HELP = {
    "add": "Create an account (admin or marketing); its token is printed once.",
    "list": "Every account and whether its token is active (never a token).",
    "rotate": "A new token for ACCOUNT_ID (printed once); the old one stops working.",
    "revoke": "Revoke ACCOUNT_ID's token: it can no longer sign in.",
}


def _mount_accounts(service: Service) -> click.Group:
    """The service's own ``accounts`` commands (shared.accounts.cli) under its name, its
    configuration loaded first (they read it from ``ctx.obj``)."""
    inner = accounts_cli(lambda config: open_engine(config.database_url), service.accounts)

    @click.group(service.name, help=f"Accounts of {service.name}.")
    @click.pass_context
    def group(ctx: click.Context) -> None:
        ctx.obj = {"config": load_config(service)}

    for name, command in inner.commands.items():
        command.help = command.help or ACCOUNT_HELP.get(name)
        group.add_command(command)
    return group


for _service in SERVICES.values():
    accounts.add_command(_mount_accounts(_service))


@main.group("reps")
def reps() -> None:
    """Sales reps' personal tokens (lead-scoring; reps are made through its admin API)."""


def _rep_sessions() -> sessionmaker[Session]:
    return make_sessionmaker(service_engine(SERVICES[LEAD_SCORING]))


@reps.command("token")
@click.argument("rep_id", type=int)
def reps_token(rep_id: int) -> None:
    """Issue REP_ID's token (printed once), replacing any earlier one."""
    with _rep_sessions().begin() as session:
        try:
            token = rep_tokens.issue(session, rep_id)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
        audit(session, SERVICES[LEAD_SCORING], "rep.token_issue", f"rep:{rep_id}", None)
    click.echo(f"rep {rep_id}: token {token}  (shown once)")


@reps.command("revoke")
@click.argument("rep_id", type=int)
def reps_revoke(rep_id: int) -> None:
    """Revoke REP_ID's token."""
    with _rep_sessions().begin() as session:
        if not rep_tokens.revoke(session, rep_id):
            raise click.ClickException(f"rep {rep_id} has no token")
        audit(session, SERVICES[LEAD_SCORING], "rep.token_revoke", f"rep:{rep_id}", None)
    click.echo(f"rep {rep_id}: token revoked")


# ---------------------------------------------------------------------------- topics

timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.5, max=600),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="seconds to wait for the broker",
)


@contextmanager
def admin_client(config: KafkaConfig, timeout_s: float) -> Iterator[KafkaAdminClient]:
    require_broker(config, timeout_s)
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id_prefix}-cli",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )
    try:
        yield admin
    finally:
        admin.close()


@main.group("topics")
def topics() -> None:
    """The registered topics (shared/topics.py) on the broker."""


def _topic_rows(admin: KafkaAdminClient) -> list[tuple[str, int | None, bool]]:
    """Each registered topic: its wanted partitions and whether the broker has it."""
    existing = set(admin.list_topics())
    return [(t.name, t.partitions, t.name in existing) for t in REGISTRY.values()]


@topics.command("create")
@timeout_option
def topics_create(timeout: float) -> None:
    """Create every registered topic that does not exist yet."""
    config = kafka_config()
    with admin_client(config, timeout) as admin:
        before = set(admin.list_topics())
    ensure_topics(config, timeout_s=timeout)
    with admin_client(config, timeout) as admin:
        rows = _topic_rows(admin)
    click.echo(
        table(
            ["topic", "partitions", "state"],
            [
                (name, parts, "exists" if name in before else "created" if there else "MISSING")
                for name, parts, there in rows
            ],
        )
    )
    if not all(there for _, _, there in rows):
        raise click.ClickException("some topics were not created")


@topics.command("list")
@timeout_option
def topics_list(timeout: float) -> None:
    """The registered topics and whether the broker has them."""
    with admin_client(kafka_config(), timeout) as admin:
        rows = _topic_rows(admin)
    click.echo(
        table(
            ["topic", "partitions", "on broker"],
            [(name, parts, "yes" if there else "no") for name, parts, there in rows],
        )
    )


# --------------------------------------------------------------------------- rescore


@main.command("rescore")
@click.option("--max-seconds", type=click.FloatRange(min=1), default=3600.0, show_default=True)
@click.option("--chunk", type=click.IntRange(1, 10_000), default=1000, show_default=True)
def rescore(max_seconds: float, chunk: int) -> None:
    """Run pending rescore jobs (after a rule-set change) to the end, with progress."""
    from services.lead_scoring.jobs.rescore import leads_to_rescore, rescore_all, unfinished_jobs
    from services.lead_scoring.rulesets.active import RuleSetCache

    config = load_config(SERVICES[LEAD_SCORING])
    sessions = make_sessionmaker(open_engine(config.database_url))
    rule_sets = RuleSetCache(config.base_model(), ttl=0)
    with sessions() as session:
        remaining = leads_to_rescore(session)
    with click.progressbar(length=max(1, remaining), label="rescoring leads") as bar:
        total = rescore_all(
            sessions,
            rule_sets,
            budget_s=5.0,
            chunk=chunk,
            max_seconds=max_seconds,
            on_progress=lambda done, _total: bar.update(done),
        )
    with sessions() as session:
        left = unfinished_jobs(session)
    if left:
        raise click.ClickException(
            f"{total} leads rescored; {left} job(s) still unfinished (run again)"
        )
    click.echo(f"done: {total} leads rescored")


# ---------------------------------------------------------------------------- replay


def _assigned(consumer: KafkaConsumer, topic: str, timeout_s: float) -> list[TopicPartition]:
    """Assign every partition of ``topic`` by hand. The group's committed offsets still
    say where to start and ``commit()`` still records progress, but no group join is
    needed (seconds to a minute on some brokers); so two replays must not run at once."""
    deadline = time.monotonic() + timeout_s
    parts = consumer.partitions_for_topic(topic)
    while not parts and time.monotonic() < deadline:  # metadata may lag a fresh client
        time.sleep(0.2)
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise click.ClickException(f"topic {topic} not found (run `funnel topics create`)")
    partitions = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(partitions)
    return partitions


@main.command("replay")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--source", help="only dead letters from this topic")
@click.option("--idle-seconds", type=click.FloatRange(0.5, 600), default=5.0, show_default=True)
@click.option("--max-seconds", type=click.FloatRange(1, 86_400), default=600.0, show_default=True)
@click.option("--group", default=REPLAY_GROUP, show_default=True, help="consumer group")
@timeout_option
def replay_command(
    limit: int,
    source: str | None,
    idle_seconds: float,
    max_seconds: float,
    group: str,
    timeout: float,
) -> None:
    """Replay up to LIMIT dead letters to the topics they came from, then exit.

    Letters from HTTP intake, from timers or from other sources than --source are
    skipped (and committed: use --source deliberately)."""
    if source is not None and source not in REGISTRY:
        raise click.BadParameter(f"not a registered topic: {source}", param_hint="--source")
    config = kafka_config()
    require_broker(config, timeout)
    consumer = make_consumer(config, group, [])
    producer = make_producer(config, "deadletter-replay")
    replayed = skipped = 0
    deadline = time.monotonic() + max_seconds
    try:
        _assigned(consumer, DEADLETTER, timeout)
        with click.progressbar(length=limit, label="replaying dead letters") as bar:
            # Slices of the shared replay, so progress shows between them.
            while replayed < limit and time.monotonic() < deadline:
                want = min(100, limit - replayed)
                report = replay(
                    consumer,
                    producer,
                    limit=want,
                    source=source,
                    idle_seconds=idle_seconds,
                    max_seconds=max(1.0, deadline - time.monotonic()),
                )
                replayed += report.replayed
                skipped += report.skipped
                bar.update(report.replayed)
                if report.replayed < want:  # idle or out of time: nothing more now
                    break
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=10)
    click.echo(f"replayed {replayed}, skipped {skipped}")


# ------------------------------------------------------------------------ deliveries


@main.group("deliveries")
def deliveries() -> None:
    """Campaign deliveries in the dispatcher's store (member-retargeting)."""


@dataclass(frozen=True)
class Requeued:
    ids: list[str]
    too_old: int


def requeue_failed(
    session: Session, *, limit: int, campaign: int | None, now: datetime, max_age: timedelta
) -> Requeued:
    """Put up to ``limit`` ``failed`` deliveries back as the dispatcher queues them:
    ``queued``, due now, no claim, attempts 0, not finished. Ones older than the
    dispatcher's max age are left alone (it would fail them again at once)."""
    d = retargeting_models.Delivery
    failed = d.status == FAILED
    if campaign is not None:
        failed = failed & (d.campaign_id == campaign)
    young = d.created_at >= now - max_age
    too_old = int(session.scalar(select(func.count()).select_from(d).where(failed, ~young)) or 0)
    ids = list(
        session.scalars(
            select(d.dispatch_id)
            .where(failed, young)
            .order_by(d.finished_at, d.dispatch_id)
            .limit(limit)
        )
    )
    if ids:
        session.execute(
            update(d)
            .where(d.dispatch_id.in_(ids), d.status == FAILED)  # still failed: not raced
            .values(
                status=QUEUED,
                attempts=0,
                next_attempt_at=now,
                claim=None,
                claimed_at=None,
                finished_at=None,
            )
        )
    return Requeued(ids, too_old)


@deliveries.command("requeue")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--campaign", type=int, default=None, help="only this campaign's deliveries")
def deliveries_requeue(limit: int, campaign: int | None) -> None:
    """Requeue deliveries the dispatcher gave up on (status failed), at most LIMIT.

    Bounced and suppressed ones stay: their address must not be mailed again. If one
    fails again, its campaign report keeps saying failed; if it is sent, it says sent."""
    service = SERVICES[MEMBER_RETARGETING]
    config = load_config(service)
    max_age = timedelta(hours=config.delivery.max_age_hours)
    sessions = make_sessionmaker(open_engine(config.database_url))
    with sessions.begin() as session:
        done = requeue_failed(
            session, limit=limit, campaign=campaign, now=utcnow(), max_age=max_age
        )
        if done.ids:
            target = f"campaign:{campaign}" if campaign is not None else "deliveries"
            audit(session, service, "delivery.requeue", target, {"dispatch_ids": done.ids})
    click.echo(f"requeued {len(done.ids)} failed deliveries")
    if done.too_old:
        click.echo(
            f"left {done.too_old} older than RETARGETING_DELIVERY_MAX_AGE_HOURS "
            f"({config.delivery.max_age_hours:g} h): the dispatcher would fail them again"
        )


# ------------------------------------------------------------------------------- lag


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


def consumer_groups() -> dict[str, list[str]]:
    """Each consumer group and the topics it reads, from the topic registry (a
    service's group id is its name: :func:`shared.runner.build_runner`), and the replay
    group on the dead letters (its lag: letters never replayed)."""
    groups: dict[str, list[str]] = {}
    for topic in REGISTRY.values():
        for group in topic.consumers:
            groups.setdefault(group, []).append(topic.name)
    groups[REPLAY_GROUP] = [DEADLETTER]
    return groups


def partition_lags(
    group: str,
    committed: dict[TopicPartition, int],
    beginnings: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
) -> list[PartitionLag]:
    """Lag per partition: end minus committed; with nothing committed, everything still
    on the partition (consumers start from the earliest offset)."""
    rows = []
    for tp in sorted(ends, key=lambda tp: (tp.topic, tp.partition)):
        done = committed.get(tp)
        start = done if done is not None else beginnings.get(tp, 0)
        rows.append(
            PartitionLag(group, tp.topic, tp.partition, done, ends[tp], max(0, ends[tp] - start))
        )
    return rows


def _offset_reader(config: KafkaConfig, timeout_s: float) -> KafkaConsumer:
    timeout_ms = int(timeout_s * 1000)
    return KafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id_prefix}-cli-lag",
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=max(timeout_ms, 1000),
        bootstrap_timeout_ms=timeout_ms,
    )


def group_lags(
    admin: KafkaAdminClient, reader: KafkaConsumer, group: str, topics: Iterable[str]
) -> list[PartitionLag]:
    offsets = admin.list_group_offsets({group: None}).get(group, {})
    committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    names = set(topics) | {tp.topic for tp in committed}
    partitions = [
        TopicPartition(name, p)
        for name in sorted(names)
        for p in sorted(reader.partitions_for_topic(name) or ())
    ]
    if not partitions:
        return []
    return partition_lags(
        group, committed, reader.beginning_offsets(partitions), reader.end_offsets(partitions)
    )


@main.command("lag")
@click.option("--group", "groups", multiple=True, help="only this group (repeatable; any group id)")
@click.option("--json", "as_json", is_flag=True, help="a JSON report")
@timeout_option
def lag(groups: tuple[str, ...], as_json: bool, timeout: float) -> None:
    """Per consumer group, topic and partition: committed offset, end offset and lag.

    (On the embedded development broker end offsets count record batches, so lag can
    read low by up to one batch; exact on Apache Kafka.)"""
    known = consumer_groups()
    wanted = {g: known.get(g, []) for g in groups} if groups else known
    config = kafka_config()
    rows: list[PartitionLag] = []
    with admin_client(config, timeout) as admin:
        reader = _offset_reader(config, timeout)
        try:
            for group, topics_read in wanted.items():
                rows.extend(group_lags(admin, reader, group, topics_read))
        finally:
            reader.close()
    if as_json:
        echo_json([asdict(r) for r in rows])
        return
    click.echo(
        table(
            ["group", "topic", "partition", "committed", "end", "lag"],
            [(r.group, r.topic, r.partition, r.committed, r.end, r.lag) for r in rows],
        )
    )
    totals: dict[str, int] = {}
    for r in rows:
        totals[r.group] = totals.get(r.group, 0) + r.lag
    for group, total in totals.items():
        click.echo(f"{group}: {total} behind")


# ---------------------------------------------------------------------------- outbox


@dataclass(frozen=True)
class OutboxDepth:
    service: str
    outbox: str
    unsent: int | None
    oldest_unsent: datetime | None = None
    error: str | None = None


def outbox_depths(service: str, engine: Engine, tables: Iterable[Table]) -> list[OutboxDepth]:
    """Rows each outbox has not published yet, and when the oldest of them was written."""
    out = []
    with engine.connect() as conn:
        for t in tables:
            unsent, oldest = conn.execute(
                select(func.count(), func.min(t.c.created_at)).where(t.c.sent_at.is_(None))
            ).one()
            out.append(OutboxDepth(service, t.name, int(unsent or 0), oldest))
    return out


def _service_depths(service: Service) -> list[OutboxDepth]:
    """A service's depths; a database that cannot be read is a row with its error, so
    the other services are still reported."""
    try:
        return outbox_depths(service.name, service_engine(service), service.outboxes)
    except (click.ClickException, SQLAlchemyError) as exc:
        text = exc.message if isinstance(exc, click.ClickException) else reason(exc)
        return [OutboxDepth(service.name, t.name, None, error=text) for t in service.outboxes]


def _age(oldest: datetime | None, now: datetime) -> str | None:
    if oldest is None:
        return None
    seconds = max(0, int((now - oldest.astimezone(UTC)).total_seconds()))
    return str(timedelta(seconds=seconds))


@main.command("outbox")
@click.option("--json", "as_json", is_flag=True, help="a JSON report")
def outbox(as_json: bool) -> None:
    """Outbox depth: rows each service has yet to publish, per outbox table."""
    rows = [depth for service in SERVICES.values() for depth in _service_depths(service)]
    now = utcnow()
    if as_json:
        echo_json([asdict(r) for r in rows])
    else:
        click.echo(
            table(
                ["service", "outbox", "unsent", "oldest unsent age", "error"],
                [
                    (r.service, r.outbox, r.unsent, _age(r.oldest_unsent, now), r.error)
                    for r in rows
                ],
            )
        )
    failed = sorted({r.service for r in rows if r.error})
    if failed:
        raise click.ClickException(f"could not read the outboxes of {', '.join(failed)}")


if __name__ == "__main__":
    main()
