"""The lifecycle: the shared language of sales and marketing.

subscriber → lead → MQL → SQL → opportunity → customer, plus recycled and disqualified.
Automatic moves only go forward; backwards moves are explicit sales actions (later).
"""

from __future__ import annotations

from dataclasses import dataclass

FORWARD = ("subscriber", "lead", "mql", "sql", "opportunity", "customer")
RANK = {stage: i for i, stage in enumerate(FORWARD)}


@dataclass(frozen=True)
class Transition:
    to_stage: str
    reason: str


def automatic_transition(
    stage: str, *, known: bool, score: int, mql_threshold: int, purchased: bool
) -> Transition | None:
    """The forward move the facts justify, or None.

    ``known``: we can reach the person (an email). Anonymous visitors stay subscribers:
    sales cannot call someone without a name, whatever the score.
    """
    if purchased and stage != "customer":
        return Transition("customer", "completed an order")
    if stage not in RANK:  # recycled / disqualified: only sales moves them (issue 4)
        return None
    if known and RANK[stage] < RANK["mql"] and score >= mql_threshold:
        return Transition("mql", f"score {score} reached the MQL threshold {mql_threshold}")
    if known and stage == "subscriber":
        return Transition("lead", "identified with an email")
    return None
