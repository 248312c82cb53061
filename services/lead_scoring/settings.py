"""What decides a score: rules, intent taxonomy, fit criteria, thresholds, decay. Data,
so a rule set stored in the database (see :mod:`rulesets`) can replace the defaults."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.engagement import DEFAULT_HALF_LIFE_DAYS
from services.lead_scoring.fit import DEFAULT_CRITERIA, GRADES, FitCriterion
from services.lead_scoring.intent import DEFAULT_TAXONOMY, Topic, intent_rules, topics_of
from services.lead_scoring.scoring import DEFAULT_RULES, Award, Rule, evaluate
from shared.events import Envelope


@dataclass(frozen=True)
class ScoringSettings:
    """Everything that decides a score; data, so it can come from configuration."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    mql_threshold: int = 50
    fit_criteria: tuple[FitCriterion, ...] = DEFAULT_CRITERIA
    grades: tuple[tuple[str, int], ...] = GRADES
    taxonomy: tuple[Topic, ...] = DEFAULT_TAXONOMY
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS

    @classmethod
    def from_config(cls, config: ScoringConfig) -> ScoringSettings:
        return cls(mql_threshold=config.mql_threshold, half_life_days=config.half_life_days)

    def awards(self, event: Envelope, history: dict[str, list[datetime]]) -> list[Award]:
        """Behaviour awards plus intent awards (per topic, capped per day)."""
        awards = evaluate(self.rules, event, history)
        topic_rules = intent_rules(self.taxonomy)
        for topic in topics_of(event, self.taxonomy):
            rule = topic_rules[f"intent:{topic.id}"]
            if rule.allows(event, history.get(rule.id, ())):
                awards.append(Award(rule.id, rule.points, rule.description, event.event_id))
        return awards
