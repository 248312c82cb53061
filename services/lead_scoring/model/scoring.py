"""The scoring model: everything that decides a score — behaviour rules, the intent
taxonomy, fit criteria and grades, the MQL threshold, decay — as one immutable value.
Data, so a rule set stored in the database (:mod:`services.lead_scoring.rulesets`) can
replace the built-in defaults. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from services.lead_scoring.model.engagement import DEFAULT_HALF_LIFE_DAYS
from services.lead_scoring.model.fit import DEFAULT_CRITERIA, GRADES, FitCriterion
from services.lead_scoring.model.intent import (
    DEFAULT_TAXONOMY,
    IntentTopic,
    intent_rule_id,
    intent_rules,
    topics_of,
)
from services.lead_scoring.model.rules import DEFAULT_RULES, Award, Rule, evaluate
from shared.events import Envelope


@dataclass(frozen=True)
class HistoryScope:
    """The past awards scoring needs: every award of a ``lifetime`` rule (one-time, or
    capped without a period), and awards of a ``periodic`` rule no older than
    ``longest_period_days`` before the event being scored."""

    lifetime: frozenset[str]
    periodic: frozenset[str]
    longest_period_days: float


@dataclass(frozen=True)
class ScoringModel:
    """Everything that decides a score; data, so it can come from configuration."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    mql_threshold: int = 50
    fit_criteria: tuple[FitCriterion, ...] = DEFAULT_CRITERIA
    grades: tuple[tuple[str, int], ...] = GRADES
    taxonomy: tuple[IntentTopic, ...] = DEFAULT_TAXONOMY
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS

    @cached_property
    def _intent_rules(self) -> dict[str, Rule]:
        return intent_rules(self.taxonomy)

    @cached_property
    def history_scope(self) -> HistoryScope:
        """Which past awards :meth:`awards` can look at: repeatable rules without a cap
        never look back, so their (most numerous) awards need not be read."""
        lifetime: set[str] = set()
        periodic: set[str] = set()
        longest = 0.0
        for rule in (*self.rules, *self._intent_rules.values()):
            if not rule.repeatable or (rule.cap is not None and rule.cap_period_days is None):
                lifetime.add(rule.id)
            elif rule.cap is not None and rule.cap_period_days is not None:
                periodic.add(rule.id)
                longest = max(longest, rule.cap_period_days)
        return HistoryScope(frozenset(lifetime), frozenset(periodic), longest)

    def awards(self, event: Envelope, history: Mapping[str, list[datetime]]) -> list[Award]:
        """Behaviour awards plus intent awards (per topic, capped per day). ``history``
        needs only the rules in :attr:`history_scope`."""
        awards = evaluate(self.rules, event, history)
        topic_rules = self._intent_rules
        for topic in topics_of(event, self.taxonomy):
            rule = topic_rules[intent_rule_id(topic.id)]
            if rule.allows(event, history.get(rule.id, ())):
                awards.append(Award(rule.id, rule.points, rule.description, event.event_id))
        return awards
