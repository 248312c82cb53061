"""Every service's migration history, run from an empty database on SQLite and on
PostgreSQL, gives exactly the models' schema; ``init_db`` stamps a fresh database at
the newest revision and adopts one made before migrations; running it again changes
nothing."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select, text

from shared.migrations import (
    BASELINE,
    SERVICES,
    alembic_config,
    current,
    differences,
    head,
    upgrade_from_empty,
)


def models(service: str) -> object:
    return importlib.import_module(f"services.{service}.models").metadata


def init_db_of(service: str) -> Callable:
    return importlib.import_module(f"services.{service}.app").init_db


@pytest.mark.parametrize("service", SERVICES)
def test_the_history_from_empty_equals_the_models(service: str, database_url: str) -> None:
    engine = create_engine(database_url)
    upgrade_from_empty(engine, service)
    assert current(engine) == head(service)
    assert differences(engine, models(service)) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("service", SERVICES)
def test_init_db_stamps_fresh_databases_and_adopts_old_ones(service: str, sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    init_db_of(service)(engine)
    assert current(engine) == head(service)
    init_db_of(service)(engine)  # idempotent
    assert current(engine) == head(service)

    # A database made before migrations: the baseline's tables, no alembic_version.
    old = create_engine(sqlite_url.replace("test.db", "old.db"))
    command.upgrade(alembic_config(service, old), BASELINE)
    with old.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    assert "alembic_version" not in inspect(old).get_table_names()
    init_db_of(service)(old)
    assert current(old) == head(service)
    assert differences(old, models(service)) == []  # type: ignore[arg-type]


def test_journeys_are_backfilled_for_the_people_a_database_holds(database_url: str) -> None:
    """Upgraded with people in it, member-retargeting counts them where they are in the
    funnel (not as new visitors on their next lead event)."""
    from datetime import UTC, datetime

    from services.member_retargeting.models import Behaviour, Contact, ContactIdentity, Journey

    engine = create_engine(database_url)
    command.upgrade(alembic_config("member_retargeting", engine), BASELINE)
    seen = datetime(2026, 1, 5, tzinfo=UTC)
    later = datetime(2026, 3, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            Contact.__table__.insert(),
            [
                {
                    "lead_id": "L1",
                    "stage": "mql",
                    "is_member": False,
                    "updated_at": later,
                    "merged_into": None,
                },
                {
                    "lead_id": "L2",
                    "stage": "lead",
                    "is_member": True,
                    "updated_at": later,
                    "merged_into": None,
                },
                {
                    "lead_id": "L3",
                    "stage": "mql",
                    "is_member": False,
                    "updated_at": later,
                    "merged_into": "L1",
                },
            ],
        )
        conn.execute(
            ContactIdentity.__table__.insert(),
            [{"kind": "anonymous_id", "value": "a1", "lead_id": "L1"}],
        )
        conn.execute(
            Behaviour.__table__.insert(),
            [
                {
                    "kind": "anonymous_id",
                    "value": "a1",
                    "event": "Page",
                    "at": seen,
                    "event_id": "e1",
                }
            ],
        )
    command.upgrade(alembic_config("member_retargeting", engine), "head")
    with engine.connect() as conn:
        rows = {r.lead_id: r for r in conn.execute(select(Journey.__table__)).all()}
        owners = conn.execute(select(text("value, journey_id FROM journey_identities"))).all()
    assert set(rows) == {"L1", "L2"}  # the merged contact counts in L1
    assert (rows["L1"].reached, rows["L1"].first_seen_at, rows["L1"].channel) == (
        2,
        seen,
        "unknown",
    )
    assert rows["L2"].reached == 4 and rows["L2"].first_seen_at == later  # a member
    assert [(value, journey) for value, journey in owners] == [("a1", rows["L1"].id)]
