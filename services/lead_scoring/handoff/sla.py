"""The follow-up SLA: an MQL neither accepted nor rejected within ``sla_hours`` of
becoming one is overdue. The overdue list (API and pages) and the escalation job
(:mod:`services.lead_scoring.jobs.sla`) share this definition."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, select

from services.lead_scoring.models import Lead


def overdue_query(now: datetime, sla_hours: float) -> Select[Lead]:
    """MQLs neither accepted nor rejected within the SLA, oldest first."""
    cutoff = now - timedelta(hours=sla_hours)
    return (
        select(Lead)
        .where(Lead.stage == "mql", Lead.merged_into.is_(None), Lead.mql_at < cutoff)
        .order_by(Lead.mql_at)
    )


def overdue_hours(lead: Lead, now: datetime, sla_hours: float) -> float:
    """How far past the SLA an overdue lead is, in hours (0 for a lead never MQL)."""
    if lead.mql_at is None:
        return 0.0
    return (now - lead.mql_at).total_seconds() / 3600 - sla_hours
