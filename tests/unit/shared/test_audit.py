"""The audit log's own rules: secrets never kept, big values cut, a person's identifiers
replaced by ``[erased]`` on erasure (who did what stays), old entries pruned."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import MetaData, create_engine, select

from shared.audit import ERASED, MAX_AUDIT_BYTES, audit_table, plain, prune, record, scrub
from shared.db import utcnow


def test_secrets_are_never_kept_and_big_values_are_cut() -> None:
    kept = plain({"id": 1, "token": "fpa_x", "nested": [{"write_key": "wk"}], "name": "n"})
    assert kept == {
        "id": 1,
        "token": "[secret]",
        "nested": [{"write_key": "[secret]"}],
        "name": "n",
    }
    big = plain({"blob": "x" * (2 * MAX_AUDIT_BYTES)})
    assert big["cut"] is True and len(big["start"]) <= MAX_AUDIT_BYTES


def test_scrub_replaces_a_persons_identifiers_and_prune_drops_old_entries() -> None:
    metadata = MetaData()
    table = audit_table(metadata)
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        for target, after in (
            ("lead:L1", {"email": "grace@x.co", "stage": "sql"}),
            ("lead:L2", {"email": "ada@x.co"}),
        ):
            record(
                conn,
                table,
                action="lead.update",
                target=target,
                before=None,
                after=after,
                actor_role="admin",
                actor="Ann",
            )
        assert scrub(conn, table, ["grace@x.co", "L1"]) == 1
        rows = conn.execute(select(table).order_by(table.c.id)).all()
        assert rows[0].target == ERASED and rows[0].after == {"email": ERASED, "stage": "sql"}
        assert rows[0].actor == "Ann" and rows[1].after == {"email": "ada@x.co"}
        assert prune(conn, table, utcnow() + timedelta(seconds=1)) == 2
        assert conn.execute(select(table)).all() == []
