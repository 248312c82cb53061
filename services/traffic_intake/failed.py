"""Rejected events are kept, never thrown away.

Each rejected event (schema or size violation, single call or batch item) becomes a row in
``failed_events`` and a dead letter on ``funnel.deadletter`` (through the outbox, in the
same transaction), with a typed reason. An admin can list them and resubmit one, as sent
or corrected; ``resubmit_all_valid`` retries every pending one against today's schemas
(after a schema fix or a raised limit). Resubmission keeps the event's messageId (or a
stable ``failed-<id>``), so it can never publish the same event twice.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import Connection, Engine, delete, insert, select, update

from services.traffic_intake.models import failed_events, outbox
from services.traffic_intake.schemas import CALL_SCHEMAS
from services.traffic_intake.segment import to_envelope
from shared.deadletter import DeadLetter
from shared.http import flatten_field_errors
from shared.identity import is_junk_id
from shared.limits import json_size, truncate
from shared.outbox import Outgoing, dead_letter_row, enqueue
from shared.topics import TRAFFIC, TRAFFIC_INTAKE

MAX_REASON_TEXT = 4000


@dataclass(frozen=True)
class Rejection:
    path: str
    call_type: str | None
    batch_index: int | None
    kind: str  # schema_violation | size_violation
    field_errors: dict[str, list[str]]
    body: bytes

    @property
    def reason(self) -> str:
        text = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(self.field_errors.items()))
        return truncate(text, MAX_REASON_TEXT)


def record(conn: Connection, source: str, rejections: list[Rejection]) -> None:
    """Keep the rejections: one row each and one dead letter each, in ``conn``'s
    transaction."""
    if not rejections:
        return
    now = datetime.now(UTC)
    for r in rejections:
        row_id = conn.execute(
            insert(failed_events)
            .values(
                received_at=now,
                source=source,
                path=r.path,
                call_type=r.call_type,
                batch_index=r.batch_index,
                kind=r.kind,
                reason=r.reason,
                field_errors=r.field_errors,
                body=r.body,
            )
            .returning(failed_events.c.id)
        ).scalar_one()
        letter = DeadLetter(
            source=f"http:{r.path}",
            partition=-1,
            offset=-1,
            key=None,
            value=r.body,
            consumer=TRAFFIC_INTAKE,
            kind=r.kind,
            reason=f"[{source} #{row_id}] {r.reason}",
        )
        conn.execute(insert(outbox), [dead_letter_row(letter, f"dlq-{uuid.uuid4().hex}")])


@dataclass(frozen=True)
class Resubmitted:
    event_id: str
    accepted: bool  # False: this event was accepted before (a duplicate), not published again


class NotFound(LookupError):
    pass


def resubmit(
    conn: Connection,
    failed_id: int,
    corrected: dict[str, Any] | None,
    *,
    received_at: datetime,
    max_event_bytes: int,
) -> Resubmitted:
    """Validate (the corrected or the stored) event against today's schema and size limit
    and accept it. Raises ``ValidationError`` (field names flattened) if it is still
    invalid, ``NotFound`` for an unknown id."""
    row = conn.execute(select(failed_events).where(failed_events.c.id == failed_id)).first()
    if row is None:
        raise NotFound(failed_id)
    try:
        event = corrected if corrected is not None else json.loads(row.body)
    except ValueError as exc:
        raise ValidationError(
            {"event": ["stored body is not JSON; send a corrected event"]}
        ) from exc
    if not isinstance(event, dict):
        raise ValidationError({"event": ["must be a JSON object"]})
    size = json_size(event)
    if size > max_event_bytes:
        raise ValidationError({"_event": [f"{size} bytes; max {max_event_bytes}"]})
    call_type = event.get("type") or row.call_type
    if call_type not in CALL_SCHEMAS:
        raise ValidationError({"type": [f"must be one of {sorted(CALL_SCHEMAS)}"]})
    try:
        call = CALL_SCHEMAS[call_type]().load(event)
    except ValidationError as exc:
        raise ValidationError(flatten_field_errors(exc.messages)) from exc
    if not call.get("messageId") or is_junk_id(call["messageId"]):
        call["messageId"] = f"failed-{row.id}"  # stable: a second resubmit is a duplicate
    envelope = to_envelope(
        call_type, call, source=row.source, received_at=received_at, client_ip=None
    )
    new = enqueue(
        conn, outbox, [Outgoing(TRAFFIC, envelope.partition_key, envelope)], validate_payload=False
    )
    conn.execute(
        update(failed_events)
        .where(failed_events.c.id == row.id)
        .values(resubmitted_at=received_at, resubmitted_event_id=envelope.event_id)
    )
    return Resubmitted(envelope.event_id, accepted=bool(new))


def resubmit_all_valid(
    conn: Connection, *, limit: int, received_at: datetime, max_event_bytes: int
) -> tuple[int, int]:
    """Resubmit pending failed events that are valid now; returns (resubmitted, still_bad)."""
    ids = conn.scalars(
        select(failed_events.c.id)
        .where(failed_events.c.resubmitted_at.is_(None))
        .order_by(failed_events.c.id)
        .limit(limit)
    ).all()
    done = bad = 0
    for failed_id in ids:
        try:
            with conn.begin_nested():
                resubmit(
                    conn, failed_id, None, received_at=received_at, max_event_bytes=max_event_bytes
                )
            done += 1
        except ValidationError:
            bad += 1
    return done, bad


def prune(engine: Engine, older_than: datetime) -> int:
    """Delete failed events received before ``older_than`` (their retention ended);
    returns how many."""
    with engine.begin() as conn:
        result = conn.execute(delete(failed_events).where(failed_events.c.received_at < older_than))
    return int(result.rowcount or 0)
