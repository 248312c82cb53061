"""Member tiers: up at once, down only after the retention period, by as many tiers as
the window's spend says, never below the lowest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.member_retargeting.model.tiers import (
    LIFETIME,
    ROLLING,
    Tier,
    TierChange,
    TierRules,
    next_tier,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
RULES = TierRules()  # member 0, silver 500, gold 2000; rolling 365 days, kept 365 days
FOUR = TierRules(
    tiers=(
        Tier("bronze", Decimal(0)),
        Tier("silver", Decimal(100)),
        Tier("gold", Decimal(1000)),
        Tier("platinum", Decimal(5000)),
    ),
    retention_days=30,
)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


# ------------------------------------------------------------------------------ defaults


def test_default_rules() -> None:
    assert [t.name for t in RULES.tiers] == ["member", "silver", "gold"]
    assert [t.min_spend for t in RULES.tiers] == [Decimal(0), Decimal(500), Decimal(2000)]
    assert RULES.window == ROLLING
    assert RULES.window_days == 365
    assert RULES.retention_days == 365


@pytest.mark.parametrize(
    ("spend", "tier"),
    [
        ("0", "member"),
        ("499.99", "member"),
        ("500", "silver"),
        ("500.00", "silver"),
        ("1999.99", "silver"),
        ("2000", "gold"),
        ("1000000", "gold"),
    ],
)
def test_earned_is_the_highest_threshold_reached(spend: str, tier: str) -> None:
    assert RULES.earned(Decimal(spend)).name == tier


def test_rank() -> None:
    assert RULES.rank("member") == 0
    assert RULES.rank("silver") == 1
    assert RULES.rank("gold") == 2
    assert RULES.rank(None) == -1
    assert RULES.rank("platinum") == -1


# ------------------------------------------------------------------------------ windows


def test_lifetime_window_counts_every_order() -> None:
    assert TierRules(window=LIFETIME).window_start(NOW) is None


def test_rolling_window_starts_window_days_ago() -> None:
    assert RULES.window_start(NOW) == NOW - timedelta(days=365)
    assert TierRules(window_days=90).window_start(NOW) == datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


def test_lifetime_ignores_window_days() -> None:
    assert TierRules(window=LIFETIME, window_days=30).window_start(NOW) is None


# ---------------------------------------------------------------------------- moving up


def test_first_purchase_gets_the_earned_tier() -> None:
    change = next_tier(RULES, None, None, Decimal("80"), NOW)
    assert change is not None
    assert change.tier == "member"
    assert change.since == NOW


def test_first_purchase_can_earn_a_high_tier_directly() -> None:
    change = next_tier(RULES, None, None, Decimal("2500"), NOW)
    assert change is not None
    assert change.tier == "gold"
    assert change.since == NOW


def test_unknown_current_tier_is_replaced_by_the_earned_one() -> None:
    # e.g. a tier renamed or removed from the configuration
    change = next_tier(RULES, "diamond", days_ago(1), Decimal("600"), NOW)
    assert change is not None
    assert change.tier == "silver"


def test_up_one_tier_at_once() -> None:
    change = next_tier(RULES, "member", days_ago(1), Decimal("500"), NOW)
    assert change == TierChange("silver", NOW, "spent 500 in the window")


def test_up_several_tiers_at_once_even_within_retention() -> None:
    change = next_tier(FOUR, "bronze", days_ago(0), Decimal("5000"), NOW)
    assert change is not None
    assert change.tier == "platinum"
    assert change.since == NOW
    assert "5000" in change.reason


def test_no_change_when_spend_keeps_the_tier() -> None:
    assert next_tier(RULES, "silver", days_ago(400), Decimal("1999.99"), NOW) is None
    assert next_tier(RULES, "gold", days_ago(1), Decimal("2000"), NOW) is None
    assert next_tier(RULES, "member", None, Decimal("0"), NOW) is None


# -------------------------------------------------------------------------- moving down


def test_no_drop_within_retention() -> None:
    assert next_tier(RULES, "gold", days_ago(364), Decimal("0"), NOW) is None
    assert next_tier(RULES, "gold", NOW - timedelta(days=365, seconds=-1), Decimal(0), NOW) is None


def test_drop_exactly_when_retention_ends() -> None:
    change = next_tier(RULES, "gold", days_ago(365), Decimal("600"), NOW)
    assert change is not None
    assert change.tier == "silver"
    assert change.since == NOW
    assert "gold held 365 days" in change.reason


def test_drop_after_retention() -> None:
    change = next_tier(RULES, "silver", days_ago(500), Decimal("10"), NOW)
    assert change is not None
    assert change.tier == "member"


def test_drop_several_tiers_at_once() -> None:
    change = next_tier(FOUR, "platinum", days_ago(31), Decimal("50"), NOW)
    assert change is not None
    assert change.tier == "bronze"
    change = next_tier(FOUR, "platinum", days_ago(31), Decimal("150"), NOW)
    assert change is not None
    assert change.tier == "silver"


def test_drop_without_a_since_date_is_not_held_back() -> None:
    change = next_tier(RULES, "gold", None, Decimal("0"), NOW)
    assert change is not None
    assert change.tier == "member"


def test_retention_days_is_configurable() -> None:
    rules = TierRules(retention_days=0)
    change = next_tier(rules, "gold", NOW, Decimal("0"), NOW)
    assert change is not None
    assert change.tier == "member"
    assert next_tier(FOUR, "gold", days_ago(29), Decimal("0"), NOW) is None


def test_never_below_the_lowest_tier() -> None:
    change = next_tier(RULES, "gold", days_ago(1000), Decimal("0"), NOW)
    assert change is not None
    assert change.tier == RULES.tiers[0].name
    assert next_tier(RULES, "member", days_ago(1000), Decimal("0"), NOW) is None


def test_negative_window_spend_keeps_the_lowest_tier() -> None:
    # Orders may carry a negative revenue (processing/traffic.py accepts ±MAX_MONEY), so a
    # window's spend can be below 0; the lowest tier is still the floor.
    assert RULES.earned(Decimal("-50")).name == "member"
    change = next_tier(RULES, "gold", days_ago(1000), Decimal("-50"), NOW)
    assert change is not None
    assert change.tier == "member"
    first = next_tier(RULES, None, None, Decimal("-50"), NOW)
    assert first is not None
    assert first.tier == "member"


# ------------------------------------------------------------------------- invalid rules


@pytest.mark.parametrize(
    "tiers",
    [
        (),
        (Tier("member", Decimal(10)),),
        (Tier("silver", Decimal(500)), Tier("member", Decimal(0))),
        (Tier("member", Decimal(0)), Tier("gold", Decimal(2000)), Tier("silver", Decimal(500))),
    ],
)
def test_tiers_must_start_at_zero_and_rise(tiers: tuple[Tier, ...]) -> None:
    with pytest.raises(ValueError, match="start at 0 and rise"):
        TierRules(tiers=tiers)


@pytest.mark.parametrize("window", ["monthly", "", "LIFETIME"])
def test_window_must_be_known(window: str) -> None:
    with pytest.raises(ValueError, match="window is lifetime or rolling"):
        TierRules(window=window)


def test_single_free_tier_is_valid() -> None:
    rules = TierRules(tiers=(Tier("member", Decimal("0.00")),), window=LIFETIME)
    assert rules.earned(Decimal("1e9")).name == "member"
    assert next_tier(rules, None, None, Decimal(0), NOW) is not None
