"""RFM groups: the grid's corners, every score pair named, the first matching row wins."""

from __future__ import annotations

import itertools

import pytest

from services.member_retargeting.model.rfm import GRID, GROUPS, group

SCORES = range(1, 6)


def test_groups_are_the_grid_names_in_order() -> None:
    assert GROUPS == (
        "Champions",
        "Loyal",
        "New",
        "Potential Loyalists",
        "At Risk",
        "Hibernating",
        "Lost",
    )
    assert len(set(GROUPS)) == len(GROUPS)


@pytest.mark.parametrize(
    ("recency", "frequency", "expected"),
    [
        # the four corners of the 5 x 5 grid
        (5, 5, "Champions"),
        (5, 1, "New"),
        (1, 5, "At Risk"),
        (1, 1, "Lost"),
        # each row's own corners
        (4, 4, "Champions"),
        (3, 3, "Loyal"),
        (3, 5, "Loyal"),
        (5, 3, "Loyal"),
        (4, 1, "Potential Loyalists"),
        (3, 1, "Potential Loyalists"),
        (4, 2, "Potential Loyalists"),
        (2, 3, "At Risk"),
        (1, 3, "At Risk"),
        (2, 5, "At Risk"),
        (2, 1, "Hibernating"),
        (2, 2, "Hibernating"),
        (1, 2, "Lost"),
    ],
)
def test_group_of_grid_corners(recency: int, frequency: int, expected: str) -> None:
    assert group(recency, frequency) == expected


def test_whole_grid() -> None:
    # rows: R 5 (top) down to R 1; columns: F 1 .. 5
    expected = {
        5: ["New", "Potential Loyalists", "Loyal", "Champions", "Champions"],
        4: ["Potential Loyalists", "Potential Loyalists", "Loyal", "Champions", "Champions"],
        3: ["Potential Loyalists", "Potential Loyalists", "Loyal", "Loyal", "Loyal"],
        2: ["Hibernating", "Hibernating", "At Risk", "At Risk", "At Risk"],
        1: ["Lost", "Lost", "At Risk", "At Risk", "At Risk"],
    }
    for r, row in expected.items():
        assert [group(r, f) for f in SCORES] == row, f"R {r}"


@pytest.mark.parametrize(("recency", "frequency"), list(itertools.product(SCORES, SCORES)))
def test_every_score_pair_is_named_by_the_first_matching_row(recency: int, frequency: int) -> None:
    matching = [
        name
        for name, r_low, r_high, f_low, f_high in GRID
        if r_low <= recency <= r_high and f_low <= frequency <= f_high
    ]
    # every cell is covered by the grid itself, not only by the fall-back
    assert matching, (recency, frequency)
    assert group(recency, frequency) == matching[0]
    assert group(recency, frequency) in GROUPS


def test_first_match_wins_over_later_rows() -> None:
    # (5, 1) fits both New and Potential Loyalists; (4, 4) both Champions and Loyal;
    # (3, 3) both Loyal and Potential Loyalists.
    assert group(5, 1) == "New"
    assert group(4, 4) == "Champions"
    assert group(3, 3) == "Loyal"


def test_every_group_is_reachable() -> None:
    reached = {group(r, f) for r in SCORES for f in SCORES}
    assert reached == set(GROUPS)


@pytest.mark.parametrize(("recency", "frequency"), [(0, 0), (6, 6), (0, 5), (-1, 3)])
def test_out_of_range_scores_fall_back_to_the_last_group(recency: int, frequency: int) -> None:
    assert group(recency, frequency) == GRID[-1][0] == "Lost"
