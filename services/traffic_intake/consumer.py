"""traffic-intake's consumer process: the privacy topic in (erasure and access requests,
:mod:`.privacy`), its answers out through ``privacy_outbox``. Runs apart from gunicorn
and apart from the traffic relay (``python -m services.traffic_intake consume``)."""

from __future__ import annotations

import logging

from services.traffic_intake.config import SERVICE, IntakeConfig
from services.traffic_intake.models import privacy_outbox, processed_events
from services.traffic_intake.privacy import handle_privacy
from shared.db import make_engine
from shared.runner import BatchHandler, ConsumerRunner, build_runner, each
from shared.topics import PRIVACY

log = logging.getLogger(__name__)


def handlers() -> dict[str, BatchHandler]:
    return {PRIVACY: each(handle_privacy)}


def make_runner(config: IntakeConfig, group_id: str | None = None) -> ConsumerRunner:
    return build_runner(
        service=SERVICE,
        kafka=config.kafka,
        engine=make_engine(config.database_url),
        handlers=handlers(),
        processed_table=processed_events,
        outbox_table=privacy_outbox,
        group_id=group_id,
    )


def main(config: IntakeConfig | None = None) -> None:
    config = config or IntakeConfig.from_env()
    runner = make_runner(config)
    runner.install_signal_handlers()
    log.info("%s consuming privacy requests from %s", SERVICE, config.kafka.bootstrap_servers)
    runner.run()
