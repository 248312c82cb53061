"""The newest version of a versioned document (scoring rules, identity rules) as a running
process sees it.

A process caches the newest version for ``ttl`` seconds and re-reads early when told a
newer one exists (:meth:`LatestVersion.invalidate`, e.g. a lead scored with a newer rule
set than the cache holds): versions only move forward. Version 0 is the built-in default.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.lead_scoring.model.identity import IdentityRules
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import IdentityRuleSet, RuleSet
from services.lead_scoring.rulesets.documents import model_from_document
from services.lead_scoring.rulesets.identity import identity_rules_from_document

T = TypeVar("T")


class LatestVersion(Generic[T]):
    """The newest version stored in ``table`` (a model with ``version`` and ``document``),
    built into a ``T`` by ``build``; ``base`` is version 0."""

    def __init__(
        self,
        table: Any,
        build: Callable[[dict[str, Any], T], T],
        base: T,
        ttl: float = 2.0,
    ) -> None:
        self.table = table
        self.build = build
        self.base = base
        self.ttl = ttl
        self._cached: tuple[int, T] = (0, base)
        self._read_at = -1e9

    def current(self, session: Session) -> tuple[int, T]:
        if time.monotonic() - self._read_at < self.ttl:
            return self._cached
        version = session.scalar(select(func.max(self.table.version))) or 0
        if version != self._cached[0]:
            row = session.get(self.table, version)
            built = self.base if row is None else self.build(row.document, self.base)
            self._cached = (version, built)
        self._read_at = time.monotonic()
        return self._cached

    def invalidate(self) -> None:
        self._read_at = -1e9

    def described(
        self, session: Session, describe: Callable[[T], dict[str, Any]]
    ) -> dict[str, Any]:
        """``{"version", "document"}`` of the newest version, for the admin API."""
        version, built = self.current(session)
        return {"version": version, "document": describe(built)}


class RuleSetCache(LatestVersion[ScoringModel]):
    """The newest scoring rule set."""

    def __init__(self, base: ScoringModel, ttl: float = 2.0) -> None:
        super().__init__(RuleSet, model_from_document, base, ttl)


class IdentityRulesCache(LatestVersion[IdentityRules]):
    """The newest identity rules."""

    def __init__(self, base: IdentityRules, ttl: float = 2.0) -> None:
        super().__init__(IdentityRuleSet, identity_rules_from_document, base, ttl)
