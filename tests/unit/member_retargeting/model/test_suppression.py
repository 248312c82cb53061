"""Suppression keys: SHA-256 of the kind and the normalised e-mail or E.164 phone; no
plain identifier, the same key for every spelling of one address, None for what cannot be
one."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.member_retargeting.model.suppression import EMAIL, PHONE, suppression_key

HEX64 = re.compile(r"[0-9a-f]{64}")


def expected(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -------------------------------------------------------------------------------- e-mail


@pytest.mark.parametrize(
    "raw",
    ["ann@example.com", "Ann@Example.COM", "  ann@example.com\t", "\nANN@EXAMPLE.COM "],
)
def test_email_key_is_sha256_of_kind_and_trimmed_lowercase(raw: str) -> None:
    assert suppression_key(EMAIL, raw) == expected("email:ann@example.com")


def test_email_key_of_the_published_meta_example() -> None:
    # Meta's worked example normalises John_Smith@gmail.com to john_smith@gmail.com.
    assert suppression_key(EMAIL, "John_Smith@gmail.com") == expected("email:john_smith@gmail.com")


def test_email_keeps_gmail_dots_and_plus_tags() -> None:
    # no provider's variations: these are different keys
    plain = suppression_key(EMAIL, "cloudysanfrancisco@gmail.com")
    dotted = suppression_key(EMAIL, "cloudy.sanfrancisco@gmail.com")
    tagged = suppression_key(EMAIL, "cloudysanfrancisco+shop@gmail.com")
    assert dotted == expected("email:cloudy.sanfrancisco@gmail.com")
    assert tagged == expected("email:cloudysanfrancisco+shop@gmail.com")
    assert len({plain, dotted, tagged}) == 3


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "ann", "ann@", "@example.com", "ann@example", "a b@example.com", "a@b@c.com"],
)
def test_unusable_email_has_no_key(raw: str) -> None:
    assert suppression_key(EMAIL, raw) is None


def test_email_with_a_lone_surrogate_has_no_key() -> None:
    assert suppression_key(EMAIL, "ann\ud800@example.com") is None


# --------------------------------------------------------------------------------- phone


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("+1 650-253-0000", None),
        ("+16502530000", None),
        ("(650) 253-0000", "US"),
        ("650.253.0000", "us"),
        ("+1 650 253 0000", "GB"),  # an international prefix beats the region
    ],
)
def test_phone_key_is_sha256_of_kind_and_e164_with_plus(raw: str, region: str | None) -> None:
    assert suppression_key(PHONE, raw, region) == expected("phone:+16502530000")


def test_phone_key_uses_the_region_for_national_numbers() -> None:
    assert suppression_key(PHONE, "0912 345 678", "TW") == expected("phone:+886912345678")


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("(650) 253-0000", None),  # national number, no region to read it in
        ("+1 000", None),
        ("12", "US"),
        ("not a number", "US"),
        ("", "US"),
    ],
)
def test_unusable_phone_has_no_key(raw: str, region: str | None) -> None:
    assert suppression_key(PHONE, raw, region) is None


# -------------------------------------------------------------------------------- kinds


def test_kinds() -> None:
    assert (EMAIL, PHONE) == ("email", "phone")


@pytest.mark.parametrize("kind", ["EMAIL", "Phone", "fax", "", "user_id"])
def test_unknown_kind_has_no_key(kind: str) -> None:
    assert suppression_key(kind, "ann@example.com") is None
    assert suppression_key(kind, "+16502530000") is None


@pytest.mark.parametrize("kind", [EMAIL, PHONE, "fax"])
def test_none_has_no_key(kind: str) -> None:
    assert suppression_key(kind, None) is None
    assert suppression_key(kind, None, "US") is None


def test_the_kind_is_part_of_the_key() -> None:
    assert suppression_key(EMAIL, "ann@example.com") != expected("ann@example.com")
    assert suppression_key(PHONE, "+16502530000") != expected("+16502530000")


def test_region_does_not_change_an_email_key() -> None:
    assert suppression_key(EMAIL, "ann@example.com", "US") == suppression_key(
        EMAIL, "ann@example.com"
    )


# ----------------------------------------------------------------------------- any text


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from([EMAIL, PHONE, "other"]),
    value=st.none() | st.text(max_size=60),
    region=st.none() | st.sampled_from(["US", "gb", "TW", "", "ZZ", "x"]),
)
def test_key_is_none_or_hex_digest_and_holds_no_plain_value(
    kind: str, value: str | None, region: str | None
) -> None:
    key = suppression_key(kind, value, region)
    if key is None:
        return
    assert HEX64.fullmatch(key)
    assert value is not None
    stripped = value.strip()
    if len(stripped) >= 4:
        assert stripped.lower() not in key
