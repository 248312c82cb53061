"""Prometheus metrics (prometheus-client), named here once for every service.

Every API serves ``GET /metrics`` to the admin role and the scrape-only
``FUNNEL_METRICS_TOKEN`` (:func:`install_metrics`). Under gunicorn's several
workers (and beside a service's consumer, relay, scheduler and dispatcher processes on the
same host, as ``make run`` starts them), ``PROMETHEUS_MULTIPROC_DIR`` points all of a
service's processes at one directory and ``/metrics`` adds them up (the client library's
multiprocess mode; gunicorn's ``child_exit`` hook marks dead workers). A process of its
own elsewhere (a container) serves its metrics on ``FUNNEL_METRICS_PORT`` when set
(:func:`serve_process_metrics`).

Gauges that are counts in a database (outbox depth) are read when scraped, not kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, Table
from sqlalchemy.exc import SQLAlchemyError

from shared.http import require_role
from shared.outbox import unsent

log = logging.getLogger(__name__)

INTAKE_ACCEPTED = Counter(
    "funnel_intake_events_accepted_total", "Events intake accepted (new ones)", ["source"]
)
INTAKE_DUPLICATES = Counter(
    "funnel_intake_events_duplicate_total", "Events intake had already (by messageId)", ["source"]
)
INTAKE_REJECTED = Counter(
    "funnel_intake_events_rejected_total", "Events intake rejected", ["source", "reason"]
)
CONSUMED = Counter(
    "funnel_consumer_events_total",
    "Events a consumer handled, by outcome",
    ["consumer", "outcome"],  # applied | duplicate | dead_letter
)
DEAD_LETTERS = Counter("funnel_dead_letters_total", "Messages dead-lettered", ["consumer", "kind"])
BATCH_SECONDS = Histogram(
    "funnel_consumer_batch_seconds",
    "Time to apply one polled batch (decode, handlers, commit)",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "funnel_consumer_lag",
    "Messages behind the partition's end, as the consumer last saw it",
    ["consumer", "topic", "partition"],
    multiprocess_mode="max",
)
DISPATCHES = Counter(
    "funnel_campaign_dispatches_total",
    "Campaign deliveries by channel and status",
    ["channel", "status"],
)
RECEIPTS = Counter(
    "funnel_delivery_receipts_total",
    "Providers' delivery receipts taken, by channel, receipt status and what it became",
    ["channel", "receipt", "recorded"],  # a delivery status, "nothing" or "refused" (409)
)


def record_batch(consumer: str) -> Callable[[Any], None]:
    """The runner's ``on_batch`` hook for ``consumer``."""

    def hook(result: Any) -> None:
        BATCH_SECONDS.labels(consumer).observe(result.elapsed_s)
        CONSUMED.labels(consumer, "applied").inc(result.applied)
        CONSUMED.labels(consumer, "duplicate").inc(result.duplicates)
        CONSUMED.labels(consumer, "dead_letter").inc(len(result.dead_letters))
        for letter in result.dead_letters:
            DEAD_LETTERS.labels(consumer, letter.kind).inc()

    return hook


class OutboxDepth(Collector):
    """``funnel_outbox_depth{service, outbox}``: rows not yet published, read at scrape."""

    def __init__(self, service: str, engine: Engine, tables: Iterable[Table]) -> None:
        self.service, self.engine, self.tables = service, engine, list(tables)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "funnel_outbox_depth",
            "Outbox rows waiting to be published",
            labels=["service", "outbox"],
        )
        try:
            with self.engine.connect() as conn:
                for table in self.tables:
                    family.add_metric([self.service, table.name], float(unsent(conn, table)))
        except SQLAlchemyError as exc:  # a scrape never fails for the database: readyz says
            log.warning("outbox depth unavailable: %s", exc)
        yield family


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(collectors: Iterable[Collector] = ()) -> bytes:
    """The metrics text: every process of the service (multiprocess mode) or this one,
    and ``collectors`` read now."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    extra = CollectorRegistry()
    for collector in collectors:
        extra.register(collector)
    return body + generate_latest(extra)


METRICS_ROLE = "metrics"


def install_metrics(app: Flask, token: str, collectors: Iterable[Collector] = ()) -> None:
    """``GET /metrics`` on ``app`` (the Prometheus text format), for the admin role and
    for ``token`` (``FUNNEL_METRICS_TOKEN``: a role of its own that reaches nothing else).
    Call after ``FUNNEL_TOKENS`` is set."""
    kept = list(collectors)
    if token:
        app.config["FUNNEL_TOKENS"] = {**app.config["FUNNEL_TOKENS"], METRICS_ROLE: token}

    @app.get("/metrics")
    @require_role("admin", METRICS_ROLE)
    def metrics() -> Response:
        return Response(exposition(kept), mimetype=CONTENT_TYPE_LATEST)


def serve_process_metrics(port: int | None) -> None:
    """A process without an API (consumer, relay, scheduler, dispatcher) serves its own
    metrics on ``port`` (``FUNNEL_METRICS_PORT``) when given."""
    if port:
        start_http_server(port, addr="0.0.0.0")
        log.info("metrics on :%d/metrics", port)
