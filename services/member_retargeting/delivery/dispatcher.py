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
  (:mod:`.smtp`): never twice. SMTP has no idempotency key, so a sender killed between
  that commit and the dot loses that one message (recorded as sent; the commit's own
  fsync is inside that gap); a kill anywhere else leaves it either unsent and claimable
  again, or sent and at the server;
* webhook, SMS, WhatsApp: the signed POST, then ``sent`` — a kill after the receiver
  answered and before the commit sends it again with the same ``Idempotency-Key``.

Right before sending, a dispatch whose address was suppressed since (an unsubscribe, a
hard bounce) is finished as ``suppressed``; one older than ``max_age_hours`` as
``failed``. A failure of one dispatch (a recipient's temporary refusal, a message nobody
foresaw) puts it back with its own backoff (exponential, full jitter) until
``max_attempts``; a provider failure (the server or receiver as a whole: refused
connections, throttling, a refused sender, 5xx from a receiver) pauses the channel
(:class:`.pacing.Breaker`) and costs the waiting dispatches nothing, so an outage loses
none of them. A mailbox that does not exist is ``bounced`` (then suppressed), a message
refused for its content ``failed``; every failure leaves a dead letter with the reason.
A claim not finished within ``lease`` seconds (its process died) is claimed again; a
webhook renews its claim before it posts. Every outcome publishes a ``delivery.status``
event with the store change that made it (in the dispatcher's own outbox, which its
consumer loop relays). Database errors pause the loop, and stop the process when they
last.

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

from sqlalchemy import and_, case, delete, exists, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased, sessionmaker

from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.delivery import message as messages
from services.member_retargeting.delivery import webhook
from services.member_retargeting.delivery.links import Links
from services.member_retargeting.delivery.pacing import Breaker, Bucket, retry_delay
from services.member_retargeting.delivery.queue import SENDING_CHANNELS, queue_dispatch
from services.member_retargeting.delivery.smtp import Attempt, Mailer, Result
from services.member_retargeting.delivery.status import (
    BOUNCED,
    FAILED,
    SENT,
    SUPPRESSED,
    delivery_status,
)
from services.member_retargeting.model.suppression import EMAIL, PHONE, suppression_key
from services.member_retargeting.models import (
    Delivery,
    Suppression,
    dispatcher_outbox,
    erased_people,
    processed_events,
)
from shared.db import make_engine, make_sessionmaker, utcnow
from shared.deadletter import DeadLetter
from shared.events import encode, new_event
from shared.metrics import DISPATCHES
from shared.outbox import dead_letter_row, enqueue, insert_ignoring_duplicates
from shared.privacy import without_erased
from shared.runner import BatchHandler, ConsumerRunner, Timer, build_runner, each
from shared.topics import DISPATCH, DISPATCHER, MEMBER_RETARGETING

