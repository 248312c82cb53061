"""What a traffic-intake app holds while it runs, and the one typed way to reach it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, Table

from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.group_commit import GroupCommit
from services.traffic_intake.sources import SourceDirectory
from shared.http import Api, app_state
from shared.ratelimit import TokenBuckets

STATE = "intake"


@dataclass
class IntakeState:
    config: IntakeConfig
    engine: Engine
    outbox: Table
    sources: SourceDirectory
    buckets: TokenBuckets
    api: Api
    writes: GroupCommit


def state() -> IntakeState:
    """The current app's state (inside a request or app context)."""
    return app_state(STATE, IntakeState)
