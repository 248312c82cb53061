"""SQLite transactions: writers take the lock up front; reads (``reading()``, what GET and
HEAD requests run in) neither wait for it nor can write."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from shared.db import make_engine, reading


def _table(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    engine.dispose()


def test_a_read_does_not_queue_behind_a_writer(sqlite_url: str) -> None:
    _table(sqlite_url)
    api = make_engine(sqlite_url, busy_timeout_ms=200)
    consumer = make_engine(sqlite_url)
    with consumer.begin() as writing:  # a consumer's batch, holding the write lock
        writing.exec_driver_sql("INSERT INTO t VALUES (2)")
        with pytest.raises(OperationalError, match="locked"), api.begin() as conn:
            conn.exec_driver_sql("SELECT v FROM t")
        with reading(), api.begin() as conn:
            # The last commit, not the batch in flight.
            assert [v for (v,) in conn.exec_driver_sql("SELECT v FROM t")] == [1]
    with reading(), api.begin() as conn:
        assert [v for (v,) in conn.exec_driver_sql("SELECT v FROM t ORDER BY v")] == [1, 2]
    api.dispose()
    consumer.dispose()


def test_a_read_cannot_write_and_its_connection_writes_again_after(sqlite_url: str) -> None:
    _table(sqlite_url)
    engine = make_engine(sqlite_url, pool_size=1, max_overflow=0)  # one connection, reused
    with (
        pytest.raises(OperationalError, match="readonly"),
        reading(),
        engine.begin() as conn,
    ):
        conn.exec_driver_sql("INSERT INTO t VALUES (3)")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (4)")
        assert [v for (v,) in conn.exec_driver_sql("SELECT v FROM t ORDER BY v")] == [1, 4]
    engine.dispose()
