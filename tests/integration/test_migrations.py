"""Every service's migration history, run from an empty database on SQLite and on
PostgreSQL, gives exactly the models' schema; ``init_db`` stamps a fresh database at
the newest revision and adopts one made before migrations; running it again changes
nothing."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

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
