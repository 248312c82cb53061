"""The lifecycle: the shared language of sales and marketing.

subscriber → lead → MQL → SQL → opportunity → customer, plus recycled and disqualified.
Automatic moves (:func:`automatic_transition`) only go forward; backward moves are
explicit sales actions (:mod:`services.lead_scoring.handoff.actions`): a rejection, or a
move with a reason. Pure.
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
    stage: str,
    *,
    known: bool,
    score: int,
    mql_threshold: int,
    purchased: bool,
    earned_points: int = 0,
) -> Transition | None:
    """The forward move the facts justify, or None.

    ``known``: we can reach the person (an email). Anonymous visitors stay subscribers:
    sales cannot call someone without a name, whatever the score. A recycled lead
    qualifies again only on new engagement (``earned_points`` > 0) at the threshold; a
    disqualified one never moves automatically, except to customer when it buys.
    """
    if purchased and stage != "customer":
        return Transition("customer", "completed an order")
    if stage == "recycled" and known and earned_points > 0 and score >= mql_threshold:
        return Transition("mql", f"re-engaged: score {score} reached {mql_threshold} again")
    if stage not in RANK:
        return None
    if known and RANK[stage] < RANK["mql"] and score >= mql_threshold:
        return Transition("mql", f"score {score} reached the MQL threshold {mql_threshold}")
    if known and stage == "subscriber":
        return Transition("lead", "identified with an email")
    return None
