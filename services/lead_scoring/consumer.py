"""lead-scoring's consumer process: traffic in, lead events out. Runs apart from gunicorn.

The runner (:mod:`shared.runner`) owns transactions, offsets and dead letters; this module
only says what handles the traffic topic (:mod:`.processing.traffic`, never an erased
person's) and the privacy topic (:mod:`.privacy`), and which jobs run between batches
(:mod:`.jobs`: SLA escalation, rescoring after a rule-set change; access exports pruned).
"""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from typing import Any

from services.lead_scoring.config import SERVICE, ScoringConfig
from services.lead_scoring.jobs.rescore import rescore_step
from services.lead_scoring.jobs.sla import escalate
from services.lead_scoring.model.identity import DEFAULT_IDENTITY_RULES
from services.lead_scoring.models import audit_log, erased_people, outbox, processed_events
from services.lead_scoring.privacy.handler import handle_privacy
from services.lead_scoring.privacy.requests import prune_answers
from services.lead_scoring.processing.traffic import Rules, handle_traffic_batch
from services.lead_scoring.rulesets.active import IdentityRulesCache, RuleSetCache
from shared import audit
from shared.config import ConfigError
from shared.db import make_engine, make_sessionmaker, utcnow
from shared.outbox import relay_main
from shared.privacy import without_erased
from shared.runner import (
    BatchHandler,
    ConsumerRunner,
    Timer,
    build_runner,
    each,
    infrastructure_check,
)
from shared.topics import PRIVACY, TRAFFIC

log = logging.getLogger(__name__)


def handlers(
    config: ScoringConfig, rule_sets: RuleSetCache | None = None
) -> dict[str, BatchHandler]:
    rules = Rules(
        scoring=rule_sets or RuleSetCache(config.base_model()),
        identity=IdentityRulesCache(DEFAULT_IDENTITY_RULES),
    )
    traffic = functools.partial(handle_traffic_batch, rules=rules)
    return {
        # Erased people's traffic never reaches the leads, however often it is replayed.
        TRAFFIC: without_erased(traffic, erased_people),
        PRIVACY: each(handle_privacy),
    }


def make_runner(config: ScoringConfig, group_id: str | None = None) -> ConsumerRunner:
    engine = make_engine(config.database_url)
    sessions = make_sessionmaker(engine)
    rule_sets = RuleSetCache(config.base_model())
    check = infrastructure_check(config.kafka)
    return build_runner(
        service=SERVICE,
        kafka=config.kafka,
        engine=engine,
        handlers=handlers(config, rule_sets),
        processed_table=processed_events,
        outbox_table=outbox,
        group_id=group_id,
        relay=config.relay_in_consumer,
        timers=[
            Timer(
                config.sla_check_seconds,
                lambda: escalate(sessions, config.sla_hours, check_infrastructure=check),
                name="sla",
            ),
            Timer(
                1.0,
                lambda: rescore_step(sessions, rule_sets, check_infrastructure=check),
                name="rescore",
            ),
            Timer(
                600.0,
                lambda: _prune_access_exports(sessions, config.security.audit_retention_days),
                name="privacy",
            ),
        ],
    )


def _prune_access_exports(sessions: Any, audit_days: int) -> None:
    """Access exports a day old, audit entries past their retention."""
    with sessions.begin() as session:
        prune_answers(session, utcnow())
        audit.prune(session, audit_log, utcnow() - timedelta(days=audit_days))


def main(config: ScoringConfig | None = None) -> None:
    config = config or ScoringConfig.from_env()
    runner = make_runner(config)
    runner.install_signal_handlers()
    log.info("%s consuming from %s", SERVICE, config.kafka.bootstrap_servers)
    if not config.relay_in_consumer:
        log.warning(
            "SCORING_RELAY_IN_CONSUMER=false: lead events wait in the outbox for "
            "python -m services.lead_scoring relay"
        )
    runner.run()


def relay(config: ScoringConfig | None = None) -> None:
    """``python -m services.lead_scoring relay``: lead-scoring's outbox published by a
    process of its own; run the consumers with ``SCORING_RELAY_IN_CONSUMER=false``."""
    config = config or ScoringConfig.from_env()
    engine = make_engine(config.database_url)
    if config.relay_in_consumer and engine.dialect.name == "sqlite":
        # Two relays of one SQLite outbox could both send a row (PostgreSQL's take turns).
        raise ConfigError(
            "the consumer relays this SQLite outbox itself: set SCORING_RELAY_IN_CONSUMER="
            "false for the consumers before starting a relay process"
        )
    relay_main(SERVICE, config.kafka, engine, outbox)
