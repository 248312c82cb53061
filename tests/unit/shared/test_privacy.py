"""Shared privacy rules: identifier keys, what an event names, stripping personal fields,
finding raw payloads, masking."""

from __future__ import annotations

from shared.events import new_event
from shared.privacy import (
    KEY_CACHE_SIZE,
    Identifier,
    analytics_denied,
    erasure_keys,
    identifier_key,
    identifiers_of,
    mask_email,
    mask_phone,
    mentions,
    needles,
    strip_personal,
)


def test_keys_are_hashes_of_the_normalised_value() -> None:
    key = identifier_key("email", " Grace@Example.COM ")
    assert key == identifier_key("email", "grace@example.com") and len(key) == 64
    assert "grace" not in key
    assert identifier_key("user_id", "U1") != identifier_key("user_id", "u1")
    assert identifier_key("user_id", "x") != identifier_key("anonymous_id", "x")


def test_erasure_keys_are_the_hashed_identifiers_and_their_cache_is_bounded() -> None:
    event = new_event(
        "alias",
        {"previous_id": "old-1"},
        source="w",
        user_id="u1",
        anonymous_id="a1",
        context={"traits": {"email": " G@X.co "}},
    )
    expected = frozenset(identifier_key(i.kind, i.value) for i in identifiers_of(event))
    assert len(expected) == 4
    assert erasure_keys(event) == expected
    hits = identifier_key.cache_info().hits
    assert erasure_keys(event) == expected  # asked again: from the cache, the same keys
    assert identifier_key.cache_info().hits == hits + 4
    unhashed = identifier_key.__wrapped__  # the function under the cache
    assert identifier_key("email", " G@X.co ") == unhashed("email", "g@x.co")
    assert identifier_key.cache_info().maxsize == KEY_CACHE_SIZE


def test_identifiers_of_traffic_and_lead_events() -> None:
    track = new_event(
        "identify",
        {"traits": {"email": "G@X.co"}},
        source="w",
        user_id="u1",
        anonymous_id="a1",
    )
    assert identifiers_of(track) == {
        Identifier("user_id", "u1"),
        Identifier("anonymous_id", "a1"),
        Identifier("email", "g@x.co"),
    }
    junk = new_event("page", {}, source="w", user_id="undefined", anonymous_id="a2")
    assert identifiers_of(junk) == {Identifier("anonymous_id", "a2")}


def test_a_denial_strips_everything_personal_and_keeps_the_event() -> None:
    event = new_event(
        "identify",
        {"traits": {"email": "g@x.co", "name": "Grace"}},
        source="w",
        user_id="u1",
        anonymous_id="a1",
        context={
            "consent": {"categoryPreferences": {"analytics": False}},
            "ip": "1.2.3.4",
            "userAgent": "UA",
            "page": {"url": "https://x.co/p?email=g@x.co#f", "path": "/p"},
            "campaign": {"source": "google"},
        },
    )
    assert analytics_denied(event)
    stripped = strip_personal(event)
    assert stripped.user_id is None and stripped.anonymous_id not in (None, "a1")
    assert stripped.payload == {"traits": {}}
    assert "ip" not in stripped.context and "userAgent" not in stripped.context
    assert stripped.context["page"] == {"url": "https://x.co/p", "path": "/p"}
    assert stripped.context["campaign"] == {"source": "google"}
    assert stripped.context["consent"] == event.context["consent"]
    assert not analytics_denied(new_event("page", {}, source="w", anonymous_id="a"))


def test_needles_and_mentions_find_a_value_anywhere_in_json() -> None:
    ids = [Identifier("email", "grace@x.co"), Identifier("user_id", "Ünï")]
    assert b'"grace@x.co"' in needles(ids) and '"Ünï"'.encode() in needles(ids)
    assert mentions({"a": [{"b": "GRACE@x.co "}]}, ids)
    assert mentions(["Ünï"], ids) and not mentions({"a": "grace@x.com"}, ids)


def test_masks_tell_people_apart_without_revealing_them() -> None:
    assert mask_email("grace.hopper@example.com") == "g***@e***.com"
    assert mask_email("x@localhost") == "x***@l***"
    assert mask_email(None) is None and mask_email("nonsense") == "***"
    assert mask_phone("+886 912 345 678") == "***78" and mask_phone(None) is None
