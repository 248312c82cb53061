"""Scale-out: 1, 2 and 4 lead-scoring consumer processes in one group on PostgreSQL,
over the same stream, with every event applied exactly once.

* The stream is built once: ``events`` page and track events (docs and pricing views,
  capped "Product Added", once-only "Demo Requested", "Form Submitted" that makes MQLs)
  for ``events // 8`` distinct people, keyed by person, so they spread over the four
  partitions of ``funnel.traffic``. The same envelopes (ids and bytes) go into every run.
* Each run: a broker of its own (a fresh consumer group ``lead-scoring``, empty traffic,
  leads and dead-letter topics), a fresh PostgreSQL database, and N real processes
  ``python -m services.lead_scoring consume``: the production command, which takes its
  group id from no variable, so the fresh broker is what makes the group the run's own.
* Group formation stays out of the figure: the stream is published only once the group
  is ``Stable`` with all N members (DescribeGroups). With the stream on the topic before
  the processes start, the first member to join would apply much of it alone while the
  others are still joining (7 to 55 s on the embedded broker), so timing "from the first
  applied event" would mostly time one consumer.
* The timed, steady part runs from the moment the whole stream is on the topic (the
  publisher is done and off the CPU; the consumers are busy) until every event is
  applied; events/s = events applied in it / its length. "Applied" is a row in
  ``processed_events``, written in the transaction that changes the lead, before the
  offset commit; the count is sampled every 0.2 s.
* Exactness, per run: the processed ids are exactly the stream's; ``lead_events`` holds
  one row per event (none doubled, none lost); no (event, rule) award twice; each
  person's lead (score, stage, events, points) equals the first one-consumer run's; the
  dead-letter topic is empty; every process exits 0 on SIGTERM. A failure raises.
* A consumer process that exits during a run is started again, as its supervisor would
  (compose: ``restart: unless-stopped``), and counted; the run still has to be exact.
  Lead events published more than once on ``funnel.leads`` are counted too (consumers
  skip them by event id, but each outbox relay publishes every unsent row it reads).
* ``events`` defaults to 18,000: at the 1 to 1.5 k events/s applied here (2 cores, shared)
  that is 12 to 18 s of steady work per run, so the 0.2 s sampling stays near 1 %, and
  nine runs, each with its own group formation (4 to 11 s seen) and start-up, fit in
  about four minutes. More events would not change the figure, only the time.

Each run also reports the CPU its consumers and its PostgreSQL server processes used per
1,000 events (``/proc``, Linux), the cores the consumers got, and how busy the machine
was: on this 2-core machine, which also runs PostgreSQL, the broker and whatever else,
that tells a figure bounded by the consumers from one bounded by the cores, and gives a
per-core rate to size production with (:func:`production_shape`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from sqlalchemy import Engine, func, select, text

from services.lead_scoring.app import init_db
from services.lead_scoring.config import SERVICE
from services.lead_scoring.models import Identity, Lead, LeadEvent, ScoreEntry, processed_events
from shared.broker import EmbeddedBroker, free_port
from shared.config import Env, KafkaConfig
from shared.db import make_engine
from shared.events import encode, new_event
from shared.identity import ANONYMOUS_ID
from shared.kafka import ensure_topics, make_producer, read_from_start
from shared.processes import stop as stop_processes
from shared.topics import DEADLETTER, LEADS, REGISTRY, TRAFFIC

ROOT = Path(__file__).resolve().parents[1]
SCALEOUT_EVENTS = 18_000
EVENTS_PER_PERSON = 8
CONSUMERS = (1, 2, 4)
GROUP_WAIT_S = 90.0  # group formation on the embedded broker: 7 to 55 s seen
APPLY_WAIT_S = 120.0
MAX_RESTARTS = 5
SAMPLE_S = 0.2
DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

Row = tuple[str, float, str, str, float]
# What each person's lead came to: score, stage, events, points awarded.
Outcome = tuple[int, str, int, int]


def build_stream(events: int, people: int) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of ``events`` encoded traffic events for ``people`` people."""
    stream = []
    for i in range(events):
        person = f"scale-{i % people:06d}"
        step = i // people  # the how-many-th event of this person
        if step % 4 == 1:
            event = new_event(
                "page", {"properties": {"path": "/pricing"}}, source="web", anonymous_id=person
            )
        elif step % 4 == 3:
            name = ("Product Added", "Demo Requested", "Form Submitted")[(i // 7) % 3]
            properties = {"sku": f"SKU-{i % 97}", "price": 19.99} if name == "Product Added" else {}
            event = new_event(
                "track",
                {"event": name, "properties": properties},
                source="web",
                anonymous_id=person,
            )
        else:
            event = new_event(
                "page",
                {"properties": {"path": f"/docs/{i % 50}"}},
                source="web",
                anonymous_id=person,
            )
        stream.append((event.partition_key.encode(), encode(event)))
    return stream


class _Admin(KafkaAdminClient):
    """The embedded broker answers DescribeGroups with authorised-operation bits the
    client cannot name; the bench needs only the state and the members."""

    def _process_acl_operations(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.pop("authorized_operations", None)
        return obj


def wait_for_group(
    kafka: KafkaConfig, members: int, processes: Sequence[subprocess.Popen[bytes]]
) -> float:
    """Seconds until the group is ``Stable`` with ``members`` members; raises after
    :data:`GROUP_WAIT_S` or when a consumer process exits."""
    admin = _Admin(bootstrap_servers=kafka.bootstrap_servers, client_id="bench-scaleout")
    started = time.monotonic()
    try:
        while time.monotonic() - started < GROUP_WAIT_S:
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a consumer process exited while the group formed")
            try:
                group = admin.describe_groups([SERVICE])[SERVICE]
            except KafkaError:  # no coordinator yet: ask again
                group = {}
            if group.get("group_state") == "Stable" and len(group.get("members", [])) == members:
                return time.monotonic() - started
            time.sleep(0.25)
    finally:
        admin.close()
    raise RuntimeError(f"the group did not reach {members} stable members in {GROUP_WAIT_S:.0f}s")


def publish(kafka: KafkaConfig, stream: Sequence[tuple[bytes, bytes]]) -> None:
    """Put ``stream`` on the traffic topic as intake's relay does (idempotent, acks=all);
    raises unless every record was acknowledged."""
    producer = make_producer(kafka, "bench-scaleout")
    try:
        futures = [producer.send(TRAFFIC, key=key, value=value) for key, value in stream]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu(engine: Engine) -> dict[int, float]:
    """CPU so far of each server process serving this database (a local server only)."""
    with engine.connect() as conn:
        pids = conn.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).all()
    return {pid: _cpu_seconds(pid) for pid in pids}


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores so far, from ``/proc/stat``."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


@dataclass(frozen=True)
class _Sample:
    """Where a run stood at one moment: events applied, CPU used so far."""

    at: float
    applied: int
    consumer_cpu: float  # seconds, all consumer processes
    postgres_cpu: dict[int, float]  # seconds, per server process of the database
    rig_cpu: float  # seconds: the broker and this process (publisher, sampling)
    machine: tuple[float, float]  # (busy, total) jiffies

    @classmethod
    def take(
        cls,
        engine: Engine,
        processes: Sequence[subprocess.Popen[bytes]],
        broker_pid: int | None,
        applied: int | None = None,
    ) -> _Sample:
        at = time.monotonic()
        return cls(
            at=at,
            applied=_count(engine) if applied is None else applied,
            consumer_cpu=sum(_cpu_seconds(p.pid) for p in processes),
            postgres_cpu=_postgres_cpu(engine),
            rig_cpu=time.process_time() + (_cpu_seconds(broker_pid) if broker_pid else 0.0),
            machine=_machine_busy(),
        )


@dataclass
class Run:
    """One run: the steady part between two samples, and each person's lead after."""

    consumers: int
    group_s: float  # group formation, not timed
    first: _Sample  # the whole stream on the topic
    last: _Sample  # every event applied
    restarts: int  # consumer processes that exited and were started again
    lead_events: int  # distinct lead events published on funnel.leads
    lead_copies: int  # records beyond one per lead event (published more than once)
    outcomes: dict[str, Outcome] = field(default_factory=dict, repr=False)

    @property
    def steady_s(self) -> float:
        return max(self.last.at - self.first.at, SAMPLE_S)

    @property
    def applied(self) -> int:
        return max(self.last.applied - self.first.applied, 1)

    @property
    def rate(self) -> float:
        return self.applied / self.steady_s

    @property
    def cpu_per_1k(self) -> float:
        """Consumer CPU-seconds per 1,000 events (all N processes together)."""
        return 1000 * (self.last.consumer_cpu - self.first.consumer_cpu) / self.applied

    @property
    def postgres_cpu_per_1k(self) -> float:
        """PostgreSQL CPU-seconds per 1,000 events (its processes serving the database)."""
        used = sum(
            cpu - self.first.postgres_cpu.get(pid, 0.0)
            for pid, cpu in self.last.postgres_cpu.items()
        )
        return 1000 * used / self.applied

    @property
    def consumer_cores(self) -> float:
        """Cores the consumers used on average in the steady part."""
        return (self.last.consumer_cpu - self.first.consumer_cpu) / self.steady_s

    @property
    def machine_busy(self) -> float:
        """Fraction of the machine's CPU busy (anything, other work too) in the steady part."""
        busy = self.last.machine[0] - self.first.machine[0]
        return busy / max(self.last.machine[1] - self.first.machine[1], 1.0)

    @property
    def other_cores(self) -> float:
        """Cores busy with work outside this run (the machine's busy share less the
        consumers, their PostgreSQL processes, the broker and the bench itself)."""
        ours = (
            self.last.consumer_cpu
            - self.first.consumer_cpu
            + self.postgres_cpu_per_1k * self.applied / 1000
            + self.last.rig_cpu
            - self.first.rig_cpu
        )
        return max(self.machine_busy * (os.cpu_count() or 1) - ours / self.steady_s, 0.0)


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(processed_events)) or 0


def lead_outcomes(engine: Engine) -> dict[str, Outcome]:
    """Each person's lead (by anonymous id): score, stage, events, points awarded."""
    with engine.connect() as conn:
        events = dict(
            conn.execute(select(LeadEvent.lead_id, func.count()).group_by(LeadEvent.lead_id)).all()
        )
        points = dict(
            conn.execute(
                select(ScoreEntry.lead_id, func.sum(ScoreEntry.points)).group_by(ScoreEntry.lead_id)
            ).all()
        )
        return {
            person: (score, stage, events.get(lead_id, 0), int(points.get(lead_id, 0)))
            for person, lead_id, score, stage in conn.execute(
                select(Identity.value, Lead.id, Lead.score, Lead.stage)
                .join(Lead, Lead.id == Identity.lead_id)
                .where(Identity.kind == ANONYMOUS_ID)
            )
        }


def check_exact(engine: Engine, kafka: KafkaConfig, event_ids: set[str]) -> dict[str, Outcome]:
    """Raises unless every event of ``event_ids`` was applied exactly once (none lost,
    none doubled, none dead-lettered); returns :func:`lead_outcomes`."""
    with engine.connect() as conn:
        processed = set(conn.scalars(select(processed_events.c.event_id)))
        lead_events = conn.scalar(select(func.count()).select_from(LeadEvent)) or 0
        distinct = conn.scalar(select(func.count(func.distinct(LeadEvent.event_id)))) or 0
        doubled_awards = conn.scalar(
            select(func.count()).select_from(
                select(ScoreEntry.event_id, ScoreEntry.rule_id)
                .group_by(ScoreEntry.event_id, ScoreEntry.rule_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
    problems = []
    if processed != event_ids:
        problems.append(
            f"processed ids: {len(event_ids - processed)} lost, "
            f"{len(processed - event_ids)} not in the stream"
        )
    if lead_events != len(event_ids) or distinct != len(event_ids):
        problems.append(f"lead_events: {lead_events} rows, {distinct} distinct events")
    if doubled_awards:
        problems.append(f"{doubled_awards} (event, rule) awards given twice")
    dead = _topic_records(kafka, DEADLETTER)
    if dead:
        problems.append(f"{dead} dead letters")
    if problems:
        raise AssertionError("scale-out not exact: " + "; ".join(problems))
    return lead_outcomes(engine)


def _topic_records(kafka: KafkaConfig, topic: str) -> int:
    """Whether anything is on ``topic`` (an end offset: exact on Apache Kafka, a lower
    bound on the embedded broker, which counts by batch; 0 means empty on both)."""
    reader = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in range(REGISTRY[topic].partitions)]
        return sum(reader.end_offsets(parts).values())
    finally:
        reader.close()


def lead_event_copies(kafka: KafkaConfig, quiet_s: float = 1.0) -> tuple[int, int]:
    """(distinct lead events on ``funnel.leads``, records beyond one each): read from the
    start until nothing arrives for ``quiet_s``. Rows the relays had not sent when the
    consumers stopped stay in the outbox, so on a short run the first can be below the
    number of events."""
    reader = read_from_start(kafka, LEADS)
    try:
        seen: set[str] = set()
        records = 0
        while polled := reader.poll(timeout_ms=int(quiet_s * 1000), max_records=5000):
            for batch in polled.values():
                records += len(batch)
                seen.update(_event_id(r.value) for r in batch)
        return len(seen), records - len(seen)
    finally:
        reader.close()


def scale_run(
    stream: Sequence[tuple[bytes, bytes]],
    event_ids: set[str],
    consumers: int,
    database_url: str,
    work: Path,
) -> Run:
    """One run (see the module docstring)."""
    broker = EmbeddedBroker(free_port(), work / "broker.log").start()
    engine = make_engine(database_url)
    processes: list[subprocess.Popen[bytes]] = []
    log = (work / f"consumers-{consumers}.log").open("ab")
    try:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
        ensure_topics(kafka)
        init_db(engine)
        env = Env().as_dict()
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "LEAD_SCORING_DATABASE_URL": database_url,
                "FUNNEL_LOG_LEVEL": "WARNING",
                "FUNNEL_METRICS_PORT": "",  # N processes: none serves metrics
            }
        )

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "services.lead_scoring", "consume"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

        processes = [start() for _ in range(consumers)]
        group_s = wait_for_group(kafka, consumers, processes)
        publish(kafka, stream)
        total = len(stream)
        broker_pid = getattr(getattr(broker, "_process", None), "pid", None)
        first = _Sample.take(engine, processes, broker_pid)
        if first.applied > total // 2:
            raise RuntimeError("half the stream was applied while it was published: raise events")
        deadline = first.at + APPLY_WAIT_S
        exits: list[int] = []
        while (done := _count(engine)) < total:
            if time.monotonic() > deadline or len(exits) > MAX_RESTARTS:
                raise RuntimeError(
                    f"{consumers} consumers applied {done}/{total}, exits {exits}; see {log.name}"
                )
            for i, process in enumerate(processes):
                if (code := process.poll()) is not None:
                    # What the supervisor does (compose: restart: unless-stopped).
                    print(f"  a consumer exited with {code}: restarted; see {log.name}")
                    exits.append(code)
                    processes[i] = start()
            time.sleep(SAMPLE_S)
        last = _Sample.take(engine, processes, broker_pid, applied=done)
        codes = stop_processes(processes, 60)
        if any(codes):
            raise RuntimeError(f"consumers exited with {codes}; see {log.name}")
        outcomes = check_exact(engine, kafka, event_ids)
        published, copies = lead_event_copies(kafka)
        return Run(consumers, group_s, first, last, len(exits), published, copies, outcomes)
    finally:
        stop_processes(processes, 0)  # after a failure: whatever still runs
        log.close()
        engine.dispose()
        broker.stop()


def scaleout_rows(
    repeats: int,
    postgres: AbstractContextManager[Iterator[str] | None] | None = None,
    *,
    events: int = SCALEOUT_EVENTS,
    consumers: Sequence[int] = CONSUMERS,
    work: Path | None = None,
    runs: list[Run] | None = None,
) -> list[Row]:
    """``scoring_postgres_<N>_consumers`` (events/s, median of ``repeats`` runs) for each
    N in ``consumers``, against the one-consumer median (ratio = speed-up). ``postgres``
    yields fresh database URLs (:func:`bench.__main__.temporary_postgres`; default: that
    on ``FUNNEL_BENCH_POSTGRES_URL`` or the local server); no rows, with a note, when it
    is unreachable. Every run is checked exact (raises otherwise); ``runs``, when given,
    receives each run's details."""
    if postgres is None:
        from bench.__main__ import temporary_postgres

        admin_url = Env().text("FUNNEL_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
        postgres = temporary_postgres(admin_url)
    own_work = work is None
    work = work or Path(tempfile.mkdtemp(prefix="funnel-scaleout-"))
    stream = build_stream(events, max(1, events // EVENTS_PER_PERSON))
    event_ids = {_event_id(value) for _, value in stream}
    done: list[Run] = [] if runs is None else runs
    reference: dict[str, Outcome] | None = None
    with postgres as urls:
        if urls is None:
            print("PostgreSQL unreachable: scoring_postgres_N_consumers not measured")
            return []
        # Interleaved (1, 2, 4, 1, 2, 4, …): drift on a shared machine hits every N alike.
        for _ in range(repeats):
            for n in consumers:
                run = scale_run(stream, event_ids, n, next(urls), work)
                if reference is None:
                    reference = run.outcomes
                elif run.outcomes != reference:
                    differ = sum(1 for p in reference if run.outcomes.get(p) != reference[p]) + len(
                        run.outcomes.keys() - reference.keys()
                    )
                    raise AssertionError(f"{n} consumers: {differ} people's leads differ")
                done.append(run)
                print(
                    f"  {n} consumer(s): {run.rate:7.0f} events/s over {run.steady_s:5.1f}s "
                    f"(group formed in {run.group_s:4.1f}s; CPU-s per 1k events: consumers "
                    f"{run.cpu_per_1k:.2f}, PostgreSQL {run.postgres_cpu_per_1k:.2f}; "
                    f"consumers used {run.consumer_cores:.2f} cores, machine "
                    f"{100 * run.machine_busy:3.0f}% busy, {run.other_cores:.2f} cores "
                    f"on other work; {run.restarts} restarts; lead events published "
                    f"{run.lead_events}, {run.lead_copies} extra copies)",
                    flush=True,
                )
    if own_work:  # kept when a run failed: its consumers' log is named in the error
        shutil.rmtree(work, ignore_errors=True)
    medians = {n: statistics.median(r.rate for r in done if r.consumers == n) for n in consumers}
    base = medians[consumers[0]]
    return [(_name(n), medians[n], "events/s", _name(consumers[0]), base) for n in consumers]


def _name(consumers: int) -> str:
    return f"scoring_postgres_{consumers}_consumers"


def _event_id(value: bytes) -> str:
    return str(json.loads(value)["event_id"])


def production_shape(runs: Sequence[Run], targets: Sequence[int] = (1_000, 5_000, 20_000)) -> str:
    """What the runs imply for sizing, as text: events/s per consumer and speed-up per N,
    CPU per 1,000 events (consumers, PostgreSQL), the partitions N consumers need, and
    what some rates need. Sizing uses the costliest CPU per event seen at any N."""
    by_n: dict[int, list[Run]] = {}
    for run in runs:
        by_n.setdefault(run.consumers, []).append(run)
    one = statistics.median(r.rate for r in by_n[min(by_n)])
    partitions = REGISTRY[TRAFFIC].partitions
    lines = [f"cores here: {os.cpu_count()}; funnel.traffic partitions: {partitions}"]
    consumer_cost, postgres_cost = 0.0, 0.0
    for n, group in sorted(by_n.items()):
        rate = statistics.median(r.rate for r in group)
        # A restarted process's CPU is lost with it: costs from runs without restarts.
        clean = [r for r in group if not r.restarts] or group
        cost = statistics.median(r.cpu_per_1k for r in clean) / 1000
        pg_cost = statistics.median(r.postgres_cpu_per_1k for r in clean) / 1000
        consumer_cost, postgres_cost = max(consumer_cost, cost), max(postgres_cost, pg_cost)
        cores = statistics.median(r.consumer_cores for r in group)
        busy = statistics.median(r.machine_busy for r in group)
        others = statistics.median(r.other_cores for r in group)
        lines.append(
            f"{n} consumer(s): {rate:.0f} events/s, {rate / n:.0f} per consumer, speed-up "
            f"{rate / one:.2f} (ideal {n}); consumers used {cores:.2f} cores, machine "
            f"{100 * busy:.0f}% busy ({others:.2f} cores on other work); CPU-ms per event: "
            f"consumers {1000 * cost:.2f}, "
            f"PostgreSQL {1000 * pg_cost:.2f}; needs >= {n} partitions; consumer restarts "
            f"{sum(r.restarts for r in group)}, lead events published twice or more: "
            f"{sum(r.lead_copies for r in group)} extra copies in {len(group)} runs"
        )
    if consumer_cost <= 0:
        return "\n".join(lines)
    per_core = 1 / consumer_cost
    lines.append(
        f"one consumer process on a core of its own: ~{per_core:.0f} events/s; PostgreSQL: "
        f"~{1 / postgres_cost if postgres_cost else float('inf'):.0f} events/s per core"
    )
    for target in targets:
        n = math.ceil(target / per_core / 0.7)
        lines.append(
            f"for {target:,} events/s at 70% load: {n} consumer processes (a core each), "
            f"{max(n, partitions)} partitions, {target * postgres_cost / 0.7:.1f} PostgreSQL "
            "cores for the scoring writes"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=SCALEOUT_EVENTS)
    args = parser.parse_args(argv)
    runs: list[Run] = []
    started = time.monotonic()
    rows = scaleout_rows(args.repeats, events=args.events, runs=runs)
    for name, value, unit, base_name, base in rows:
        print(f"{name:32} {value:8.0f} {unit}  vs {base_name} {base:.0f}: x{value / base:.2f}")
    if runs:
        print(production_shape(runs))
    print(f"took {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
