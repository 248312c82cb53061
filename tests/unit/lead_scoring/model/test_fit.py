"""Fit grades A-D from person and account traits, every point with its reason."""

from __future__ import annotations

import pytest

from services.lead_scoring.model.fit import FitCriterion, grade


def test_fit_grades_from_person_and_account_traits_with_reasons() -> None:
    a = grade({"title": "VP Marketing", "country": "TW"}, {"industry": "SaaS", "employees": 800})
    assert (a.score, a.grade) == (55, "A")
    assert dict(a.reasons) == {
        "Target industry": 15,
        "50+ employees": 10,
        "500+ employees": 10,
        "Decision maker": 15,
        "Served country": 5,
    }
    assert grade({"title": "intern"}, {"employees": "many"}).grade == "D"
    custom = [FitCriterion("edu", "Education", "industry", "eq", "education", 40)]
    assert grade({}, {"industry": "Education"}, custom).grade == "A"
    with pytest.raises(ValueError, match="operator"):
        FitCriterion("x", "x", "a", "like", "b", 1).matches("b")
