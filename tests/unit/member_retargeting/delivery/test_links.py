"""Signed links: what a token says comes back unchanged; anything else is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.member_retargeting.delivery.links import (
    CLICK,
    OPEN,
    UNSUBSCRIBE,
    InvalidLink,
    Link,
    Links,
    trackable,
)

LINKS = Links(("k" * 32,), "https://mail.example.com/")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.text(max_size=40), st.text(max_size=300))
def test_a_token_reads_back_what_it_signed(dispatch: str, contact: str, url: str) -> None:
    assert LINKS.read(UNSUBSCRIBE, LINKS.token(UNSUBSCRIBE, Link(dispatch, contact))) == Link(
        dispatch, contact
    )
    assert LINKS.read(CLICK, LINKS.token(CLICK, Link(dispatch, contact, url))) == Link(
        dispatch, contact, url
    )


def test_urls_point_at_the_public_endpoints() -> None:
    assert LINKS.url(UNSUBSCRIBE, Link("d", "c")).startswith("https://mail.example.com/u/")
    assert LINKS.url(OPEN, Link("d", "c")).startswith("https://mail.example.com/o/")


def _flip(token: str, i: int) -> str:
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def test_tampered_foreign_and_cross_kind_tokens_are_refused() -> None:
    token = LINKS.token(UNSUBSCRIBE, Link("d1", "c1"))
    for bad in (
        _flip(token, len(token) - 5),  # one character of the signature changed
        _flip(token, 3),  # one character of what it says changed
        Links(("another key" * 3,), "https://x").token(UNSUBSCRIBE, Link("d1", "c1")),
        "",
        "not-a-token",
    ):
        with pytest.raises(InvalidLink):
            LINKS.read(UNSUBSCRIBE, bad)
    with pytest.raises(InvalidLink):  # an unsubscribe token is no click token
        LINKS.read(CLICK, token)
    with pytest.raises(InvalidLink):
        LINKS.read(OPEN, LINKS.token(CLICK, Link("d", "c", "https://x")))


def test_a_rotated_key_still_reads_the_links_it_signed_and_signs_no_more() -> None:
    old, new = "old-key" * 5, "new-key" * 5
    sent = Links((old,), "https://x").token(UNSUBSCRIBE, Link("d1", "c1"))
    rotated = Links((old, new), "https://x")
    assert rotated.read(UNSUBSCRIBE, sent) == Link("d1", "c1")
    fresh = rotated.token(UNSUBSCRIBE, Link("d2", "c2"))
    assert Links((new,), "https://x").read(UNSUBSCRIBE, fresh) == Link("d2", "c2")
    with pytest.raises(InvalidLink):  # signed with the new key, not the old one
        Links((old,), "https://x").read(UNSUBSCRIBE, fresh)
    with pytest.raises(InvalidLink):  # once the old key is dropped, its links stop
        Links((new,), "https://x").read(UNSUBSCRIBE, sent)
    with pytest.raises(ValueError):  # a bare string is no list of keys
        Links("k" * 32, "https://x")  # type: ignore[arg-type]


def test_only_absolute_web_links_are_tracked() -> None:
    assert trackable("https://shop.example.com/p?id=1")
    assert trackable("http://shop.example.com")
    for url in (
        "mailto:a@b.co",
        "#top",
        "/relative",
        "javascript:alert(1)",
        "https://" + "a" * 3000,
    ):
        assert not trackable(url)
