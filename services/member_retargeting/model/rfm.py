"""RFM: recency, frequency and monetary value as quintile scores 1-5 among all members,
and the named groups marketing works with. Pure (the scores come from a set-based query).

Scores: 5 is best — the most recent buyers, the most orders, the most spent. Groups, first
match wins (after the usual RFM segmentation grid, e.g. Putler's and Klaviyo's):

==================  ======================  =======================================
group               when                    what to do
==================  ======================  =======================================
Champions           R 4-5, F 4-5            reward, ask for reviews
Loyal               R 3-5, F 3-5            upsell, membership perks
New                 R 5, F 1                onboarding
Potential Loyalists R 3-5, F 1-3            nurture into loyal
At Risk             R 1-2, F 3-5            win back before they leave
Hibernating         R 2, F 1-2              reactivate with an offer
Lost                R 1, F 1-2              last try, or let go
==================  ======================  =======================================

Monetary value breaks no tie here; it is kept as its own score for segments.
"""

from __future__ import annotations

# (group, lowest R, highest R, lowest F, highest F): the first that fits names a member.
GRID: tuple[tuple[str, int, int, int, int], ...] = (
    ("Champions", 4, 5, 4, 5),
    ("Loyal", 3, 5, 3, 5),
    ("New", 5, 5, 1, 1),
    ("Potential Loyalists", 3, 5, 1, 3),
    ("At Risk", 1, 2, 3, 5),
    ("Hibernating", 2, 2, 1, 2),
    ("Lost", 1, 1, 1, 2),
)
GROUPS = tuple(name for name, *_ in GRID)


def group(recency: int, frequency: int) -> str:
    """The named group of a member's R and F scores (each 1-5)."""
    for name, r_low, r_high, f_low, f_high in GRID:
        if r_low <= recency <= r_high and f_low <= frequency <= f_high:
            return name
    return GRID[-1][0]
