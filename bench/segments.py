"""Segment evaluation and campaign dispatch on PostgreSQL at member scale.

* ``build``: a retargeting database of ``members`` members (tiers, orders, RFM) with one
  identifier each and two behaviours each (a product added in the last week for a third
  of them, an order for half), loaded with COPY and ANALYZEd.
* ``segment_seconds``: a segment counted the way the API counts it (one set-based query
  compiled from the rule) — the cart abandoners (behaviour in a window and not another)
  and "gold and no purchase in 90 days" (attributes). Baseline: ``SELECT count(*)`` over
  the same contacts, in the same run.
* ``dispatch_rate``: a campaign run over ``people`` consenting contacts, worked chunk by
  chunk as the scheduler does (consent, suppression and cap checks, one dispatch event
  per person in the outbox, a ledger line each); recipients per second. Baseline: the
  same number of outbox rows written with plain bulk INSERTs (what writing the events
  alone costs).
"""

from __future__ import annotations

import io
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text

from services.member_retargeting.app import init_db
from services.member_retargeting.campaigns.runs import Limits, start, work
from services.member_retargeting.model.segments import parse
from services.member_retargeting.model.suppression import EMAIL, suppression_key
from services.member_retargeting.models import Campaign, CampaignRun, Contact, outbox
from services.member_retargeting.people.segments import count
from shared.db import make_engine, make_sessionmaker

CART = {
    "all": [
        {"event": "Product Added", "within_days": 3},
        {"not": {"event": "Order Completed", "within_days": 3}},
    ]
}
LAPSED_GOLD = {
    "all": [
        {"attribute": "tier", "op": "eq", "value": "gold"},
        {"attribute": "days_since_last_order", "op": "gte", "value": 90},
    ]
}
TIERS = ("member", "silver", "gold")


def _copy(engine: Any, table: str, columns: list[str], rows: Any) -> None:
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join("\\N" if v is None else str(v) for v in row) + "\n")
    buffer.seek(0)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)
        raw.commit()
    finally:
        raw.close()


def _contacts(ids: range, now: datetime) -> Any:
    for i in ids:
        last = now - timedelta(days=i % 400)
        yield (
            f"M{i:07}", "customer", i % 100, f"m{i}@x.co", f"u{i}", "{}", "{}", "true",
            now.isoformat(), TIERS[i % 3], i % 9 + 1, (i % 50) * 10 + 5, last.isoformat(),
            i % 5 + 1, (i // 5) % 5 + 1, (i // 25) % 5 + 1,
            suppression_key(EMAIL, f"m{i}@x.co"),
        )  # fmt: skip


def _behaviours(ids: range, now: datetime) -> Any:
    for i in ids:
        product = f"p{i % 500}"
        if i % 3 == 0:
            added = now - timedelta(hours=i % 160)
            yield ("user_id", f"u{i}", "Product Added", product, added.isoformat(), f"a{i}")
        if i % 2 == 0:
            bought = now - timedelta(days=i % 30)
            yield ("user_id", f"u{i}", "Order Completed", product, bought.isoformat(), f"o{i}")


CONTACT_COLUMNS = [
    "lead_id", "stage", "score", "email", "user_id", "traits", "intent", "is_member",
    "updated_at", "tier", "orders_count", "revenue_total", "last_order_at", "rfm_recency",
    "rfm_frequency", "rfm_monetary", "email_key",
]  # fmt: skip


def build(url: str, members: int, now: datetime, consent: bool = False) -> None:
    """``members`` members in a fresh database at ``url`` (PostgreSQL), in slices."""
    engine = make_engine(url)
    init_db(engine)
    step = 100_000
    for first in range(0, members, step):
        ids = range(first, min(members, first + step))
        _copy(engine, "contacts", CONTACT_COLUMNS, _contacts(ids, now))
        _copy(
            engine,
            "contact_identities",
            ["kind", "value", "lead_id"],
            (("user_id", f"u{i}", f"M{i:07}") for i in ids),
        )
        _copy(
            engine,
            "behaviours",
            ["kind", "value", "event", "product_id", "at", "event_id"],
            _behaviours(ids, now),
        )
        if consent:
            _copy(
                engine,
                "consents",
                ["kind", "value", "purpose", "granted", "at", "event_id"],
                (("user_id", f"u{i}", "marketing", "true", now.isoformat(), f"c{i}") for i in ids),
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


def segment_seconds(url: str, rule: dict[str, Any], now: datetime) -> float:
    """Seconds to count the segment (one query, as the API counts it)."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    parsed = parse(rule)
    with sessions() as session:
        started = time.perf_counter()
        count(session, parsed, now)
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def count_all_seconds(url: str) -> float:
    engine = make_engine(url)
    with engine.connect() as conn:
        started = time.perf_counter()
        conn.execute(select(func.count()).select_from(Contact)).scalar_one()
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def dispatch_rate(url: str, now: datetime, chunk: int = 500) -> float:
    """Recipients per second for one campaign run over every contact."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        campaign = Campaign(
            name=f"bench-{uuid.uuid4().hex[:6]}",
            segment={"all": []},
            channel="email",
            kind="transactional",  # every run of the bench reaches everyone (no cap)
            message={"subject": "Hi {{ first_name | default('there') }}", "body": "Back soon"},
        )
        session.add(campaign)
        session.flush()
        run, _ = start(
            session, campaign, key="bench", trigger="bench", requested_by="bench", now=now
        )
        run_id, size = run.id, run.audience_size
    limits = Limits(per_day=1000, per_week=1000, chunk=chunk)
    started = time.perf_counter()
    while True:
        with sessions.begin() as session:
            row = session.get(CampaignRun, run_id)
            assert row is not None
            if work(session, row, limits, now) == 0 or row.status == "done":
                break
    elapsed = time.perf_counter() - started
    engine.dispose()
    return size / elapsed


def outbox_insert_rate(url: str, rows: int, chunk: int = 500) -> float:
    """Rows per second for plain bulk INSERTs of dispatch-sized outbox rows."""
    engine = make_engine(url)
    value = b"x" * 600
    started = time.perf_counter()
    for first in range(0, rows, chunk):
        with engine.begin() as conn:
            conn.execute(
                insert(outbox),
                [
                    {
                        "event_id": uuid.uuid4().hex,
                        "topic": "funnel.dispatch",
                        "key": f"k{i}",
                        "value": value,
                        "created_at": datetime.now(UTC),
                    }
                    for i in range(first, min(rows, first + chunk))
                ],
            )
    elapsed = time.perf_counter() - started
    engine.dispose()
    return rows / elapsed
