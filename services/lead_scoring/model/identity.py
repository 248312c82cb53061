"""Identity resolution: which lead an event belongs to, and which leads it may merge. Pure.

Identity rules are data, like the scoring rules (stored versions in ``identity_rule_sets``,
edited at ``/admin/identity/rules``). Per identifier kind — ``user_id``, ``email``,
``anonymous_id``, and any ``external:<type>`` a source declares in
``context.externalIds`` — a rule says:

* ``priority`` (1 is strongest): which identifier decides when they disagree;
* ``limit`` per lead and ``on_limit``: ``refuse`` (a lead never holds more; a merge that
  would break the limit does not happen, the conflict is recorded) or ``evict_oldest``
  (the oldest give way: a lead's anonymous ids);
* ``follows_latest``: the identifier goes to the most recently identified person when two
  people claim it (a shared browser changing hands);
* ``merge``: whether linking two leads through it may merge them: ``any`` source,
  ``trusted`` sources only (``trusted_sources``), or ``never``;
* ``blocked`` values, never an identity (junk ids like "null" are always blocked).

The defaults never put two user ids on one lead: a shared computer signed into by two
people gives two leads, the browser's anonymous id following whoever signed in last.

:func:`resolve` decides for one event, from who owns its identifiers now and what each
of those leads holds; the consumer carries the decision out (:mod:`..processing`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.identity import ANONYMOUS_ID, EMAIL, USER_ID
from shared.limits import MAX_ANONYMOUS_IDS

Key = tuple[str, str]
"""``(kind, value)`` of one identifier."""

EXTERNAL_PREFIX = "external:"
REFUSE, EVICT_OLDEST = "refuse", "evict_oldest"
ANY, TRUSTED, NEVER = "any", "trusted", "never"


@dataclass(frozen=True)
class IdentityRule:
    kind: str
    priority: int
    limit: int
    on_limit: str = REFUSE
    follows_latest: bool = False
    merge: str = ANY
    trusted_sources: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()

    def may_merge(self, source: str) -> bool:
        if self.merge == ANY:
            return True
        return self.merge == TRUSTED and source in self.trusted_sources


@dataclass(frozen=True)
class IdentityRules:
    rules: tuple[IdentityRule, ...]

    def __post_init__(self) -> None:
        by_kind = {r.kind: r for r in self.rules}  # the last rule of a kind holds
        object.__setattr__(self, "_by_kind", by_kind)
        # What within_limits checks, once: it runs several times for every event.
        refused = {r.kind: r.limit for r in by_kind.values() if r.on_limit == REFUSE}
        object.__setattr__(self, "_refused", refused)

    def rule(self, kind: str) -> IdentityRule | None:
        by_kind: dict[str, IdentityRule] = self._by_kind  # type: ignore[attr-defined]
        return by_kind.get(kind)

    def usable(self, key: Key) -> bool:
        """Whether the rules know this kind and do not block this value."""
        rule = self.rule(key[0])
        return rule is not None and key[1] not in rule.blocked

    def ordered(self, keys: Iterable[Key]) -> list[Key]:
        """Known, unblocked identifiers, strongest first (event order among equals)."""
        usable = [k for k in dict.fromkeys(keys) if self.usable(k)]
        return sorted(usable, key=lambda k: self._priority(k))

    def _priority(self, key: Key) -> int:
        rule = self.rule(key[0])
        return rule.priority if rule is not None else 10**6

    def within_limits(self, keys: Iterable[Key]) -> bool:
        """Whether one lead may hold all of ``keys`` (``refuse`` kinds only; the others
        make room by evicting)."""
        refused: dict[str, int] = self._refused  # type: ignore[attr-defined]
        counts: dict[str, int] = {}
        for kind, _ in set(keys):
            if kind in refused:
                counts[kind] = count = counts.get(kind, 0) + 1
                if count > refused[kind]:
                    return False
        return True


DEFAULT_IDENTITY_RULES = IdentityRules(
    (
        IdentityRule(USER_ID, priority=1, limit=1),
        IdentityRule(EMAIL, priority=2, limit=5),
        IdentityRule(
            ANONYMOUS_ID,
            priority=3,
            limit=MAX_ANONYMOUS_IDS,
            on_limit=EVICT_OLDEST,
            follows_latest=True,
        ),
    )
)


@dataclass(frozen=True)
class Conflict:
    """Two leads claim what the rules let only one hold: recorded, never silently solved."""

    key: Key
    other_lead: str | None  # the lead that keeps (or held) it; None: a limit of the target
    reason: str
    moved: bool = False  # the identifier went to the event's lead (it follows the latest)


@dataclass(frozen=True)
class Resolution:
    """What one event does to identities. ``target`` None means a new lead."""

    target: str | None
    merges: list[tuple[str, Key]] = field(default_factory=list)  # (lead merged in, via)
    attach: list[Key] = field(default_factory=list)
    moves: list[tuple[Key, str]] = field(default_factory=list)  # (identifier, from lead)
    conflicts: list[Conflict] = field(default_factory=list)


def resolve(
    keys: Sequence[Key],
    owners: Mapping[Key, str | None],
    holdings: Mapping[str, Iterable[Key]],
    rules: IdentityRules,
    source: str,
    *,
    browser: bool = False,
) -> Resolution:
    """Decide for an event naming ``keys`` (already :meth:`IdentityRules.ordered`):
    ``owners`` says which lead owns each now, ``holdings`` what each such lead holds.

    The event goes to the lead of its strongest identifier that ``source`` is trusted with;
    when that identifier is nobody's yet, to the lead of the next one that can take it
    within the limits, else to a new lead. Every other lead the event names is merged in
    if the identifier linking it may merge from ``source`` and the merged lead stays
    within the limits. Otherwise the conflict is recorded; when a limit refused it,
    identifiers that follow the latest person move to the event's lead (a browser that
    changed hands), while an untrusted claim moves nothing.

    From a ``browser`` source (a public key: :mod:`shared.provenance`) only user and
    anonymous ids decide or link (an e-mail or external id is a claim), and two leads that
    are both known (each holds more than anonymous ids) are never merged: the visitor is
    linked to a user id, nobody is merged into somebody else."""
    held = {lead: set(ks) for lead, ks in holdings.items()}

    def trusted(key: Key) -> bool:
        if browser and key[0] not in (USER_ID, ANONYMOUS_ID):
            return False
        return _rule(rules, key).may_merge(source)

    unowned: list[Key] = []
    target: str | None = None
    for key in keys:
        owner = owners.get(key)
        if owner is None:
            unowned.append(key)
            continue
        if not trusted(key):
            continue  # not trusted from this source to say whose event this is
        if rules.within_limits([*held[owner], *unowned]):
            target = owner
            break
    mine: set[Key] = set(held.get(target, ())) if target is not None else set()
    resolution = Resolution(target=target)
    seen: set[str] = {target} if target is not None else set()
    for key in keys:
        owner = owners.get(key)
        if owner is None or owner in seen:
            continue
        seen.add(owner)
        theirs = held[owner]
        if not trusted(key):
            # Another lead's identifier, named from a source not trusted with it: it
            # stays where it is, and nothing moves.
            kind = " (a browser source)" if browser else ""
            reason = f"{key[0]} may not merge leads from source {source!r}{kind}"
            resolution.conflicts.append(Conflict(key, owner, reason))
            continue
        if browser and _known(mine) and _known(theirs):
            reason = "a browser source never merges two known people"
            resolution.conflicts.append(Conflict(key, owner, reason))
            continue
        if rules.within_limits([*mine, *theirs, *_attachable(keys, owners)]):
            resolution.merges.append((owner, key))
            mine |= theirs
            continue
        reason = "merging would break an identity limit"
        movable = [k for k in keys if owners.get(k) == owner and _follows(rules, k)]
        for moved in movable:
            resolution.moves.append((moved, owner))
            mine.add(moved)
        resolution.conflicts.append(Conflict(key, owner, reason, moved=key in movable))
    for key in keys:
        if owners.get(key) is not None:
            continue
        if rules.within_limits([*mine, key]):
            resolution.attach.append(key)
            mine.add(key)
        else:
            resolution.conflicts.append(Conflict(key, None, f"the lead's {key[0]} limit"))
    return resolution


def _rule(rules: IdentityRules, key: Key) -> IdentityRule:
    rule = rules.rule(key[0])
    assert rule is not None, f"no rule for {key[0]}"
    return rule


def _known(keys: Iterable[Key]) -> bool:
    """A lead that holds more than anonymous ids: somebody in particular."""
    return any(kind != ANONYMOUS_ID for kind, _ in keys)


def _attachable(keys: Sequence[Key], owners: Mapping[Key, str | None]) -> list[Key]:
    return [k for k in keys if owners.get(k) is None]


def _follows(rules: IdentityRules, key: Key) -> bool:
    rule = rules.rule(key[0])
    return rule is not None and rule.follows_latest
