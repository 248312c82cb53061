"""Automatic lifecycle moves: forward only, known people only, purchases make customers."""

from __future__ import annotations

from services.lead_scoring.model.lifecycle import automatic_transition


def test_anonymous_visitors_stay_subscribers_whatever_the_score() -> None:
    assert (
        automatic_transition(
            "subscriber", known=False, score=500, mql_threshold=50, purchased=False
        )
        is None
    )


def test_identified_subscriber_becomes_lead_then_mql_at_threshold() -> None:
    step = automatic_transition(
        "subscriber", known=True, score=10, mql_threshold=50, purchased=False
    )
    assert step is not None and step.to_stage == "lead"
    step = automatic_transition("lead", known=True, score=49, mql_threshold=50, purchased=False)
    assert step is None
    step = automatic_transition("lead", known=True, score=50, mql_threshold=50, purchased=False)
    assert step is not None and step.to_stage == "mql" and "50" in step.reason


def test_purchase_makes_a_customer_from_any_stage_and_never_moves_back() -> None:
    for stage in ("subscriber", "lead", "mql", "sql", "recycled"):
        step = automatic_transition(stage, known=False, score=0, mql_threshold=50, purchased=True)
        assert step is not None and step.to_stage == "customer"
    assert (
        automatic_transition("customer", known=True, score=0, mql_threshold=50, purchased=True)
        is None
    )
    assert (
        automatic_transition("sql", known=True, score=999, mql_threshold=50, purchased=False)
        is None
    )
