"""Rescoring time: every lead scored again from its stored history after a rule change.
Baseline: reading the same history rows with one Core query, in the same run."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select

from services.lead_scoring.app import init_db
from services.lead_scoring.jobs.rescore import rescore_step
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import Lead, LeadEvent, RescoreJob, RuleSet
from services.lead_scoring.rulesets.active import RuleSetCache
from services.lead_scoring.rulesets.documents import document_from_model
from shared.db import make_engine, make_sessionmaker, utcnow

HISTORY = (("page", None, "/"), ("page", "Pricing", "/pricing"), ("track", "Form Submitted", None))


def build(path: Path, leads: int) -> str:
    """A scoring database with ``leads`` leads of three events each (bulk Core inserts)."""
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    init_db(engine)
    now = utcnow()
    with engine.begin() as conn:
        for start in range(0, leads, 5000):
            ids = [uuid.uuid4().hex for _ in range(start, min(leads, start + 5000))]
            conn.execute(
                insert(Lead),
                [
                    {
                        "id": i,
                        "stage": "lead",
                        "score": 0,
                        "email": f"{i}@x.co",
                        "traits": {},
                        "account_traits": {},
                        "intent": {},
                        "fit_score": 0,
                        "fit_grade": "D",
                        "engagement_raw": 0.0,
                        "rules_version": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(LeadEvent),
                [
                    {
                        "lead_id": i,
                        "event_id": f"{i}-{n}",
                        "type": kind,
                        "name": name,
                        "path": path_,
                        "properties": {"path": path_} if path_ else {},
                        "page_context": {},
                        "occurred_at": now - timedelta(days=3 - n),
                    }
                    for i in ids
                    for n, (kind, name, path_) in enumerate(HISTORY)
                ],
            )
    engine.dispose()
    return url


def read_history(url: str) -> float:
    engine = make_engine(url)
    started = time.monotonic()
    with engine.connect() as conn:
        rows = conn.execute(select(LeadEvent.__table__)).all()
    elapsed = time.monotonic() - started
    engine.dispose()
    assert rows
    return elapsed


def rescore_all(url: str, leads: int, max_seconds: float = 600) -> float:
    """Seconds to rescore every lead for a new rule-set version."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    model = ScoringModel()
    document = document_from_model(model)
    with sessions.begin() as session:
        version = (session.query(RuleSet).count()) + 1
        session.add(RuleSet(version=version, document=document, note="bench"))
        session.add(RescoreJob(version=version, total=leads, failed=0, status="pending"))
    rule_sets = RuleSetCache(model, ttl=0)
    started = time.monotonic()
    done = 0
    while time.monotonic() - started < max_seconds:
        step = rescore_step(sessions, rule_sets, budget_s=30, chunk=1000)
        if not step:
            break
        done += step
    elapsed = time.monotonic() - started
    engine.dispose()
    assert done == leads, f"rescored {done} of {leads}"
    return elapsed
