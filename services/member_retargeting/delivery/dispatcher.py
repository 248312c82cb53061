"""The dispatcher process: ``python -m services.member_retargeting dispatch``.

Two loops in one process: a consumer (the shared runner, its own consumer group) that
queues every dispatch into the ``deliveries`` store (:mod:`.queue`), and the sender
below, which works that store.

Each pass, per channel whose provider is not paused (:class:`.pacing.Breaker`), the
sender claims as many due deliveries as the channel's rate allows now
(:class:`.pacing.Bucket`) — ``status='sending'`` with a claim token, in one short
transaction — and sends them one by one:

* e-mail: the message is staged on the SMTP connection, then the delivery is marked
  ``sent`` (only if the claim is still ours) and committed, then the final dot goes
  (:mod:`.smtp`): a kill -9 anywhere leaves a delivery either unsent and claimable again,
  or sent and at the server — never both sent and sendable;
* webhook, SMS, WhatsApp: the signed POST, then ``sent`` — a kill after the receiver
  answered and before the commit sends it again with the same ``Idempotency-Key``.

A failure that is worth retrying puts the delivery back with a backoff (exponential,
full jitter) until ``max_attempts``; then, or when the provider refuses it for good, it
is ``failed`` (``bounced`` when the mail server refused the address itself, which then
gets suppressed; a refused message is ``failed``) and a dead letter names the reason. A
claim not finished within ``lease`` seconds (its process died) is claimed again. Every
outcome publishes a ``delivery.status`` event with the store change that made it (in the
dispatcher's own outbox, which its consumer loop relays).

SIGTERM / SIGINT finish the message in hand, give the unstarted claims back and exit.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.delivery import message as messages
from services.member_retargeting.delivery import webhook
from services.member_retargeting.delivery.links import Links
from services.member_retargeting.delivery.pacing import Breaker, Bucket, retry_delay
from services.member_retargeting.delivery.queue import SENDING_CHANNELS, queue_dispatch
from services.member_retargeting.delivery.smtp import Attempt, Mailer, Result
from services.member_retargeting.delivery.status import BOUNCED, FAILED, SENT, delivery_status
from services.member_retargeting.models import (
    Delivery,
    dispatcher_outbox,
    erased_people,
    processed_events,
)
from shared.db import make_engine, make_sessionmaker, utcnow
from shared.deadletter import DeadLetter
from shared.events import encode, new_event
from shared.outbox import dead_letter_row, enqueue, insert_ignoring_duplicates
from shared.privacy import without_erased
from shared.runner import BatchHandler, ConsumerRunner, Timer, build_runner, each
from shared.topics import DISPATCH, DISPATCHER, MEMBER_RETARGETING

log = logging.getLogger(__name__)
QUEUED, SENDING = "queued", "sending"
DONE = frozenset({SENT, FAILED, BOUNCED})


class Dispatcher:
    """The sender: works the ``deliveries`` store. ``clock`` for tests."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        config: RetargetingConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        d = config.delivery
        self.sessions = sessions
        self.settings = d
        self.links = Links(config.link_key, d.public_url)
        self.sender = messages.Sender(d.sender_address, d.sender_name)
        self.mailer = Mailer(d.smtp)
        self.clock = clock
        self.monotonic = monotonic
        self.buckets = {
            channel: Bucket(rate=d.rate(channel), burst=max(1.0, d.rate(channel)))
            for channel in SENDING_CHANNELS
        }
        self.breakers = {
            channel: Breaker(d.breaker_base_seconds, d.breaker_ceiling_seconds)
            for channel in SENDING_CHANNELS
        }
        self._stop = threading.Event()
        self._warned: set[str] = set()

    # -- the loop ---------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, max_seconds: float | None = None) -> None:
        deadline = None if max_seconds is None else self.monotonic() + max_seconds
        try:
            while not self.stopping:
                if deadline is not None and self.monotonic() > deadline:
                    break
                if self.run_once() == 0:
                    self._stop.wait(self.settings.poll_seconds)
        finally:
            self.mailer.close()

    def run_once(self) -> int:
        """One pass over the channels; returns how many deliveries were attempted."""
        attempted = 0
        for channel in sorted(SENDING_CHANNELS):
            if self.stopping:
                break
            if not self._configured(channel):
                continue
            now = self.monotonic()
            if not self.breakers[channel].allows(now):
                continue
            room = min(self.settings.batch, self.buckets[channel].available(now))
            if room <= 0:
                continue
            token, ids = self.claim(channel, room)
            try:
                for dispatch_id in ids:
                    if self.stopping or not self.breakers[channel].allows(self.monotonic()):
                        break
                    self.buckets[channel].take(self.monotonic())
                    self.deliver(dispatch_id, token)
                    attempted += 1
            finally:
                self.release(token)
        return attempted

    def _configured(self, channel: str) -> bool:
        if channel == "email" or self.settings.webhook_url:
            return True
        if channel not in self._warned:
            self._warned.add(channel)
            log.warning("no RETARGETING_WEBHOOK_URL: %s dispatches wait in the store", channel)
        return False

    # -- the store --------------------------------------------------------------------

    def claim(self, channel: str, limit: int) -> tuple[str, list[str]]:
        """Claim up to ``limit`` due deliveries of ``channel`` (and ones whose claim
        expired): their ids, oldest due first, and the claim's token."""
        token = uuid.uuid4().hex
        now = self.clock()
        expired = now - timedelta(seconds=self.settings.lease_seconds)
        due = and_(
            Delivery.channel == channel,
            or_(
                and_(Delivery.status == QUEUED, Delivery.next_attempt_at <= now),
                and_(Delivery.status == SENDING, Delivery.claimed_at < expired),
            ),
        )
        with self.sessions.begin() as session:
            query = select(Delivery.dispatch_id).where(due).order_by(Delivery.next_attempt_at)
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query.limit(limit)))
            if ids:
                session.execute(
                    update(Delivery)
                    .where(Delivery.dispatch_id.in_(ids), due)
                    .values(status=SENDING, claim=token, claimed_at=now)
                )
            owned = list(
                session.scalars(
                    select(Delivery.dispatch_id)
                    .where(Delivery.dispatch_id.in_(ids), Delivery.claim == token)
                    .order_by(Delivery.next_attempt_at)
                )
            )
        return token, owned

    def release(self, token: str) -> None:
        """Give back what this claim did not get to (a stop, a paused channel)."""
        with self.sessions.begin() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.claim == token, Delivery.status == SENDING)
                .values(status=QUEUED, claim=None, claimed_at=None)
            )

    def _ours(self, dispatch_id: str, token: str) -> Any:
        return and_(Delivery.dispatch_id == dispatch_id, Delivery.claim == token)

    def _mark_sent(self, row: Delivery, token: str, detail: str) -> bool:
        """Commit ``sent`` with its status event, if the claim is still ours."""
        now = self.clock()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Delivery)
                .where(self._ours(row.dispatch_id, token), Delivery.status == SENDING)
                .values(
                    status=SENT,
                    attempts=Delivery.attempts + 1,
                    finished_at=now,
                    last_error=None,
                )
            )
            if _rows(result) != 1:
                return False
            enqueue(
                session,
                dispatcher_outbox,
                [
                    delivery_status(
                        row.dispatch_id,
                        row.payload,
                        SENT,
                        now,
                        detail=detail,
                        occurrence=str(row.attempts + 1),
                    )
                ],
            )
        return True

    def _failed(self, row: Delivery, token: str, *, retry: bool, status: str, detail: str) -> None:
        """Back in the queue with a backoff, or (no retry, or out of attempts) finished
        as ``status`` with a dead letter."""
        now = self.clock()
        attempts = row.attempts + 1
        with self.sessions.begin() as session:
            if retry and attempts < self.settings.max_attempts:
                pause = retry_delay(
                    attempts,
                    base=self.settings.retry_base_seconds,
                    ceiling=self.settings.retry_ceiling_seconds,
                )
                session.execute(
                    update(Delivery)
                    .where(self._ours(row.dispatch_id, token))
                    .values(
                        status=QUEUED,
                        attempts=attempts,
                        next_attempt_at=now + timedelta(seconds=pause),
                        claim=None,
                        claimed_at=None,
                        last_error=detail[:500],
                    )
                )
                return
            result = session.execute(
                update(Delivery)
                .where(self._ours(row.dispatch_id, token))
                .values(status=status, attempts=attempts, finished_at=now, last_error=detail[:500])
            )
            if _rows(result) != 1:
                return
            reason = f"{status} after {attempts} attempt(s): {detail}"
            enqueue(
                session,
                dispatcher_outbox,
                [
                    delivery_status(
                        row.dispatch_id, row.payload, status, now, detail=detail, occurrence="final"
                    )
                ],
            )
            session.execute(
                insert_ignoring_duplicates(dispatcher_outbox, session.get_bind().dialect.name),
                [dead_letter_row(_dead_letter(row, reason), f"dlq-{row.dispatch_id}")],
            )
        log.warning("dispatch %s: %s", row.dispatch_id, reason)

    # -- sending ----------------------------------------------------------------------

    def deliver(self, dispatch_id: str, token: str) -> None:
        with self.sessions() as session:
            row = session.get(Delivery, dispatch_id)
            if row is None or row.claim != token or row.status != SENDING:
                return
            session.expunge(row)
        if row.channel == "email":
            self._email(row, token)
        else:
            self._webhook(row, token)

    def _email(self, row: Delivery, token: str) -> None:
        try:
            email = messages.build(row.dispatch_id, row.payload, self.sender, self.links)
        except (ValueError, TypeError) as exc:
            self._failed(row, token, retry=False, status=FAILED, detail=f"unsendable: {exc}")
            return
        attempt: Attempt = self.mailer.send(
            self.sender.address,
            str(row.payload["email"]),
            email,
            lambda: self._mark_sent(row, token, "staged"),
        )
        breaker = self.breakers["email"]
        if attempt.provider_failure:
            pause = breaker.failed(self.monotonic())
            log.warning("SMTP failing (%s): e-mail paused %.1fs", attempt.detail, pause)
        elif attempt.result is not Result.ABANDONED:
            breaker.succeeded()
        if attempt.result is Result.SENT or attempt.result is Result.ABANDONED:
            return
        # Refused at the final dot after ``sent`` was committed: that row says sent; put
        # the truth over it (the claim is still ours, the status moved to sent).
        self._reopen(row, token)
        if attempt.result is Result.BOUNCED:
            self._failed(row, token, retry=False, status=BOUNCED, detail=attempt.detail)
        elif attempt.result is Result.REFUSED:
            self._failed(row, token, retry=False, status=FAILED, detail=attempt.detail)
        else:
            self._failed(row, token, retry=True, status=FAILED, detail=attempt.detail)

    def _reopen(self, row: Delivery, token: str) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(Delivery)
                .where(self._ours(row.dispatch_id, token), Delivery.status == SENT)
                .values(status=SENDING, attempts=Delivery.attempts - 1, finished_at=None)
            )

    def _webhook(self, row: Delivery, token: str) -> None:
        d = self.settings
        outcome = webhook.post(
            d.webhook_url,
            d.webhook_secret,
            row.dispatch_id,
            webhook.body_of(row.dispatch_id, row.payload),
            timeout=d.webhook_timeout_seconds,
        )
        breaker = self.breakers[row.channel]
        if outcome.delivered:
            breaker.succeeded()
            self._mark_sent(row, token, outcome.detail)
            return
        if outcome.retry:
            pause = breaker.failed(self.monotonic())
            log.warning("webhook failing (%s): %s paused %.1fs", outcome.detail, row.channel, pause)
        self._failed(row, token, retry=outcome.retry, status=FAILED, detail=outcome.detail)


