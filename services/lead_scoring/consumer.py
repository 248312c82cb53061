"""lead-scoring's consumer process: traffic in, lead events out. Runs apart from gunicorn."""

from __future__ import annotations

import functools
import logging

from services.lead_scoring.config import SERVICE, ScoringConfig
from services.lead_scoring.handlers import ScoringSettings, handle_traffic
from services.lead_scoring.models import outbox, processed_events
from shared.db import make_engine, make_sessionmaker
from shared.kafka import make_consumer, make_producer
from shared.outbox import OutboxRelay
from shared.runner import BatchProcessor, ConsumerRunner, Handler
from shared.topics import TRAFFIC

log = logging.getLogger(__name__)


def handlers(config: ScoringConfig) -> dict[str, Handler]:
    settings = ScoringSettings(mql_threshold=config.mql_threshold)
    return {TRAFFIC: functools.partial(handle_traffic, settings=settings)}


def build_runner(config: ScoringConfig) -> ConsumerRunner:
    engine = make_engine(config.database_url)
    handler_map = handlers(config)
    producer = make_producer(config.kafka, SERVICE)
    return ConsumerRunner(
        consumer=make_consumer(config.kafka, SERVICE, handler_map),
        producer=producer,
        processor=BatchProcessor(
            consumer_name=SERVICE,
            sessions=make_sessionmaker(engine),
            handlers=handler_map,
            processed_table=processed_events,
            outbox_table=outbox,
        ),
        relay=OutboxRelay(engine, outbox, producer),
    )


def main(config: ScoringConfig | None = None) -> None:
    config = config or ScoringConfig.from_env()
    runner = build_runner(config)
    runner.install_signal_handlers()
    log.info("%s consuming from %s", SERVICE, config.kafka.bootstrap_servers)
    runner.run()
