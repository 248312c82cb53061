"""The two hot paths in one process, without Kafka, gunicorn or a load generator: where
the CPU goes, for whoever optimises them next (``make bench`` gives the real figures).

* ``intake``: 100-event batches posted to intake's app through Flask's test client
  (SQLite), beside the bare app's ``/validated/batch`` (the same events loaded with
  intake's call schemas and stored, nothing else; :mod:`bench.bare_app`). One request at a
  time, so group commit is off (it would have nothing to group): intake writes in the
  request's thread, as the reference does, and the profile sees the write. Their ratio is
  one client's throughput: how much intake does beyond validating and storing.
* ``scoring``: lead-scoring's ``BatchProcessor`` over plain records (the bench's page-view
  stream, 500 a batch) on a fresh SQLite database or the one given.

``python -m bench.inprocess intake|scoring [--database-url URL] [--profile [N]]`` prints
the rates (median of ``--repeats``), and with ``--profile`` the N costliest functions by
own time, from one more pass of the path alone (the rates are never profiled). Bounded: a
fixed number of batches per run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.consumers import traffic_stream
from bench.load import BATCH_BODY, json_headers
from services.lead_scoring.app import init_db as init_scoring_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import handlers
from services.lead_scoring.models import outbox, processed_events
from shared.db import make_engine, make_sessionmaker
from shared.events import encode
from shared.runner import BatchProcessor
from shared.topics import TRAFFIC

INTAKE_BATCHES = 200
SCORING_BATCHES, SCORING_BATCH_SIZE = 10, 500


# A run: one timed pass, given the profiler to switch on around its timed part (or None);
# returns events/s.
Run = Callable[[cProfile.Profile | None], float]


def _timed(events: int, work: Callable[[], object], profile: cProfile.Profile | None) -> float:
    if profile is not None:
        profile.enable()
    started = time.perf_counter()
    work()
    elapsed = time.perf_counter() - started
    if profile is not None:
        profile.disable()
    return events / elapsed


def intake_runs(work: Path) -> dict[str, Run]:
    os.environ.update(
        {
            "FUNNEL_WRITE_KEY": "inprocess",
            "TRAFFIC_INTAKE_DATABASE_URL": f"sqlite:///{work / 'intake.db'}",
            "BENCH_DURABLE_DATABASE_URL": f"sqlite:///{work / 'bare.db'}",
            "INTAKE_GROUP_COMMIT_MAX_ROWS": "0",
        }
    )
    from bench.bare_app import create_app as bare_app
    from services.traffic_intake.app import create_app, init_db

    init_db(make_engine(os.environ["TRAFFIC_INTAKE_DATABASE_URL"]))
    headers = json_headers("inprocess")
    clients = {"intake": create_app().test_client(), "validated": bare_app().test_client()}
    paths = {"intake": "/v1/batch", "validated": "/validated/batch"}

    def run(name: str) -> Run:
        def post_all() -> None:
            for _ in range(INTAKE_BATCHES):
                answer = clients[name].post(paths[name], data=BATCH_BODY, headers=headers)
                assert answer.status_code == 200, answer.get_data(as_text=True)

        return lambda profile: _timed(INTAKE_BATCHES * 100, post_all, profile)

    return {name: run(name) for name in clients}


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def scoring_runs(database_url: str) -> dict[str, Run]:
    engine = make_engine(database_url)
    init_scoring_db(engine)
    processor = BatchProcessor(
        consumer_name="lead-scoring",
        sessions=make_sessionmaker(engine),
        handlers=handlers(ScoringConfig(database_url=database_url)),
        processed_table=processed_events,
        outbox_table=outbox,
        validate_outgoing=False,
    )

    def apply_all(profile: cProfile.Profile | None) -> float:
        records = [
            _Record(TRAFFIC, 0, offset, event.partition_key.encode(), encode(event))
            for offset, event in enumerate(traffic_stream(SCORING_BATCHES * SCORING_BATCH_SIZE))
        ]  # encoded before the clock starts
        prepared = [
            records[start : start + SCORING_BATCH_SIZE]
            for start in range(0, len(records), SCORING_BATCH_SIZE)
        ]

        def process() -> None:
            for batch in prepared:
                result = processor.process(batch)
                assert result.applied == len(batch), "events failed: the rate would lie"

        return _timed(SCORING_BATCHES * SCORING_BATCH_SIZE, process, profile)

    return {"scoring": apply_all}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", choices=["intake", "scoring"])
    parser.add_argument("--database-url", help="scoring: default a fresh SQLite file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", nargs="?", type=int, const=30, default=0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="funnel-inprocess-"))
    if args.path == "intake":
        runs = intake_runs(work)
    else:
        runs = scoring_runs(args.database_url or f"sqlite:///{work / 'scoring.db'}")
    for run in runs.values():
        run(None)  # warm: imports, caches, the first writes of each table
    rates = {name: [run(None) for _ in range(args.repeats)] for name, run in runs.items()}
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, rate in medians.items():
        print(f"{name:<10} {rate:10.0f} events/s (median of {args.repeats})")
    if "validated" in medians:
        print(f"intake_vs_validated {medians['intake'] / medians['validated']:.3f}")
    if args.profile:
        profile = cProfile.Profile()
        runs[args.path](profile)  # the path itself, not the reference beside it
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
