"""traffic-intake's relay process: publishes the outbox to the traffic topic.

Runs apart from gunicorn. Kafka errors and passing database errors (a lock timeout, a
restart: ``OperationalError``) are retried with capped backoff (accepted events wait
durably in the outbox; rows sent but not stamped are read back first); other database
errors crash the process for its supervisor to restart. SIGTERM/SIGINT set a flag: the
batch in hand is finished and flushed first.
Housekeeping every ten minutes: sent rows are pruned once they leave the dedupe window,
failed events and audit entries once their retention ends.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from services.traffic_intake import failed
from services.traffic_intake.config import SERVICE, IntakeConfig
from services.traffic_intake.models import audit_log, outbox
from shared import audit
from shared.db import make_engine, utcnow
from shared.outbox import relay_main


def _housekeep(engine: Engine, config: IntakeConfig) -> None:
    """Failed events and audit entries past their retention go."""
    failed.prune(engine, utcnow() - timedelta(days=config.failed_retention_days))
    with engine.begin() as conn:
        audit.prune(
            conn, audit_log, utcnow() - timedelta(days=config.security.audit_retention_days)
        )


def main(config: IntakeConfig | None = None) -> None:
    config = config or IntakeConfig.from_env()
    engine = make_engine(config.database_url)
    relay_main(
        SERVICE,
        config.kafka,
        engine,
        outbox,
        dedupe_window=timedelta(days=config.dedupe_window_days),
        batch_size=config.relay_batch_size,
        housekeeping=lambda: _housekeep(engine, config),
    )