log = logging.getLogger(__name__)
QUEUED, SENDING = "queued", "sending"
DONE = frozenset({SENT, FAILED, BOUNCED, SUPPRESSED})
MAX_DATABASE_FAILURES = 8


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
        self.links = Links(config.link_keys, d.public_url)
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
        self.database_failures = 0

    # -- the loop ---------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, max_seconds: float | None = None) -> None:
        """Until stopped. A database error pauses the loop (growing pauses); after
        :data:`MAX_DATABASE_FAILURES` in a row it is raised (the process exits for its
        supervisor). Claims in hand are taken up again after the lease."""
        deadline = None if max_seconds is None else self.monotonic() + max_seconds
        try:
            while not self.stopping:
                if deadline is not None and self.monotonic() > deadline:
                    break
                try:
                    worked = self.run_once()
                    self.database_failures = 0
                except SQLAlchemyError:
                    self.database_failures += 1
                    if self.database_failures >= MAX_DATABASE_FAILURES:
                        raise
                    log.exception("database error (%d in a row)", self.database_failures)
                    self._stop.wait(min(30.0, 0.5 * 2**self.database_failures))
                    continue
                if worked == 0:
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
            in_hand: str | None = None
            try:
                for dispatch_id in ids:
                    if self.stopping or not self.breakers[channel].allows(self.monotonic()):
                        break
                    self.buckets[channel].take(self.monotonic())
                    in_hand = dispatch_id
                    self.deliver(dispatch_id, token)
                    in_hand = None
                    attempted += 1
            finally:
                # A delivery that raised stays claimed, as if its sender had died: it is
                # taken again after the lease and pays an attempt (see :meth:`claim`), so
                # one that fails the process every time still runs out of attempts.
                self.release(token, keep=in_hand)
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
        expired): their ids in sending order (oldest due first, then by id), and the
        claim's token.

        Claiming counts an attempt, so a dispatch that brings its sender down (again and
        again) still runs out of attempts. A sender killed mid-claim sent its claim in
        order, so of that claim's rows still ``sending`` only the first can have been in
        hand when it died: taken again, that one is charged for the crash (it may not
        have started), the rows behind it are not (their earlier charge pays for this
        claim). A dead claim taken back in two parts charges one row too many, never one
        too few."""
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
        earlier = aliased(Delivery)
        untouched = and_(
            Delivery.status == SENDING,
            exists().where(
                earlier.claim == Delivery.claim,
                earlier.status == SENDING,
                or_(
                    earlier.next_attempt_at < Delivery.next_attempt_at,
                    and_(
                        earlier.next_attempt_at == Delivery.next_attempt_at,
                        earlier.dispatch_id < Delivery.dispatch_id,
                    ),
                ),
            ),
        )
        order = (Delivery.next_attempt_at, Delivery.dispatch_id)
        with self.sessions.begin() as session:
            # Which rows are untouched is read before the update: SQLite's UPDATE sees
            # its own changes to the earlier rows of the same claim.
            query = select(Delivery.dispatch_id, untouched).where(due).order_by(*order)
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(of=Delivery, skip_locked=True)
            found = session.execute(query.limit(limit)).all()
            ids = [dispatch_id for dispatch_id, _ in found]
            free = [dispatch_id for dispatch_id, was_untouched in found if was_untouched]
            if ids:
                session.execute(
                    update(Delivery)
                    .where(Delivery.dispatch_id.in_(ids), due)
                    .values(
                        status=SENDING,
                        claim=token,
                        claimed_at=now,
                        attempts=Delivery.attempts
                        + case((Delivery.dispatch_id.in_(free), 0), else_=1),
                    )
                )
            owned = list(
                session.scalars(
                    select(Delivery.dispatch_id)
                    .where(Delivery.dispatch_id.in_(ids), Delivery.claim == token)
                    .order_by(*order)
                )
            )
        return token, owned

    def release(self, token: str, *, keep: str | None = None, only: str | None = None) -> None:
        """Give back what this claim did not get to (a stop, a paused channel, a send
        abandoned before its final dot): those attempts did not happen. ``keep``: a
        delivery left claimed; ``only``: give back that one alone."""
        mine = and_(Delivery.claim == token, Delivery.status == SENDING)
        if keep is not None:
            mine = and_(mine, Delivery.dispatch_id != keep)
        if only is not None:
            mine = and_(mine, Delivery.dispatch_id == only)
        with self.sessions.begin() as session:
            session.execute(
                update(Delivery)
                .where(mine)
                .values(status=QUEUED, claim=None, claimed_at=None, attempts=Delivery.attempts - 1)
            )

    def _ours(self, dispatch_id: str, token: str) -> Any:
        return and_(Delivery.dispatch_id == dispatch_id, Delivery.claim == token)

    def _renew(self, row: Delivery, token: str) -> bool:
        """Extend the claim before a send that cannot take it back (a POST): False when
        another dispatcher has it now."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Delivery)
                .where(self._ours(row.dispatch_id, token), Delivery.status == SENDING)
                .values(claimed_at=self.clock())
            )
        return _rows(result) == 1

    def _mark_sent(self, row: Delivery, token: str, detail: str) -> bool:
        """Commit ``sent`` with its status event, if the claim is still ours."""
        now = self.clock()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Delivery)
                .where(self._ours(row.dispatch_id, token), Delivery.status == SENDING)
                .values(status=SENT, finished_at=now, last_error=None)
            )
            if _rows(result) != 1:
                return False
            DISPATCHES.labels(row.channel, SENT).inc()
            event = delivery_status(
                # The claim tells this sending apart from any other of the same dispatch:
                # attempts restart at 0 when a failed delivery is requeued.
                row.dispatch_id,
                row.payload,
                SENT,
                now,
                detail=detail,
                occurrence=token,
            )
            enqueue(session, dispatcher_outbox, [event])
        return True

    def _sent_before_final_dot(self, row: Delivery, token: str) -> bool:
        """The pre-dot commit. When the commit's outcome is unknown (the connection broke
        during COMMIT), the row is read again: the dot goes only if it says sent under
        this claim. Raises when the database cannot tell (the message is abandoned)."""
        try:
            return self._mark_sent(row, token, "handed to the mail server")
        except SQLAlchemyError:
            log.warning("commit before the final dot failed; reading the row again")
        for pause in (0.2, 1.0, 3.0):
            time.sleep(pause)
            try:
                with self.sessions() as session:
                    status, claim = session.execute(
                        select(Delivery.status, Delivery.claim).where(
                            Delivery.dispatch_id == row.dispatch_id
                        )
                    ).one()
                return bool(status == SENT and claim == token)
            except SQLAlchemyError:
                continue
        raise RuntimeError("the database cannot say whether the dispatch was marked sent")

    def _retry(self, row: Delivery, token: str, *, detail: str, provider: bool) -> None:
        """Back in the queue. A provider failure (the server or receiver as a whole)
        costs the dispatch no attempt and waits for the channel to reopen; a failure of
        this dispatch waits its own backoff. Out of attempts or past its age: failed."""
        now = self.clock()
        if not provider and row.attempts >= self.settings.max_attempts:
            self._finish(row, token, FAILED, f"{detail} (after {row.attempts} attempts)")
            return
        if provider:
            reopen = self.breakers[row.channel].open_until - self.monotonic()
            pause, attempts = max(reopen, self.settings.poll_seconds), row.attempts - 1
        else:
            pause = retry_delay(
                row.attempts,
                base=self.settings.retry_base_seconds,
                ceiling=self.settings.retry_ceiling_seconds,
            )
            attempts = row.attempts
        with self.sessions.begin() as session:
            session.execute(
                update(Delivery)
                .where(self._ours(row.dispatch_id, token))
                .values(
                    status=QUEUED,
                    attempts=max(0, attempts),
                    next_attempt_at=now + timedelta(seconds=pause),
                    claim=None,
                    claimed_at=None,
                    last_error=detail[:500],
                )
            )

    def _finish(self, row: Delivery, token: str, status: str, detail: str) -> None:
        """Finished without being sent (``failed``, ``bounced``, ``suppressed``): the
        status event, and for a failure a dead letter naming the reason."""
        now = self.clock()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Delivery)
                .where(self._ours(row.dispatch_id, token))
                .values(status=status, finished_at=now, last_error=detail[:500])
            )
            if _rows(result) != 1:
                return
            DISPATCHES.labels(row.channel, status).inc()
            event = delivery_status(
                row.dispatch_id, row.payload, status, now, detail=detail, occurrence=token
            )
            enqueue(session, dispatcher_outbox, [event])
            if status != SUPPRESSED:
                letter = _dead_letter(row, f"{status}: {detail}")
                session.execute(
                    insert_ignoring_duplicates(dispatcher_outbox, session.get_bind().dialect.name),
                    [dead_letter_row(letter, f"dlq-{row.dispatch_id}")],
                )
        log.warning("dispatch %s %s: %s", row.dispatch_id, status, detail)

    # -- sending ----------------------------------------------------------------------

    def deliver(self, dispatch_id: str, token: str) -> None:
        """Send one claimed delivery. Whatever the message or the provider does is
        recorded against this dispatch (never a crash of the loop); database errors
        propagate (:meth:`run` pauses)."""
        with self.sessions() as session:
            row = session.get(Delivery, dispatch_id)
            if row is None or row.claim != token or row.status != SENDING:
                return
            session.expunge(row)
            blocked = self._suppressed(session, row)
        age = self.clock() - row.created_at  # UTCDateTime: always aware
        if age > timedelta(hours=self.settings.max_age_hours):
            self._finish(
                row, token, FAILED, f"not delivered within {self.settings.max_age_hours} hours"
            )
            return
        if row.attempts > self.settings.max_attempts:
            self._finish(row, token, FAILED, f"out of attempts ({row.attempts - 1})")
            return
        if blocked:
            self._finish(row, token, SUPPRESSED, "suppressed since it was dispatched")
            return
        try:
            if row.channel == "email":
                self._email(row, token)
            else:
                self._webhook(row, token)
        except SQLAlchemyError:
            raise
        except Exception as exc:  # a message or reply nobody foresaw: this dispatch only
            log.exception("dispatch %s failed unexpectedly", row.dispatch_id)
            self._retry(row, token, detail=f"{type(exc).__name__}: {exc}", provider=False)

    def _suppressed(self, session: Session, row: Delivery) -> bool:
        """The address was suppressed after the dispatch was made (an unsubscribe from an
        earlier message, a hard bounce): checked again right before sending."""
        keys = []
        email, phone = row.payload.get("email"), row.payload.get("phone")
        if row.channel == "email" and email:
            keys.append(suppression_key(EMAIL, str(email)))
        if row.channel in ("sms", "whatsapp") and phone:
            keys.append(suppression_key(PHONE, str(phone)))
        keys = [k for k in keys if k]
        if not keys:
            return False
        found = session.scalar(
            select(Suppression.id).where(Suppression.value_hash.in_(keys)).limit(1)
        )
        return found is not None

    def _email(self, row: Delivery, token: str) -> None:
        try:
            email = messages.build(row.dispatch_id, row.payload, self.sender, self.links)
        except (ValueError, TypeError) as exc:
            self._finish(row, token, FAILED, f"unsendable: {exc}")
            return
        attempt: Attempt = self.mailer.send(
            self.sender.address,
            str(row.payload["email"]),
            email,
            lambda: self._sent_before_final_dot(row, token),
        )
        breaker = self.breakers["email"]
        if attempt.provider_failure:
            pause = breaker.failed(self.monotonic())
            log.warning("SMTP failing (%s): e-mail paused %.1fs", attempt.detail, pause)
        elif attempt.result in (Result.SENT, Result.BOUNCED):
            breaker.succeeded()
        if attempt.result is Result.ABANDONED:
            # Not sent. If the row is still ours (the pre-dot commit failed and the row
            # says so), it goes back now: left ``sending``, it would look like the one in
            # hand were this sender killed later in the claim.
            self.release(token, only=row.dispatch_id)
            return
        if attempt.result is Result.SENT:
            return
        # Refused at the final dot after ``sent`` was committed: that row says sent; put
        # the truth over it (the claim is still ours).
        self._reopen(row, token)
        if attempt.result is Result.BOUNCED:
            self._finish(row, token, BOUNCED, attempt.detail)
        elif attempt.result is Result.REFUSED:
            self._finish(row, token, FAILED, attempt.detail)
        else:
            self._retry(row, token, detail=attempt.detail, provider=attempt.provider_failure)

    def _reopen(self, row: Delivery, token: str) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(Delivery)
                .where(self._ours(row.dispatch_id, token), Delivery.status == SENT)
                .values(status=SENDING, finished_at=None)
            )

    def _webhook(self, row: Delivery, token: str) -> None:
        d = self.settings
        if not self._renew(row, token):
            return  # another dispatcher took it over
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
        if outcome.provider_failure:
            pause = breaker.failed(self.monotonic())
            log.warning("webhook failing (%s): %s paused %.1fs", outcome.detail, row.channel, pause)
        if outcome.retry:
            self._retry(row, token, detail=outcome.detail, provider=outcome.provider_failure)
        else:
            self._finish(row, token, FAILED, outcome.detail)


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