def _rows(result: Any) -> int:
    """Rows an UPDATE or DELETE matched."""
    return int(getattr(result, "rowcount", 0) or 0)


def _dead_letter(row: Delivery, reason: str) -> DeadLetter:
    event = new_event(
        "campaign.dispatch", row.payload, source=MEMBER_RETARGETING, event_id=row.dispatch_id
    )
    return DeadLetter(
        source=DISPATCH,
        partition=-1,
        offset=-1,
        key=str(row.contact_id).encode(),
        value=encode(event, validate_payload=False),
        consumer=DISPATCHER,
        kind="delivery_failed",
        reason=reason,
    )


def handlers() -> dict[str, BatchHandler]:
    """The dispatcher's consumer side: dispatches into the store, never an erased
    person's."""
    return {DISPATCH: without_erased(each(queue_dispatch), erased_people)}


def prune(sessions: sessionmaker[Session], before: datetime) -> int:
    """Forget finished deliveries (their addresses and messages) finished before
    ``before``; returns how many. Unfinished ones stay however old."""
    with sessions.begin() as session:
        result = session.execute(
            delete(Delivery).where(Delivery.status.in_(sorted(DONE)), Delivery.finished_at < before)
        )
    return _rows(result)


def make_runner(config: RetargetingConfig) -> ConsumerRunner:
    engine = make_engine(config.database_url)
    sessions = make_sessionmaker(engine)
    keep = timedelta(days=config.delivery.retention_days)
    return build_runner(
        service=DISPATCHER,
        kafka=config.kafka,
        engine=engine,
        handlers=handlers(),
        processed_table=processed_events,
        outbox_table=dispatcher_outbox,
        timers=[Timer(3600.0, lambda: prune(sessions, utcnow() - keep), name="deliveries")],
    )


def main(config: RetargetingConfig | None = None) -> None:
    config = config or RetargetingConfig.from_env()
    runner = make_runner(config)
    dispatcher = Dispatcher(make_sessionmaker(make_engine(config.database_url)), config)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the message in hand", signum)
        runner.request_stop()
        dispatcher.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed: list[BaseException] = []

    def consume() -> None:
        try:
            runner.run()
        except BaseException as exc:  # the process exits for its supervisor to restart
            failed.append(exc)
            dispatcher.request_stop()
            raise

    consuming = threading.Thread(target=consume, name="dispatch-consumer", daemon=True)
    consuming.start()
    log.info("dispatcher: SMTP %s:%d", config.delivery.smtp.host, config.delivery.smtp.port)
    try:
        dispatcher.run()
    finally:
        runner.request_stop()
        consuming.join(timeout=30)
    if failed:
        raise SystemExit(f"the dispatcher's consumer stopped: {failed[0]!r}")
