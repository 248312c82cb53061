"""The runner's dead-letter limit: a bad majority stops it, a few bad messages do not."""

from __future__ import annotations

import pytest

from shared.runner import DeadLetterLimit, DeadLetterLimitExceeded


def test_dead_letter_limit_trips_only_on_a_bad_majority() -> None:
    limit = DeadLetterLimit(max_ratio=0.5, window=100, min_invalid=10)
    limit.check([True] * 9 + [False] * 91)  # a few bad messages: keep going
    limit.check([True] * 40)
    with pytest.raises(DeadLetterLimitExceeded):
        limit.check([True] * 30)
