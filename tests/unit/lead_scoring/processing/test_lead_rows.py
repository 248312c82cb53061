"""Leads read and written with Core statements (:mod:`.processing.lead_rows`), on SQLite
and PostgreSQL: what is read is what the ORM reads, only what changed is written, and a
lead the session already holds as an ORM object is never read a second time beside it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.lead_scoring.app import init_db
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import Lead
from services.lead_scoring.processing.batch import TrafficBatch
from services.lead_scoring.processing.lead_rows import (
    COLUMNS,
    LEADS,
    LeadRow,
    read_rows,
    write_rows,
)
from shared.db import make_engine, make_sessionmaker

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _sessions(database_url: str) -> tuple[Engine, sessionmaker[Session]]:
    engine = make_engine(database_url)
    init_db(engine)
    return engine, make_sessionmaker(engine)


def _lead(lead_id: str, **values: object) -> Lead:
    base: dict[str, object] = {
        "id": lead_id,
        "stage": "subscriber",
        "score": 0,
        "traits": {},
        "account_traits": {},
        "intent": {},
        "created_at": AT,
        "updated_at": AT,
    }
    return Lead(**{**base, **values})


def test_read_rows_gives_what_the_orm_reads(database_url: str) -> None:
    engine, sessions = _sessions(database_url)
    with sessions.begin() as session:
        session.add_all(
            [
                _lead("b", score=7, traits={"plan": "pro"}, intent={"pricing": 3}),
                _lead("a", email="ann@example.com", last_event_at=AT + timedelta(hours=1)),
            ]
        )
    with sessions.begin() as session:
        rows = read_rows(session, ["b", "missing", "a"])
        assert [row.id for row in rows] == ["a", "b"]
        for row in rows:
            orm = session.get(Lead, row.id)
            assert orm is not None
            assert {name: getattr(row, name) for name in COLUMNS} == {
                name: getattr(orm, name) for name in COLUMNS
            }
        assert rows[0].last_event_at == AT + timedelta(hours=1)
        assert rows[0].last_event_at.tzinfo is not None
        assert read_rows(session, []) == []
    engine.dispose()


def test_write_rows_writes_new_and_changed_rows_only(database_url: str) -> None:
    engine, sessions = _sessions(database_url)
    with sessions.begin() as session:
        session.add_all([_lead("kept", score=1), _lead("changed", traits={"a": 1})])
    with sessions.begin() as session:
        kept, changed = sorted(
            read_rows(session, ["kept", "changed"]), key=lambda r: r.id != "kept"
        )
        new = LeadRow(
            {**{name: getattr(kept, name) for name in COLUMNS}, "id": "new"}, stored=False
        )
        new.score = 5
        changed.traits["b"] = 2  # a change inside the dict itself still counts
        changed.score = 9
        assert write_rows(session, [kept, changed, new]) == 2
        assert write_rows(session, [kept, changed, new]) == 0  # they match the database now
    with sessions() as session:
        stored = {lead.id: lead for lead in session.scalars(select(Lead))}
        assert set(stored) == {"kept", "changed", "new"}
        assert (stored["changed"].score, stored["changed"].traits) == (9, {"a": 1, "b": 2})
        assert (stored["new"].score, stored["kept"].score) == (5, 1)
    engine.dispose()


def test_a_lead_the_session_holds_is_used_not_read_again(database_url: str) -> None:
    engine, sessions = _sessions(database_url)
    with sessions.begin() as session:
        session.add(_lead("orm"))
    with sessions.begin() as session:
        held = session.get(Lead, "orm")
        assert held is not None
        # Changed behind the ORM's back (a Core write it never saw, as a batch's is): the
        # held object is brought up to the row the batch locks, not trusted as it is.
        session.execute(update(LEADS).where(LEADS.c.id == "orm").values(score=2))
        assert held.score == 0
        held.stage = "lead"  # a change not flushed yet: it must be written, not overwritten
        pending = _lead("pending")  # not flushed yet: the batch must still find it
        session.add(pending)
        batch = TrafficBatch(session, ScoringModel().history_scope, since=AT)
        batch.preload([])
        batch._load(["orm", "pending"])
        assert batch.lead("orm") is held and (held.score, held.stage) == (2, "lead")
        assert held not in session.dirty  # brought up to date, not a change to write
        assert batch.lead("pending") is pending
        fresh = batch.create_lead(AT)
        batch.lead("orm").score += 2
        fresh.score = 3
        batch.flush()
    _check_scores(sessions, {"orm": 4, fresh.id: 3, "pending": 0})
    engine.dispose()


def _check_scores(sessions: sessionmaker[Session], expected: dict[str, int]) -> None:
    with sessions() as session:
        scores = {lead_id: score for lead_id, score in session.execute(select(Lead.id, Lead.score))}
    assert scores == expected
