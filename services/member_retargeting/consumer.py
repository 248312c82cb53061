"""member-retargeting's consumer process: lead and traffic events in; it also relays the
outbox, which holds the dispatches campaign triggers queue. Runs apart from gunicorn."""

from __future__ import annotations

import logging

from services.member_retargeting.config import SERVICE, RetargetingConfig
from services.member_retargeting.handlers import handle_lead, handle_traffic
from services.member_retargeting.models import outbox, processed_events
from shared.db import make_engine, make_sessionmaker
from shared.kafka import make_consumer, make_producer
from shared.outbox import OutboxRelay
from shared.runner import BatchProcessor, ConsumerRunner, Handler
from shared.topics import LEADS, TRAFFIC

log = logging.getLogger(__name__)


def handlers() -> dict[str, Handler]:
    return {LEADS: handle_lead, TRAFFIC: handle_traffic}


def build_runner(config: RetargetingConfig) -> ConsumerRunner:
    engine = make_engine(config.database_url)
    handler_map = handlers()
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


def main(config: RetargetingConfig | None = None) -> None:
    config = config or RetargetingConfig.from_env()
    runner = build_runner(config)
    runner.install_signal_handlers()
    log.info("%s consuming from %s", SERVICE, config.kafka.bootstrap_servers)
    runner.run()
