"""Group commit: concurrent requests' writes in one transaction.

Every request that accepts events hands its write (its outbox rows, its rejected events,
whatever it must make durable before answering) to :meth:`GroupCommit.write` and waits.
One writer thread per process takes everything waiting (at most ``max_rows`` rows), writes
it in ONE transaction and then hands each request its own result: how many of its events
were new, how many were dropped at the door. A request never learns "accepted" before its
rows are committed.

* Waiting: the writer writes what is queued at once; it lingers (up to ``wait_ms``) only
  while other requests of this process have passed the door and are on their way here
  (:meth:`expect`), as PostgreSQL's ``commit_delay`` waits only with ``commit_siblings``.
  An idle intake adds no delay.
* Deduplication stays exact: one ``INSERT … ON CONFLICT DO NOTHING RETURNING event_id``
  for the group; each new id is credited to the first request (in queue order) that
  carries it, so two requests of one group with one messageId count it once.
* Failure: if the group's transaction fails, each member is written again in a
  transaction of its own, so only the request at fault gets its error. A store-level
  error on a member's own try (``OperationalError``: locked, disconnected, timed out) is
  nobody's fault: the members not yet tried get it without trying.
* Bounded: at most ``queue_size`` writes wait (beyond: :class:`Overloaded`, answered 503
  with Retry-After); a request waits at most ``timeout_s`` (then :class:`Overloaded`; its
  write is skipped if not started; on PostgreSQL a write's statements give up at 70% of
  ``timeout_s``, so one in flight fails rather than committing after its 503).
* Processes: gunicorn forks workers; the thread is started lazily on first use, in the
  process that uses it (keyed by pid, state renewed after fork). It exits after a minute
  idle and starts again when needed; at interpreter exit it drains what is queued.
* ``max_rows=0`` turns grouping off: every request commits its own transaction, in its own
  thread, as before.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from services.traffic_intake import failed
from services.traffic_intake.models import outbox
from services.traffic_intake.privacy import as_stored, erased_at_the_door
from shared.events import Envelope
from shared.outbox import Outgoing, insert_ignoring_duplicates, outbox_rows
from shared.privacy import erasure_keys
from shared.topics import TRAFFIC

log = logging.getLogger(__name__)

IDLE_EXIT_S = 60.0
DRAIN_TIMEOUT_S = 10.0
_POLL_S = 0.0005  # while lingering, how often the writer looks at who is still coming


class Overloaded(Exception):
    """The write was not taken (queue full) or not finished in time: answer 503, retry."""


@dataclass(frozen=True)
class Written:
    new: int  # events stored now
    dropped: int  # erased people's events, dropped at the door (answered as accepted)


@dataclass(eq=False)
class PendingWrite:
    """One request's write, waiting for the writer. Its outbox rows (each event as the
    door stores it, encoded) and the keys an erasure matches are built here, in the
    request's thread: the writer holds the store's write lock (SQLite's is the whole
    database) only for the erasure lookup, the INSERT and the commit."""

    source: str
    envelopes: Sequence[Envelope]
    rejections: Sequence[failed.Rejection]
    done: threading.Event = field(default_factory=threading.Event)
    result: Written | None = None
    error: BaseException | None = None
    abandoned: bool = False  # its request stopped waiting: skip it if not started
    keys: list[frozenset[str]] = field(init=False)
    outbox_rows: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.keys = [erasure_keys(e) for e in self.envelopes]
        stored = (as_stored(e) for e in self.envelopes)
        # Payloads come from the HTTP schemas, validated a moment ago.
        self.outbox_rows = outbox_rows(
            (Outgoing(TRAFFIC, e.partition_key, e) for e in stored), validate_payload=False
        )

    @property
    def rows(self) -> int:
        return max(1, len(self.envelopes) + len(self.rejections))


def write_group(conn: Connection, writes: Sequence[PendingWrite]) -> list[Written]:
    """Write every member in ``conn``'s transaction; one result per member, in order."""
    for w in writes:
        failed.record(conn, w.source, list(w.rejections))
    # Erased people's events are dropped (one lookup for the group); analytics-denied
    # ones were stripped when the write was made.
    erased = erased_at_the_door(conn, {k for w in writes for keys in w.keys for k in keys})
    rows: list[dict[str, Any]] = []
    owners: list[int] = []
    dropped = [0] * len(writes)
    for index, w in enumerate(writes):
        for keys, row in zip(w.keys, w.outbox_rows, strict=True):
            if keys & erased:
                dropped[index] += 1
            else:
                rows.append(row)
                owners.append(index)
    if any(dropped):
        log.info("dropped %d events of erased people", sum(dropped))
    fresh: set[str] = set()
    if rows:
        # Counted by RETURNING (a many-row INSERT's rowcount is unreliable on psycopg2).
        statement = insert_ignoring_duplicates(outbox, conn.dialect.name).returning(
            outbox.c.event_id
        )
        # In arrival order: the outbox's ids are the order events reach Kafka in, and a
        # person's events must keep theirs. (Two workers' groups sharing ids can then
        # deadlock on PostgreSQL; the group is retried member by member.)
        fresh = {row[0] for row in conn.execute(statement, rows)}
    new = [0] * len(writes)
    for owner, row in zip(owners, rows, strict=True):
        if row["event_id"] in fresh:
            fresh.discard(row["event_id"])  # the first carrier gets it; later ones: duplicates
            new[owner] += 1
    return [Written(new=new[i], dropped=dropped[i]) for i in range(len(writes))]


_STOP = object()
_INSTANCES: weakref.WeakSet[GroupCommit] = weakref.WeakSet()


