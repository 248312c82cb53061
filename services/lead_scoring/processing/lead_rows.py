"""Leads as the consumer's batch holds them: plain rows, read and written with Core
statements.

The traffic consumer changes every lead its batch names, several times per event. As
ORM objects each read and write of an attribute went through SQLAlchemy's
instrumentation and the batch's end through the unit of work: together about a fifth of
the consumer's time in-process (``python -m bench.inprocess scoring --profile``). A
:class:`LeadRow` is a plain object with the ``leads`` columns as slots;
:func:`read_rows` reads them (locked) with one SELECT, :func:`write_rows` writes the
batch's new ones with one INSERT and its changed ones with one executemany UPDATE.

Code that takes a lead accepts either kind (:data:`LeadState`): the sales API, the jobs
and splits keep ORM :class:`~services.lead_scoring.models.Lead` objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from services.lead_scoring.models import Lead

LEADS: Table = Lead.__table__  # type: ignore[assignment]  # a declarative class's table
COLUMNS: tuple[str, ...] = tuple(column.name for column in LEADS.c)


class LeadRow:
    """One ``leads`` row as plain attributes (see the module docstring). ``stored`` is the
    row as the database has it (None: not inserted yet); :func:`write_rows` compares the
    attributes with it and brings it up to date."""

    __slots__ = (*COLUMNS, "stored")

    id: str
    stage: str
    score: int
    fit_score: int
    fit_grade: str
    engagement_raw: float
    intent: dict[str, int]
    rules_version: int
    email: str | None
    user_id: str | None
    traits: dict[str, Any]
    account_id: str | None
    account_traits: dict[str, Any]
    merged_into: str | None
    owner_id: int | None
    assigned_at: datetime | None
    mql_at: datetime | None
    sla_breached_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_event_at: datetime | None
    version: int
    stored: tuple[Any, ...] | None

    def __init__(self, values: dict[str, Any], *, stored: bool) -> None:
        """``values`` must name every column. ``stored``: they are the database's."""
        for name in COLUMNS:
            setattr(self, name, values[name])
        self.stored = self.values() if stored else None

    def values(self) -> tuple[Any, ...]:
        """The columns' values, in :data:`COLUMNS` order. JSON values are copied (shallow)
        so that a later change to the dict itself still shows as a change."""
        return tuple(
            dict(value) if type(value) is dict else value
            for value in (getattr(self, name) for name in COLUMNS)
        )

    def __repr__(self) -> str:
        return f"LeadRow(id={self.id!r}, stage={self.stage!r}, score={self.score!r})"


# A lead as code that changes one takes it: the sales API, jobs and splits hold ORM leads,
# the consumer's batch holds rows.
LeadState = Lead | LeadRow


def read_rows(session: Session, lead_ids: Sequence[str]) -> list[LeadRow]:
    """The leads with these ids, locked for the transaction (``FOR UPDATE``; SQLite's
    write lock covers it), in id order. Missing ids are left out."""
    if not lead_ids:
        return []
    query = select(*LEADS.c).where(LEADS.c.id.in_(lead_ids)).order_by(LEADS.c.id).with_for_update()
    return [LeadRow(row._asdict(), stored=True) for row in session.execute(query)]


_UPDATE = (
    update(LEADS)
    .where(LEADS.c.id == bindparam("_id", type_=LEADS.c.id.type))
    .values({name: bindparam(name, type_=LEADS.c[name].type) for name in COLUMNS if name != "id"})
)


def write_rows(session: Session, rows: Iterable[LeadRow]) -> int:
    """Write what changed: one INSERT for the rows not stored yet, one executemany UPDATE
    for the stored rows whose values differ. Returns how many rows were written. Runs in
    the session's transaction; the rows then match the database."""
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    kept: list[tuple[LeadRow, tuple[Any, ...]]] = []
    for row in rows:
        values = row.values()
        if values == row.stored:
            continue
        params = dict(zip(COLUMNS, values, strict=True))
        if row.stored is None:
            new.append(params)
        else:
            params["_id"] = params.pop("id")
            changed.append(params)
        kept.append((row, values))
    connection = session.connection()
    if new:
        connection.execute(insert(LEADS), new)
    if changed:
        connection.execute(_UPDATE, changed)
    for row, values in kept:
        row.stored = values
    return len(kept)
