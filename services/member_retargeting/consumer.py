"""member-retargeting's consumer process: lead and traffic events in; it also relays the
outbox, which holds the dispatches campaign triggers queue. Runs apart from gunicorn."""

from __future__ import annotations

import logging

from services.member_retargeting.config import SERVICE, RetargetingConfig
from services.member_retargeting.handlers import handle_lead, handle_traffic
from services.member_retargeting.models import outbox, processed_events
from shared.db import make_engine
from shared.runner import BatchHandler, ConsumerRunner, build_runner, each
from shared.topics import LEADS, TRAFFIC

log = logging.getLogger(__name__)


def handlers() -> dict[str, BatchHandler]:
    return {LEADS: each(handle_lead), TRAFFIC: each(handle_traffic)}


def make_runner(config: RetargetingConfig, group_id: str | None = None) -> ConsumerRunner:
    return build_runner(
        service=SERVICE,
        kafka=config.kafka,
        engine=make_engine(config.database_url),
        handlers=handlers(),
        processed_table=processed_events,
        outbox_table=outbox,
        group_id=group_id,
    )


def main(config: RetargetingConfig | None = None) -> None:
    config = config or RetargetingConfig.from_env()
    runner = make_runner(config)
    runner.install_signal_handlers()
    log.info("%s consuming from %s", SERVICE, config.kafka.bootstrap_servers)
    runner.run()
