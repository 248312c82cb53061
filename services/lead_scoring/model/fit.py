"""Fit: how well a lead matches the ideal customer, graded A-D from traits. Pure.

Criteria are data: a trait (person traits, then account traits), an operator and points.
The grade comes from the summed points against thresholds. Every point names its
criterion, like behaviour points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FitCriterion:
    id: str
    label: str
    trait: str
    op: str  # eq | in | gte | lte | contains_any
    value: Any
    points: int

    def matches(self, value: Any) -> bool:
        if value is None:
            return False
        if self.op == "gte" or self.op == "lte":
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):  # an integer beyond a double
                return False
            return number >= self.value if self.op == "gte" else number <= self.value
        text = str(value).strip().lower()
        if self.op == "eq":
            return text == str(self.value).lower()
        if self.op == "in":
            return text in {str(v).lower() for v in self.value}
        if self.op == "contains_any":
            return any(str(v).lower() in text for v in self.value)
        raise ValueError(f"unknown operator {self.op!r}")


@dataclass(frozen=True)
class FitResult:
    score: int
    grade: str
    reasons: tuple[tuple[str, int], ...]


DEFAULT_CRITERIA: tuple[FitCriterion, ...] = (
    FitCriterion(
        "industry",
        "Target industry",
        "industry",
        "in",
        ("software", "saas", "fintech", "e-commerce", "manufacturing"),
        15,
    ),
    FitCriterion("size-50", "50+ employees", "employees", "gte", 50, 10),
    FitCriterion("size-500", "500+ employees", "employees", "gte", 500, 10),
    FitCriterion(
        "seniority",
        "Decision maker",
        "title",
        "contains_any",
        ("chief", "cto", "ceo", "cmo", "vp", "head", "director", "founder", "owner"),
        15,
    ),
    FitCriterion(
        "country", "Served country", "country", "in", ("tw", "jp", "sg", "us", "hk", "kr"), 5
    ),
)
# Grade thresholds, best first; the lowest grade takes everything below the others.
LOWEST_GRADE = "D"
FLOOR = -(10**9)
GRADES: tuple[tuple[str, int], ...] = (("A", 40), ("B", 25), ("C", 10), (LOWEST_GRADE, FLOOR))
GRADE_LETTERS: tuple[str, ...] = tuple(letter for letter, _ in GRADES)


def _trait(traits: Mapping[str, Any], account: Mapping[str, Any], name: str) -> Any:
    value = traits.get(name)
    if value is None:
        value = account.get(name)
    if value is None and name == "country" and isinstance(traits.get("address"), dict):
        value = traits["address"].get("country")
    return value


def grade(
    traits: Mapping[str, Any],
    account: Mapping[str, Any],
    criteria: Sequence[FitCriterion] = DEFAULT_CRITERIA,
    grades: Sequence[tuple[str, int]] = GRADES,
) -> FitResult:
    reasons = tuple(
        (c.label, c.points) for c in criteria if c.matches(_trait(traits, account, c.trait))
    )
    score = sum(points for _, points in reasons)
    letter = next(letter for letter, floor in grades if score >= floor)
    return FitResult(score, letter, reasons)
