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

import logging
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from types import FrameType
from typing import Any

from kafka.errors import KafkaError
from sqlalchemy.exc import OperationalError

from services.traffic_intake import failed
from services.traffic_intake.config import SERVICE, IntakeConfig
from services.traffic_intake.models import audit_log, outbox
from shared import audit
from shared.db import make_engine, utcnow
from shared.kafka import make_producer, make_tail_reader
from shared.outbox import OutboxRelay

log = logging.getLogger(__name__)


class RelayLoop:
    def __init__(
        self,
        relay: OutboxRelay,
        *,
        dedupe_window: timedelta,
        housekeeping: Callable[[], object] = lambda: None,
        housekeeping_interval_s: float = 600.0,
    ) -> None:
        self.relay = relay
        self.dedupe_window = dedupe_window
        self.housekeeping = housekeeping
        self.housekeeping_interval_s = housekeeping_interval_s
        self._stop = False

    def request_stop(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        self._stop = True

    def housekeep(self) -> None:
        """Prune sent rows past the dedupe window, then the service's own housekeeping."""
        self.relay.prune(utcnow() - self.dedupe_window)
        self.housekeeping()

    def run(self, *, idle_sleep_s: float = 0.05, max_seconds: float | None = None) -> None:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        backoff = 0.5
        next_prune = 0.0
        while not self._stop and (deadline is None or time.monotonic() < deadline):
            try:
                sent = self.relay.publish_pending(max_batches=10)
                backoff = 0.5
            except (KafkaError, OperationalError) as exc:
                # Kafka, or the database (a lock timeout, a restart): rows stay unsent.
                log.warning("publish failed (%s); retrying in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if time.monotonic() > next_prune:
                self.housekeep()
                next_prune = time.monotonic() + self.housekeeping_interval_s
            if not sent:
                time.sleep(idle_sleep_s)
        try:
            self.relay.publish_pending(max_batches=10)
        except (KafkaError, OperationalError):
            log.warning("stopping with unsent events; they stay in the outbox")
        self.relay.close()


def _housekeep(engine: Any, config: IntakeConfig) -> None:
    """Failed events and audit entries past their retention go."""
    failed.prune(engine, utcnow() - timedelta(days=config.failed_retention_days))
    with engine.begin() as conn:
        audit.prune(
            conn, audit_log, utcnow() - timedelta(days=config.security.audit_retention_days)
        )


def main(config: IntakeConfig | None = None) -> None:
    config = config or IntakeConfig.from_env()
    engine = make_engine(config.database_url)
    loop = RelayLoop(
        OutboxRelay(
            engine,
            outbox,
            lambda: make_producer(config.kafka, f"{SERVICE}-relay"),
            batch_size=config.relay_batch_size,
            reader_factory=lambda: make_tail_reader(config.kafka),
        ),
        dedupe_window=timedelta(days=config.dedupe_window_days),
        housekeeping=lambda: _housekeep(engine, config),
    )
    signal.signal(signal.SIGTERM, loop.request_stop)
    signal.signal(signal.SIGINT, loop.request_stop)
    log.info("relay publishing %s outbox to Kafka at %s", SERVICE, config.kafka.bootstrap_servers)
    loop.run()