class GroupCommit:
    def __init__(
        self,
        engine: Engine,
        *,
        max_rows: int,
        wait_ms: float,
        queue_size: int,
        timeout_s: float,
    ) -> None:
        self.engine = engine
        self.max_rows = max_rows
        self.wait_s = max(0.0, wait_ms) / 1000
        self.queue_size = max(1, queue_size)
        self.timeout_s = timeout_s
        self._reset()
        _INSTANCES.add(self)

    @property
    def enabled(self) -> bool:
        return self.max_rows > 0

    def _reset(self) -> None:
        """Fresh per-process state (at creation and in a forked child: the parent's thread
        does not exist there, and its locks may be held)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue(self.queue_size)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._preparing = 0
        self._atexit_registered = False

    # ------------------------------------------------------------------ request side

    def expect(self) -> None:
        """A request passed the door and will probably write: worth lingering for."""
        with self._lock:
            self._preparing += 1

    def unexpect(self) -> None:
        with self._lock:
            self._preparing = max(0, self._preparing - 1)

    def write(
        self,
        source: str,
        envelopes: Sequence[Envelope],
        rejections: Sequence[failed.Rejection],
        *,
        expected: bool = False,
    ) -> Written:
        """Make the write durable and return its result only once it is committed.
        ``expected``: the caller announced itself with :meth:`expect`. Raises SQLAlchemy's
        error if the store refused this write, :class:`Overloaded` when the queue is full
        or the write took longer than ``timeout_s``."""
        try:
            pending = PendingWrite(source, envelopes, rejections)
        except BaseException:
            if expected:  # not coming any more: the writer must not linger for it
                self.unexpect()
            raise
        if not self.enabled:
            if expected:
                self.unexpect()
            return self._write_alone(pending)
        with self._lock:
            if self._pid != os.getpid():  # pragma: no cover - at-fork hook renews first
                self._reset()
            if expected:  # here, under the lock with the put: the writer sees one or other
                self._preparing = max(0, self._preparing - 1)
            if self._closed:
                closed = True
            else:
                closed = False
                self._ensure_thread()
                try:
                    self._queue.put_nowait(pending)
                except queue.Full:
                    raise Overloaded(
                        f"{self.queue_size} writes already waiting for the store"
                    ) from None
        if closed:  # shutting down: no writer any more, commit here
            return self._write_alone(pending)
        if not pending.done.wait(self.timeout_s):
            pending.abandoned = True
            raise Overloaded(f"the write did not commit within {self.timeout_s:g}s")
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _write_alone(self, pending: PendingWrite) -> Written:
        with self.engine.begin() as conn:
            self._bound(conn)
            return write_group(conn, [pending])[0]

    def _bound(self, conn: Connection) -> None:
        """On PostgreSQL, a statement of the write gives up well before its requests stop
        waiting (``timeout_s``): a request never answers 503 for a write that then
        commits (a retry of an event without a messageId would be a second copy)."""
        if conn.dialect.name == "postgresql":
            limit_ms = max(100, int(self.timeout_s * 1000 * 0.7))
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {limit_ms}")

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(
            target=self._run, name=f"intake-group-commit-{os.getpid()}", daemon=True
        )
        self._thread.start()
        if not self._atexit_registered:
            atexit.register(self.close)
            self._atexit_registered = True

    # ------------------------------------------------------------------- writer side

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # a writer puts under this lock
                        self._thread = None
                        return
                continue
            if first is _STOP:
                return
            group, stop = self._collect(first)
            try:
                self._commit(group)
            except BaseException:  # pragma: no cover - _commit completes each member itself
                log.exception("group commit failed unexpectedly")
            if stop:
                return

    def _collect(self, first: object) -> tuple[list[PendingWrite], bool]:
        assert isinstance(first, PendingWrite)
        group = [first]
        rows = first.rows
        deadline = time.monotonic() + self.wait_s
        while rows < self.max_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._preparing <= 0 or self._closed:
                    break
                try:
                    item = self._queue.get(timeout=min(remaining, _POLL_S))
                except queue.Empty:
                    continue
            if item is _STOP:
                return group, True
            assert isinstance(item, PendingWrite)
            group.append(item)
            rows += item.rows
        return group, False

    def _commit(self, group: list[PendingWrite]) -> None:
        live = [w for w in group if not w.abandoned]
        try:
            if len(live) > 1:
                try:
                    with self.engine.begin() as conn:
                        self._bound(conn)
                        results = write_group(conn, live)
                except Exception:
                    log.warning(
                        "group of %d writes failed; writing each alone", len(live), exc_info=True
                    )
                else:
                    for w, result in zip(live, results, strict=True):
                        w.result = result
                    return
            store_error: BaseException | None = None
            for w in live:
                if store_error is not None:
                    w.error = store_error
                    continue
                if w.abandoned:
                    continue
                try:
                    w.result = self._write_alone(w)
                except OperationalError as exc:
                    w.error = store_error = exc
                except Exception as exc:
                    w.error = exc
        finally:
            for w in group:
                w.done.set()

    def close(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Write what is queued, then stop the writer (later writes commit alone)."""
        with self._lock:
            if self._pid != os.getpid():
                return
            self._closed = True
            thread = self._thread
            if thread is None or not thread.is_alive():
                return
            stop_sent = True
            try:
                self._queue.put(_STOP, timeout=timeout_s)
            except queue.Full:  # pragma: no cover - the writer is stuck on the store
                stop_sent = False
        if stop_sent:
            thread.join(timeout_s)


def _renew_after_fork() -> None:
    for instance in list(_INSTANCES):
        instance._reset()


os.register_at_fork(after_in_child=_renew_after_fork)
