"""member-retargeting's consumer process: lead and traffic events in (contacts, members,
orders, behaviours, consent; never an erased person's), privacy requests
(:mod:`.privacy`) and delivery statuses (:mod:`.processing.delivery`); it relays the
outbox too, which holds member events, answers and the dispatches campaign runs queue.
Runs apart from gunicorn, as do the scheduler (:mod:`.jobs.scheduler`) that runs
campaigns and the dispatcher (:mod:`.delivery.dispatcher`) that sends them."""

from __future__ import annotations

import functools
import logging

from services.member_retargeting.config import SERVICE, RetargetingConfig
from services.member_retargeting.models import erased_people, outbox, processed_events
from services.member_retargeting.privacy import handle_privacy
from services.member_retargeting.processing.delivery import handle_delivery
from services.member_retargeting.processing.leads import handle_lead
from services.member_retargeting.processing.traffic import handle_traffic
from shared.db import make_engine
from shared.privacy import without_erased
from shared.runner import BatchHandler, ConsumerRunner, build_runner, each
from shared.topics import DELIVERY, LEADS, PRIVACY, TRAFFIC

log = logging.getLogger(__name__)


def handlers(config: RetargetingConfig | None = None) -> dict[str, BatchHandler]:
    tiers = config.tiers if config is not None else RetargetingConfig(database_url="").tiers
    return {
        # An erased person's events are dropped, however often a topic is replayed.
        LEADS: without_erased(each(functools.partial(handle_lead, tiers=tiers)), erased_people),
        TRAFFIC: without_erased(
            each(functools.partial(handle_traffic, tiers=tiers)), erased_people
        ),
        PRIVACY: each(handle_privacy),
        # What became of campaign messages, for the reports.
        DELIVERY: each(handle_delivery),
    }


def make_runner(config: RetargetingConfig, group_id: str | None = None) -> ConsumerRunner:
    return build_runner(
        service=SERVICE,
        kafka=config.kafka,
        engine=make_engine(config.database_url),
        handlers=handlers(config),
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
