"""Member tiers by spend over a window, with up and down rules. Pure.

A tier is earned by spend within the window (``lifetime``, or the last ``window_days``,
365 for "rolling 12 months"). Moving up happens at once, with the order that crosses the
threshold. Moving down is slower, as loyalty programmes do it (Smile.io, Sephora): a
member keeps a tier for ``retention_days`` after reaching it, and only then drops to what
the window's spend still earns — one tier or several, never below the lowest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

LIFETIME = "lifetime"
ROLLING = "rolling"


@dataclass(frozen=True)
class Tier:
    name: str
    min_spend: Decimal


@dataclass(frozen=True)
class TierRules:
    tiers: tuple[Tier, ...] = (
        Tier("member", Decimal(0)),
        Tier("silver", Decimal(500)),
        Tier("gold", Decimal(2000)),
    )
    window: str = ROLLING
    window_days: int = 365
    retention_days: int = 365

    def __post_init__(self) -> None:
        spends = [t.min_spend for t in self.tiers]
        if not self.tiers or spends != sorted(spends) or spends[0] != 0:
            raise ValueError("tiers must start at 0 and rise with spend")
        if self.window not in (LIFETIME, ROLLING):
            raise ValueError(f"window is {LIFETIME} or {ROLLING}")

    def window_start(self, now: datetime) -> datetime | None:
        """Orders from this time on count toward the tier (None: all of them)."""
        return None if self.window == LIFETIME else now - timedelta(days=self.window_days)

    def earned(self, spend: Decimal) -> Tier:
        """The highest tier ``spend`` reaches; the lowest for any spend below it (refunds
        can make a window's spend negative)."""
        reached = [t for t in self.tiers if spend >= t.min_spend]
        return reached[-1] if reached else self.tiers[0]

    def rank(self, name: str | None) -> int:
        names = [t.name for t in self.tiers]
        return names.index(name) if name in names else -1


@dataclass(frozen=True)
class TierChange:
    tier: str
    since: datetime
    reason: str


def next_tier(
    rules: TierRules,
    current: str | None,
    since: datetime | None,
    window_spend: Decimal,
    now: datetime,
) -> TierChange | None:
    """The tier move the spend justifies now, or None to stay."""
    earned = rules.earned(window_spend)
    have = rules.rank(current)
    if rules.rank(earned.name) > have:
        return TierChange(earned.name, now, f"spent {window_spend} in the window")
    if have < 0:
        return TierChange(earned.name, now, "first purchase")
    if rules.rank(earned.name) < have:
        held_long_enough = since is None or now - since >= timedelta(days=rules.retention_days)
        if held_long_enough:
            return TierChange(
                earned.name,
                now,
                f"spent {window_spend} in the window; {current} held {rules.retention_days} days",
            )
    return None
