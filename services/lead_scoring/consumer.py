"""lead-scoring's consumer process: traffic in, lead events out. Runs apart from gunicorn."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from services.lead_scoring.config import SERVICE, ScoringConfig
from services.lead_scoring.handlers import handle_traffic_batch
from services.lead_scoring.handoff import escalate_overdue
from services.lead_scoring.models import outbox, processed_events
from services.lead_scoring.rulesets import ActiveSettings, rescore_step
from services.lead_scoring.settings import ScoringSettings
from shared.db import make_engine, make_sessionmaker, utcnow
from shared.outbox import enqueue
from shared.runner import (
    BatchHandler,
    ConsumerRunner,
    Timer,
    build_runner,
    database_check,
    infrastructure_check,
)
from shared.topics import TRAFFIC

log = logging.getLogger(__name__)


def handlers(
    config: ScoringConfig, active: ActiveSettings | None = None
) -> dict[str, BatchHandler]:
    active = active or ActiveSettings(ScoringSettings.from_config(config))
    return {TRAFFIC: functools.partial(handle_traffic_batch, active=active)}


def rescore(
    sessions: sessionmaker,
    active: ActiveSettings,
    budget_s: float = 0.5,
    check_infrastructure: Callable[[Session], None] = database_check,
    chunk: int = 200,
) -> int:
    """The rescore timer: advance the newest rule-set rescore by a bounded slice. Kept
    short (and in small chunks): a consumer must keep polling, or it cannot finish
    joining its group on the embedded broker and misses its heartbeats elsewhere."""
    return rescore_step(
        sessions,
        active,
        budget_s=budget_s,
        chunk=chunk,
        check_infrastructure=check_infrastructure,
    )


def escalate(
    sessions: sessionmaker,
    config: ScoringConfig,
    check_infrastructure: Callable[[Session], None] = database_check,
) -> int:
    """The SLA timer: mark overdue MQLs and queue one escalation event each."""
    with sessions.begin() as session:
        outgoing = escalate_overdue(
            session, utcnow(), config.sla_hours, check_infrastructure=check_infrastructure
        )
        enqueue(session, outbox, outgoing)
    return len(outgoing)


def make_runner(config: ScoringConfig, group_id: str | None = None) -> ConsumerRunner:
    engine = make_engine(config.database_url)
    sessions = make_sessionmaker(engine)
    active = ActiveSettings(ScoringSettings.from_config(config))
    check = infrastructure_check(config.kafka)
    return build_runner(
        service=SERVICE,
        kafka=config.kafka,
        engine=engine,
        handlers=handlers(config, active),
        processed_table=processed_events,
        outbox_table=outbox,
        group_id=group_id,
        timers=[
            Timer(
                config.sla_check_seconds,
                lambda: escalate(sessions, config, check),
                name="sla",
            ),
            Timer(
                1.0, lambda: rescore(sessions, active, check_infrastructure=check), name="rescore"
            ),
        ],
    )


def main(config: ScoringConfig | None = None) -> None:
    config = config or ScoringConfig.from_env()
    runner = make_runner(config)
    runner.install_signal_handlers()
    log.info("%s consuming from %s", SERVICE, config.kafka.bootstrap_servers)
    runner.run()
