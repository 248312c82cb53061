"""Audience identifier normalisation and hashing, pinned to the platforms' published examples.

Every expected digest below is copied from the source named next to it; where a source gives
only the normalised form, the digest is computed here independently with ``hashlib``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.member_retargeting.model.audiences import (
    FIELDS,
    HashedPerson,
    Platform,
    hashed_person,
    normal_country,
    normal_email,
    normal_name,
    normal_phone,
    region_code,
    sha256_hex,
    upload_row,
)

PLATFORMS: tuple[Platform, ...] = ("meta", "google")
HEX64 = re.compile(r"[0-9a-f]{64}")

# Sources (quoted in the comments below by their short name):
META_CIP = (  # Meta, Conversions API "Customer Information Parameters" (rules + example hashes)
    "https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/"
    "customer-information-parameters"
)
GOOGLE_FORMATTING = "https://developers.google.com/data-manager/api/devguides/concepts/formatting"
GOOGLE_SEND = (  # Data Manager API guide: sample members, formatted, then hex SHA-256
    "https://developers.google.com/data-manager/api/devguides/audiences/send-audience-members"
)
GOOGLE_UTIL_TESTS = "googleads/data-manager-python, tests/formatter_test.py"


def independent_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- sha256_hex


def test_sha256_hex_is_lowercase_hex_of_utf8_bytes() -> None:
    # FIPS 180-2 test vector for "abc" (also in GOOGLE_UTIL_TESTS, valid_hash_string "abc").
    assert sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex("정") == independent_sha256("정")


# --------------------------------------------------------------------------------- e-mail


@pytest.mark.parametrize(
    ("raw", "digest"),
    [
        # META_CIP, em: John_Smith@gmail.com -> john_smith@gmail.com -> 62a14e44...
        (
            "John_Smith@gmail.com",
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
        ),
        # META_CIP says "trim any leading and trailing spaces" first.
        (
            "  John_Smith@gmail.com \t",
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
        ),
    ],
)
def test_meta_email_published_example(raw: str, digest: str) -> None:
    normalised = normal_email(raw, "meta")
    assert normalised == "john_smith@gmail.com"
    assert sha256_hex(normalised) == digest


def test_meta_email_keeps_gmail_dots_and_plus_tags() -> None:
    # META_CIP: trim + lowercase only; the Gmail rule is Google's, not Meta's.
    assert normal_email("Cloudy.SanFrancisco+Shopping@GMAIL.com", "meta") == (
        "cloudy.sanfrancisco+shopping@gmail.com"
    )


@pytest.mark.parametrize(
    ("raw", "digest"),
    [
        # GOOGLE_SEND, members 1-4: raw e-mail -> published hex SHA-256 of the formatted form.
        ("dana@example.com", "07e2f1394b0ea80e2adca010ea8318df697001a005ba7452720edda4b0ce57b3"),
        ("DanaM@example.com", "1df6b43bc68dd38eca94e6a65b4f466ae537b796c81a526918b40ac4a7b906c7"),
        ("ALEXF@example.com", "19de0a9906ebee29fe82087be5ec44f3c01e40730bc808b663c71f19dd6b12f2"),
        (
            "AlexF@cymbalgroup.com",
            "7d2d80e240594dcee2e57f57885ee286c4b232dd142234d7a0af6d31cc86679b",
        ),
        (
            "alexF@altostrat.com",
            "063c45291827d4994f98357b72862b25885834fd53cf8f0e4af359916fc03c62",
        ),
        (
            "quinn@CYMBALGROUP.com",
            "05bb62526f091b45d20e243d194766cca8869137421047dc53fa4876d111a6f0",
        ),
        (
            "baklavainthebalkans@gmail.com",
            "f1fcde379f31f4d446b76ee8f34860eca2288adc6b6d6c0fdc56d9eee75a2fa5",
        ),
        (
            "rosario@example.org",
            "83a834cc5327bc4dee7c5408988040dc5813c7662611cd93b707aff72bf7d33f",
        ),
        (
            "cloudySanFrancisco@GMAIL.com",
            "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4",
        ),
        # GOOGLE_UTIL_TESTS, process_email_address variants all -> 509e9330...
        (
            "  ALEXZ@example.com   ",
            "509e933019bb285a134a9334b8bb679dff79d0ce023d529af4bd744d47b4fd8a",
        ),
        (
            "  alexz@EXAMPLE.com   ",
            "509e933019bb285a134a9334b8bb679dff79d0ce023d529af4bd744d47b4fd8a",
        ),
    ],
)
def test_google_email_published_examples(raw: str, digest: str) -> None:
    normalised = normal_email(raw, "google")
    assert normalised is not None
    assert sha256_hex(normalised) == digest


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        # GOOGLE_FORMATTING: gmail.com/googlemail.com lose dots AND the "+suffix".
        ("cloudy.sanfrancisco+shopping@gmail.com", "cloudysanfrancisco@gmail.com"),
        # GOOGLE_FORMATTING: other domains keep dots and "+", only case changes.
        ("user.name+NYC@Example.com", "user.name+nyc@example.com"),
        # GOOGLE_UTIL_TESTS, test_format_email_address_valid_inputs.
        ("Jefferson.Loves.hiking@gmail.com", "jeffersonloveshiking@gmail.com"),
        ("Jefferson.LOVES.Hiking@googlemail.com", "jeffersonloveshiking@googlemail.com"),
        ("QuinnY@EXAMPLE.com", "quinny@example.com"),
        # Only the local part loses dots; the domain is untouched.
        ("a.b+c.d@GoogleMail.com", "ab@googlemail.com"),
    ],
)
def test_google_email_normal_form(raw: str, normalised: str) -> None:
    assert normal_email(raw, "google") == normalised


def test_google_gmail_example_hash_matches_published_digest() -> None:
    # GOOGLE_FORMATTING example + GOOGLE_SEND's digest for cloudysanfrancisco@gmail.com.
    normalised = normal_email("cloudy.sanfrancisco+shopping@gmail.com", "google")
    assert normalised is not None
    assert sha256_hex(normalised) == (
        "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4"
    )


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "quinn",  # GOOGLE_UTIL_TESTS: not user@domain
        " @googlemail.com",  # GOOGLE_UTIL_TESTS: empty local part
        "john smith@example.com",  # inner whitespace (Google's formatter rejects it too)
        "a@b@example.com",
        "user@",
        "user@localhost",
        "user@example..com",
        "user@.example.com",
        "\ud800@example.com",  # lone surrogate: not valid Unicode, cannot be UTF-8 hashed
    ],
)
def test_unusable_email_is_none(raw: str, platform: Platform) -> None:
    assert normal_email(raw, platform) is None


def test_gmail_local_part_that_normalises_away_is_none_for_google_only() -> None:
    # GOOGLE_UTIL_TESTS: " ...@gmail.com" is invalid once the dots are gone.
    assert normal_email(" ...@gmail.com", "google") is None
    assert normal_email("+tag@gmail.com", "google") is None
    assert normal_email(" ...@gmail.com", "meta") == "...@gmail.com"


# ---------------------------------------------------------------------------------- phone


def test_meta_phone_published_example() -> None:
    # META_CIP, ph: US (650)555-1212 -> 16505551212 (country code, no "+") -> e323ec62...
    normalised = normal_phone("(650)555-1212", "meta", "US")
    assert normalised == "16505551212"
    assert sha256_hex(normalised) == (
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    )
    assert normal_phone("+1 (650) 555-1212", "meta") == "16505551212"


@pytest.mark.parametrize(
    ("raw", "region", "digest"),
    [
        # GOOGLE_SEND, member 2 and 4 phones -> published digests of +1800555010x.
        (
            "+1-800-555-0100",
            None,
            "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30",
        ),
        (
            "+1 800-555-0101",
            None,
            "61d6c2976b5d92b1ad63073a12fddd26040cd980067d03a93dd1cc50f1a3ac68",
        ),
        (
            "+1 800-555-0102",
            None,
            "c5383c2eeada28210d27f011bc127d4f9562cf38ff0c9bba33dd45ae79b9fe7c",
        ),
        (
            "+1-800-555-0110",
            None,
            "525c2390a4e2a9766fa8ddc341dd10414603baebefa401f5a5e29f55e176525d",
        ),
        # GOOGLE_UTIL_TESTS, process_phone_number: "   +1-800-555-0100", "1-800-555-0100   ".
        (
            "   +1-800-555-0100",
            None,
            "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30",
        ),
        (
            "1-800-555-0100   ",
            "US",
            "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30",
        ),
    ],
)
def test_google_phone_published_examples(raw: str, region: str | None, digest: str) -> None:
    normalised = normal_phone(raw, "google", region)
    assert normalised is not None
    assert normalised.startswith("+")
    assert sha256_hex(normalised) == digest


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        # GOOGLE_UTIL_TESTS, test_format_phone_number_valid_inputs (those with a "+").
        ("+1 800-555-0100", "+18005550100"),
        ("+441134960987", "+441134960987"),
        ("+44-113-496-0987", "+441134960987"),
    ],
)
def test_google_phone_e164_with_plus(raw: str, e164: str) -> None:
    assert normal_phone(raw, "google") == e164
    assert normal_phone(raw, "meta") == e164[1:]


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("0912 345 678", "TW"),  # national format, trunk prefix 0
        ("0912-345-678", "tw"),  # region code in any case
        ("+886 912 345 678", None),
        ("+886 912 345 678", "US"),  # an explicit country code wins over the default
        ("002 886 912 345 678", "TW"),  # Taiwan's international prefix
    ],
)
def test_local_formats_with_default_region(raw: str, region: str | None) -> None:
    assert normal_phone(raw, "google", region) == "+886912345678"
    assert normal_phone(raw, "meta", region) == "886912345678"


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("0912 345 678", None),  # national number, no region to resolve it
        ("0912 345 678", "XX"),  # unknown region
        ("", "TW"),
        ("   ", "US"),
        (" +A BCD EFG ", None),  # GOOGLE_UTIL_TESTS: no digits
        ("12345", "US"),  # too short
        ("+1 555 555 5555", None),  # area code 555 is not assigned: not a valid number
        ("+999 123 456 789", None),  # no such country calling code
        ("9" * 300, "US"),  # absurdly long
        ("not a phone", "TW"),
        ("\ud800 0912 345 678", "TW"),  # lone surrogate
    ],
)
def test_invalid_phone_is_none(raw: str, region: str | None, platform: Platform) -> None:
    assert normal_phone(raw, platform, region) is None


# ---------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("raw", "normalised", "digest"),
    [
        # META_CIP, fn: Mary -> mary -> 6915771b...
        ("Mary", "mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"),
        # META_CIP, fn: UTF-8 special characters stay: 정 -> 8fa8cd9c...
        ("정", "정", "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"),
        # META_CIP, fn: Valéry -> valéry (accent kept) -> 08e1996b...
        ("Valéry", "valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"),
    ],
)
def test_meta_name_published_examples(raw: str, normalised: str, digest: str) -> None:
    assert normal_name(raw, "meta") == normalised
    assert sha256_hex(normalised) == digest


@pytest.mark.parametrize(
    ("raw", "digest"),
    [
        # GOOGLE_UTIL_TESTS, process_given_name / process_family_name (hex hash of
        # "givenname" / "familyname").
        ("  GivenName  ", "128a07bfe2df877c52076e60d7774cf5baaa046c5a6c48daf30ff43ecca2f814"),
        ("Givenname", "128a07bfe2df877c52076e60d7774cf5baaa046c5a6c48daf30ff43ecca2f814"),
        ("  FamilyName ", "77762c287e61ce065bee5c15464012c6fbe088398b8057627d5577249430d574"),
    ],
)
def test_google_name_published_examples(raw: str, digest: str) -> None:
    normalised = normal_name(raw, "google")
    assert normalised is not None
    assert sha256_hex(normalised) == digest


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        # Both platforms: lowercase, no punctuation (META_CIP fn/ln; GOOGLE AddressInfo
        # given_name/family_name "all lowercase, with no punctuation"). Hashes below are
        # computed independently, no published digest exists for these.
        ("O'Brien", "obrien"),
        ("Jean-Luc", "jeanluc"),
        ("  Mary   Ann ", "mary ann"),
        ("ZOË", "zoë"),
        ("Pérez", "pérez"),
        ("陳大文", "陳大文"),
        ("Łukasz", "łukasz"),
        ("Ἀθηνᾶ", "ἀθηνᾶ"),
    ],
)
def test_unicode_names(raw: str, normalised: str, platform: Platform) -> None:
    assert normal_name(raw, platform) == normalised


@pytest.mark.parametrize("platform", PLATFORMS)
def test_decomposed_accents_hash_like_composed(platform: Platform) -> None:
    decomposed = unicodedata.normalize("NFD", "Valéry")
    assert decomposed != "Valéry"
    assert normal_name(decomposed, platform) == "valéry"


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("raw", ["", "   ", "...", "'-'", "\t\n", "\ud800"])
def test_empty_names_are_none(raw: str, platform: Platform) -> None:
    assert normal_name(raw, platform) is None


# -------------------------------------------------------------------------------- country


def test_country_forms() -> None:
    # META_CIP, country: United States -> us -> 79adb2a2... (lowercase ISO 3166-1 alpha-2).
    assert normal_country(" US ", "meta") == "us"
    assert sha256_hex("us") == "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
    # GOOGLE_UTIL_TESTS, process_region_code: " us" and " uS " -> "US" (not hashed).
    assert normal_country(" us", "google") == "US"
    assert normal_country(" uS ", "google") == "US"
    assert normal_country("tw", "google") == "TW"


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("raw", ["", "USA", "United States", "ZZ", "U", "\u0131t", "1A"])
def test_unknown_country_is_none(raw: str, platform: Platform) -> None:
    assert normal_country(raw, platform) is None


# -------------------------------------------------------------------- hashed_person / rows


def test_meta_person_and_row() -> None:
    person = hashed_person(
        email="  John_Smith@gmail.com ",
        phone="(650)555-1212",
        first_name="Mary",
        last_name="Smith",
        country="US",  # also the default region for the phone
        platform="meta",
    )
    assert person == HashedPerson(
        email="62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",  # META_CIP
        phone="e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",  # META_CIP
        first_name="6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec",  # META_CIP
        last_name=independent_sha256("smith"),
        country="79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621",  # META_CIP
    )
    row = upload_row(person, "meta")
    assert list(row) == ["EMAIL", "PHONE", "FN", "LN", "COUNTRY"]
    assert row["COUNTRY"] == "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"


def test_google_person_and_row() -> None:
    person = hashed_person(
        email="cloudy.sanfrancisco+shopping@gmail.com",
        phone="+1-800-555-0100",
        first_name="  GivenName  ",
        last_name="  FamilyName ",
        country=" us",
        platform="google",
    )
    assert person is not None
    row = upload_row(person, "google")
    assert row == {
        "Email": "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4",  # GOOGLE_SEND
        "Phone": "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30",  # GOOGLE_SEND
        "First Name": "128a07bfe2df877c52076e60d7774cf5baaa046c5a6c48daf30ff43ecca2f814",
        "Last Name": "77762c287e61ce065bee5c15464012c6fbe088398b8057627d5577249430d574",
        "Country": "US",  # plain: Google does not hash Country
    }
    assert list(row) == list(FIELDS["google"])


@pytest.mark.parametrize("platform", PLATFORMS)
def test_country_is_the_default_region_for_local_phones(platform: Platform) -> None:
    person = hashed_person(
        email=None,
        phone="0912 345 678",
        first_name=None,
        last_name=None,
        country="tw",
        platform=platform,
    )
    expected = "+886912345678" if platform == "google" else "886912345678"
    assert person is not None
    assert person.phone == independent_sha256(expected)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    ("email", "phone", "country"),
    [
        (None, None, "US"),
        ("", "", "US"),
        ("not an address", "12", "US"),
        (None, "0912 345 678", None),  # local number and no country to resolve it
        (None, "0912 345 678", "Taiwan"),  # not an ISO code either
    ],
)
def test_person_without_usable_email_or_phone_is_not_exported(
    email: str | None, phone: str | None, country: str | None, platform: Platform
) -> None:
    person = hashed_person(
        email=email,
        phone=phone,
        first_name="Mary",
        last_name="Smith",
        country=country,
        platform=platform,
    )
    assert person is None


@pytest.mark.parametrize("platform", PLATFORMS)
def test_unusable_fields_become_empty_cells(platform: Platform) -> None:
    person = hashed_person(
        email="dana@example.com",
        phone="not a phone",
        first_name=None,
        last_name="...",
        country="Atlantis",
        platform=platform,
    )
    assert person == HashedPerson(
        email="07e2f1394b0ea80e2adca010ea8318df697001a005ba7452720edda4b0ce57b3",  # GOOGLE_SEND
        phone=None,
        first_name=None,
        last_name=None,
        country=None,
    )
    row = upload_row(person, platform)
    assert list(row) == list(FIELDS[platform])
    assert list(row.values())[1:] == ["", "", "", ""]


def test_upload_row_refuses_values_not_in_wire_form() -> None:
    plain = HashedPerson(
        email="dana@example.com", phone=None, first_name=None, last_name=None, country=None
    )
    with pytest.raises(ValueError, match="Email"):
        upload_row(plain, "google")
    google_person = hashed_person(
        email="dana@example.com",
        phone=None,
        first_name=None,
        last_name=None,
        country="US",
        platform="google",
    )
    assert google_person is not None
    with pytest.raises(ValueError, match="COUNTRY"):  # Google's plain country on Meta
        upload_row(google_person, "meta")
    meta_person = hashed_person(
        email="dana@example.com",
        phone=None,
        first_name=None,
        last_name=None,
        country="US",
        platform="meta",
    )
    assert meta_person is not None
    with pytest.raises(ValueError, match="Country"):  # Meta's hashed country on Google
        upload_row(meta_person, "google")


def test_fields_columns() -> None:
    assert FIELDS == {
        "meta": ("EMAIL", "PHONE", "FN", "LN", "COUNTRY"),
        "google": ("Email", "Phone", "First Name", "Last Name", "Country"),
    }


# ------------------------------------------------------------------------------ properties


def _is_digest(value: str | None) -> bool:
    return value is None or HEX64.fullmatch(value) is not None


any_text = st.text(alphabet=st.characters(codec=None))  # includes lone surrogates
phoneish = st.text(alphabet="0123456789 +-().", max_size=25)
region = st.none() | st.sampled_from(["TW", "US", "gb", "XX", "", "zz"]) | st.text(max_size=3)


@given(value=any_text | phoneish, region=region, platform=st.sampled_from(PLATFORMS))
def test_normalisers_never_raise_and_hashes_are_hex(
    value: str, region: str | None, platform: Platform
) -> None:
    for normalised in (
        normal_email(value, platform),
        normal_phone(value, platform, region),
        normal_name(value, platform),
        normal_country(value, platform),
    ):
        if normalised is not None:
            assert normalised
            assert HEX64.fullmatch(sha256_hex(normalised))


@given(
    email=st.none() | any_text,
    phone=st.none() | any_text | phoneish,
    first_name=st.none() | any_text,
    last_name=st.none() | any_text,
    country=st.none() | any_text | st.sampled_from(["TW", "us", "GB"]),
    platform=st.sampled_from(PLATFORMS),
)
def test_hashed_person_never_raises_and_exports_only_digests(
    email: str | None,
    phone: str | None,
    first_name: str | None,
    last_name: str | None,
    country: str | None,
    platform: Platform,
) -> None:
    person = hashed_person(
        email=email,
        phone=phone,
        first_name=first_name,
        last_name=last_name,
        country=country,
        platform=platform,
    )
    if person is None:
        return
    assert person.email is not None or person.phone is not None
    assert all(_is_digest(v) for v in (person.email, person.phone, person.first_name))
    assert _is_digest(person.last_name)
    row = upload_row(person, platform)
    assert list(row) == list(FIELDS[platform])
    for column, value in row.items():
        if platform == "google" and column == "Country":
            assert value == "" or re.fullmatch(r"[A-Z]{2}", value)
        else:
            assert value == "" or HEX64.fullmatch(value)


@given(local=st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){0,3}", fullmatch=True))
def test_google_gmail_dot_variants_share_one_hash(local: str) -> None:
    with_dots = normal_email(f"{local}+news@gmail.com", "google")
    without = normal_email(local.replace(".", "") + "@gmail.com", "google")
    assert with_dots == without


# Regression (review finding 3): a country written out ("United States") gave a phone
# written without its country code no region, so it had no suppression key at all.
@pytest.mark.parametrize(
    ("country", "code"),
    [
        ("US", "US"),
        ("tw", "TW"),
        ("United States", "US"),
        ("  united   kingdom ", "GB"),
        ("Taiwan", "TW"),
        ("GERMANY", "DE"),
        ("USA", "US"),
        ("UK", "GB"),
        ("Côte d'Ivoire", "CI"),
        ("Narnia", None),
        ("XX", None),
        ("\u0131t", None),  # upper-cases to IT, but is no code
        ("", None),
    ],
)
def test_region_code_reads_codes_and_english_names(country: str, code: str | None) -> None:
    assert region_code(country) == code
