"""What a member-retargeting app holds while it runs, and the one typed way to reach it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from services.member_retargeting.config import RetargetingConfig
from shared.http import app_state

STATE = "member_retargeting"


@dataclass
class RetargetingState:
    config: RetargetingConfig
    engine: Engine
    sessions: sessionmaker


def state() -> RetargetingState:
    """The current app's state (inside a request or app context)."""
    return app_state(STATE, RetargetingState)
