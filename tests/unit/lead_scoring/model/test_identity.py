"""Identity resolution is a pure decision: held to its invariants on generated states."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.lead_scoring.model.identity import (
    DEFAULT_IDENTITY_RULES,
    EVICT_OLDEST,
    IdentityRule,
    IdentityRules,
    resolve,
)
from shared.identity import EMAIL

RULES = DEFAULT_IDENTITY_RULES
keys = st.one_of(
    st.tuples(st.just("user_id"), st.sampled_from(["P1", "P2", "P3"])),
    st.tuples(st.just("email"), st.sampled_from(["p1@x", "p2@x"])),
    st.tuples(st.just("anonymous_id"), st.sampled_from(["A", "B", "C", "D"])),
)


@st.composite
def states(draw: st.DrawFn) -> tuple[list, dict, dict]:
    """Leads holding identifiers within the rules, and an event naming some."""
    holdings: dict[str, set] = {}
    owners: dict = {}
    for key in draw(st.lists(keys, unique=True, max_size=8)):
        lead = draw(st.sampled_from(["L1", "L2", "L3"]))
        if RULES.within_limits([*holdings.get(lead, set()), key]):
            holdings.setdefault(lead, set()).add(key)
            owners[key] = lead
    named = RULES.ordered(draw(st.lists(keys, min_size=1, max_size=4, unique=True)))
    return named, {k: owners.get(k) for k in named}, holdings


@given(states(), st.sampled_from(["web", "crm"]))
def test_no_decision_breaks_a_limit(state: tuple, source: str) -> None:
    named, owners, holdings = state
    decision = resolve(named, owners, holdings, RULES, source)
    result = set(holdings.get(decision.target, set())) if decision.target else set()
    for lead, _via in decision.merges:
        result |= holdings[lead]
    result |= {key for key, _from in decision.moves}
    result |= set(decision.attach)
    assert RULES.within_limits(result)
    assert decision.target not in {lead for lead, _ in decision.merges}
    # Every identifier of the event ends with the event's lead or is on record.
    placed = result | {c.key for c in decision.conflicts}
    assert set(named) <= placed | {k for k, lead in owners.items() if lead in holdings}


def test_the_strongest_identifier_decides() -> None:
    owners = {("user_id", "P2"): None, ("anonymous_id", "A"): "L1"}
    holdings = {"L1": {("user_id", "P1"), ("anonymous_id", "A")}}
    decision = resolve(list(owners), owners, holdings, RULES, "web")
    assert decision.target is None  # P2 is nobody's yet, and L1 is P1's
    assert decision.moves == [(("anonymous_id", "A"), "L1")]
    assert decision.attach == [("user_id", "P2")]
    [conflict] = decision.conflicts
    assert conflict.moved and conflict.other_lead == "L1"


def test_blocked_values_and_unknown_kinds_are_no_identity() -> None:
    rules = IdentityRules(
        (
            IdentityRule("user_id", 1, 1, blocked=("guest",)),
            IdentityRule("anonymous_id", 2, 100),
        )
    )
    assert rules.ordered([("user_id", "guest"), ("email", "a@x"), ("anonymous_id", "A")]) == [
        ("anonymous_id", "A")
    ]


def _known(keys: set) -> bool:
    return any(kind != "anonymous_id" for kind, _ in keys)


@given(states())
def test_a_browser_source_never_merges_two_known_people_nor_resolves_by_email(
    state: tuple,
) -> None:
    named, owners, holdings = state
    decision = resolve(named, owners, holdings, RULES, "browser", browser=True)
    mine = set(holdings.get(decision.target, set())) if decision.target else set()
    for lead, via in decision.merges:
        assert via[0] in ("user_id", "anonymous_id")  # never through an e-mail claim
        assert not (_known(mine) and _known(holdings[lead]))
        mine |= holdings[lead]
    if decision.target is not None:
        # The event's lead was chosen by an id the browser may speak for.
        assert any(
            owners.get(k) == decision.target and k[0] in ("user_id", "anonymous_id") for k in named
        )


def test_a_browser_identify_with_a_customers_email_takes_nothing_of_theirs() -> None:
    """The attack: a visitor identifies with a real customer's e-mail from the public key."""
    owners = {("email", "p1@x"): "CUSTOMER", ("anonymous_id", "A"): "VISITOR"}
    holdings = {
        "CUSTOMER": {("user_id", "P1"), ("email", "p1@x")},
        "VISITOR": {("anonymous_id", "A")},
    }
    named = RULES.ordered(owners)
    from_server = resolve(named, owners, holdings, RULES, "crm")
    assert from_server.target == "CUSTOMER"  # a server source is believed
    decision = resolve(named, owners, holdings, RULES, "browser", browser=True)
    assert decision.target == "VISITOR" and decision.merges == []
    [conflict] = decision.conflicts
    assert conflict.other_lead == "CUSTOMER" and "browser" in conflict.reason


def test_a_browser_identify_links_the_visitor_to_a_user_id_but_not_two_known_people() -> None:
    owners = {("user_id", "P1"): "KNOWN", ("anonymous_id", "A"): "VISITOR"}
    holdings = {"KNOWN": {("user_id", "P1")}, "VISITOR": {("anonymous_id", "A")}}
    decision = resolve(RULES.ordered(owners), owners, holdings, RULES, "web", browser=True)
    assert decision.target == "KNOWN" and decision.merges == [("VISITOR", ("anonymous_id", "A"))]
    holdings["VISITOR"] = {("anonymous_id", "A"), ("email", "v@x")}  # the visitor is known
    decision = resolve(RULES.ordered(owners), owners, holdings, RULES, "web", browser=True)
    assert decision.merges == []
    assert [c.reason for c in decision.conflicts] == [
        "a browser source never merges two known people"
    ]


def test_within_limits_follows_the_last_rule_of_a_kind() -> None:
    """As :meth:`IdentityRules.rule` does: a later rule of the same kind replaces one
    before it, for limits too."""
    refuse, evict = IdentityRule(EMAIL, 2, 1), IdentityRule(EMAIL, 2, 1, on_limit=EVICT_OLDEST)
    two = [(EMAIL, "a@x.io"), (EMAIL, "b@x.io")]
    assert IdentityRules((refuse, evict)).within_limits(two)
    assert not IdentityRules((evict, refuse)).within_limits(two)
    assert IdentityRules((evict, refuse)).within_limits([two[0], two[0]])  # one identifier
