"""member-retargeting's scheduler: a process of its own (``python -m
services.member_retargeting schedule``; ``make run`` and docker-compose start it).

Each pass, every ``poll`` seconds:

1. start due scheduled campaigns and event-triggered ones (:mod:`..campaigns.triggers`);
2. work every unfinished run one chunk further, each chunk in its own transaction
   (:func:`..campaigns.runs.work`): a kill -9 loses at most the chunk in hand, which is
   done again, exactly once, after the restart; a run whose chunk fails five times in a
   row is marked ``failed`` with the reason, and the others go on;
3. once a day: tiers reviewed, RFM scored (:mod:`..people.members`), behaviours past
   their retention pruned, then journeys that are no lead's past the same retention
   (:func:`..processing.journeys.prune`), a chunk per transaction for at most
   :data:`PRUNE_SECONDS` (what is left goes the next day).

Events (dispatches, audience parts, member updates) go into the outbox with the state
that caused them; the consumer process relays the outbox. A failure is judged as the
runner judges one (:func:`shared.runner.database_check`): with the database down the
process exits for its supervisor; otherwise it is logged and retried next pass, with a
growing pause. SIGTERM / SIGINT finish the chunk in hand and exit.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType

from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from services.member_retargeting.campaigns.runs import Limits, work
from services.member_retargeting.campaigns.triggers import due_schedules, event_triggers
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.models import Behaviour, CampaignRun, audit_log, outbox
from services.member_retargeting.people.members import review_tiers, score_rfm
from services.member_retargeting.processing import journeys
from shared import audit
from shared.db import make_engine, make_sessionmaker, utcnow
from shared.limits import truncate
from shared.outbox import enqueue
from shared.runner import InfrastructureError, database_check, describe

log = logging.getLogger(__name__)
DAY = timedelta(days=1)
MAX_RUN_FAILURES = 5
# The longest the daily work spends pruning journeys, so campaigns wait no longer than
# that once a day; a backlog (the first day after an upgrade) is worked off day by day.
PRUNE_SECONDS = 30.0


@dataclass
class Scheduler:
    sessions: sessionmaker
    config: RetargetingConfig
    clock: Callable[[], datetime] = utcnow
    last_daily: datetime | None = None
    failures: int = 0
    run_failures: dict[int, int] = field(default_factory=dict)
    # Event-triggered campaign id → the time slot it had nobody to reach in.
    quiet_slots: dict[int, int] = field(default_factory=dict)
    _stop: bool = field(default=False, repr=False)

    @property
    def limits(self) -> Limits:
        c = self.config
        return Limits(per_day=c.cap_per_day, per_week=c.cap_per_week, chunk=c.run_chunk)

    def request_stop(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        self._stop = True

    def run_once(self) -> int:
        """One pass; returns how many recipients runs handled."""
        now = self.clock()
        with self.sessions.begin() as session:
            due_schedules(session, now)
            event_triggers(session, now, self.quiet_slots)
        handled = 0
        with self.sessions() as session:
            runs = list(
                session.scalars(
                    select(CampaignRun.id)
                    .where(CampaignRun.status.in_(("pending", "running")))
                    .order_by(CampaignRun.id)
                )
            )
        for run_id in runs:
            if self._stop:
                break
            handled += self._work(run_id, now)
        if self.last_daily is None or now - self.last_daily >= DAY:
            self.daily(now)
            self.last_daily = now
        return handled

    def _work(self, run_id: int, now: datetime) -> int:
        """One chunk of one run, in its own transaction. A chunk that fails is rolled
        back and tried again next pass; after :data:`MAX_RUN_FAILURES` in a row the run is
        marked ``failed`` with the reason, so one broken run never holds up the others.
        With the database gone, :class:`InfrastructureError` stops the process."""
        try:
            with self.sessions.begin() as session:
                run = session.get(CampaignRun, run_id, with_for_update=True)
                if run is None or run.status not in ("pending", "running"):
                    return 0
                handled = work(session, run, self.limits, now)
        except Exception as exc:
            with self.sessions() as session:
                database_check(session)
            failures = self.run_failures.get(run_id, 0) + 1
            self.run_failures[run_id] = failures
            log.exception("run %s: chunk failed (%d in a row)", run_id, failures)
            if failures >= MAX_RUN_FAILURES:
                with self.sessions.begin() as session:
                    run = session.get(CampaignRun, run_id)
                    if run is not None:
                        run.status, run.finished_at = "failed", now
                        run.error = truncate(": ".join(describe(exc)), 500)
                self.run_failures.pop(run_id, None)
            return 0
        self.run_failures.pop(run_id, None)
        return handled

    def daily(self, now: datetime) -> None:
        with self.sessions.begin() as session:
            events = review_tiers(session, self.config.tiers, now) + score_rfm(session, now)
            enqueue(session, outbox, events, validate_payload=False)
            session.execute(
                delete(Behaviour).where(
                    Behaviour.at < now - timedelta(days=self.config.behaviour_days)
                )
            )
            audit.prune(
                session, audit_log, now - timedelta(days=self.config.security.audit_retention_days)
            )
        self._prune_journeys(now)

    def _prune_journeys(self, now: datetime) -> None:
        """Journeys past retention, a chunk per transaction for at most PRUNE_SECONDS. A
        failure (a deadlock with the consumer) is logged and left for tomorrow: the rest
        of the daily work is done and must not run again next pass."""
        before = now - timedelta(days=self.config.behaviour_days)
        deadline = time.monotonic() + PRUNE_SECONDS
        try:
            while time.monotonic() < deadline:
                with self.sessions.begin() as session:
                    pruned = journeys.prune(session, before, journeys.PRUNE_CHUNK)
                # Not "< a chunk": rows the consumer holds are skipped, so a short chunk
                # does not mean the backlog is done.
                if pruned == 0:
                    break
        except InfrastructureError:
            raise
        except Exception:
            with self.sessions() as session:
                database_check(session)  # raises when the database is gone
            log.exception("pruning journeys failed; tried again tomorrow")

    def run(self, *, max_seconds: float | None = None) -> None:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while not self._stop and (deadline is None or time.monotonic() < deadline):
            try:
                handled = self.run_once()
                self.failures = 0
            except InfrastructureError:
                raise
            except Exception:
                with self.sessions() as session:
                    database_check(session)  # raises when the database is gone
                self.failures += 1
                pause = min(self.config.schedule_poll_seconds * 2**self.failures, 60.0)
                log.exception("scheduler pass failed (%d in a row)", self.failures)
                time.sleep(pause)
                continue
            if not handled:
                time.sleep(self.config.schedule_poll_seconds)


def main(config: RetargetingConfig | None = None) -> None:
    config = config or RetargetingConfig.from_env()
    scheduler = Scheduler(make_sessionmaker(make_engine(config.database_url)), config)
    signal.signal(signal.SIGTERM, scheduler.request_stop)
    signal.signal(signal.SIGINT, scheduler.request_stop)
    log.info("scheduler running campaigns every %.1fs", config.schedule_poll_seconds)
    scheduler.run()
