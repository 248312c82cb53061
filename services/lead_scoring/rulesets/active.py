"""The newest rule set as a running process sees it.

The consumer always scores with the newest version; a process caches it for ``ttl``
seconds, and re-reads early when a lead turns out to have been scored with a newer one
(:meth:`RuleSetCache.invalidate`): versions only move forward.
"""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import RuleSet
from services.lead_scoring.rulesets.documents import model_from_document


class RuleSetCache:
    """The newest rule set, re-read at most every ``ttl`` seconds."""

    def __init__(self, base: ScoringModel, ttl: float = 2.0) -> None:
        self.base = base
        self.ttl = ttl
        self._cached: tuple[int, ScoringModel] = (0, base)
        self._read_at = -1e9

    def current(self, session: Session) -> tuple[int, ScoringModel]:
        if time.monotonic() - self._read_at < self.ttl:
            return self._cached
        version = session.scalar(select(func.max(RuleSet.version))) or 0
        if version != self._cached[0]:
            document = session.get(RuleSet, version)
            model = (
                self.base if document is None else model_from_document(document.document, self.base)
            )
            self._cached = (version, model)
        self._read_at = time.monotonic()
        return self._cached

    def invalidate(self) -> None:
        self._read_at = -1e9
