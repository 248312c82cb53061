"""Normalise and hash personal identifiers for ads "customer list" audiences.

Meta (Facebook) Custom Audiences and Google Ads Customer Match both match people on the
SHA-256 of a *normalised* identifier; a value normalised differently hashes differently and
silently never matches. This module turns raw contact data into exactly the strings each
platform hashes, hashes them (lowercase hex SHA-256 of the UTF-8 bytes), and builds upload
rows, so that no plain identifier ever leaves on an ads channel.

Every normaliser is total: for any ``str`` it returns the normalised text, or ``None`` when
the value is unusable (blank, malformed, an invalid phone number, an unknown country, text
that is not valid Unicode). It never raises and never lets garbage through to be hashed.

Meta -- rules from the Conversions API "Customer Information Parameters" page, which also
publishes the worked example hashes the tests pin
(https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters);
Custom Audiences uses the same "Hashing and Normalizing Data" rules
(https://developers.facebook.com/docs/marketing-api/custom-audience-api):

* EMAIL: trim leading/trailing spaces, lowercase. Nothing else (gmail dots and ``+tags``
  are kept).
* PHONE: digits only -- no symbols, letters or leading zeros -- *with* the country code and
  *without* a leading ``+`` (``(650)555-1212`` in the US -> ``16505551212``).
* FN / LN: lowercase, no punctuation; non-Latin letters and accents stay, UTF-8 encoded
  (``Valéry`` -> ``valéry``, ``정`` -> ``정``).
* COUNTRY: lowercase ISO 3166-1 alpha-2 code (``us``), hashed like everything else.
* Column (multi-key schema) names EMAIL, PHONE, FN, LN, COUNTRY as in
  facebook/facebook-python-business-sdk, facebook_business/adobjects/helpers/
  customaudiencemixin.py (``MultiKeySchema``).

Google -- rules from the Data Manager API formatting guide
(https://developers.google.com/data-manager/api/devguides/concepts/formatting), its worked
examples (https://developers.google.com/data-manager/api/devguides/audiences/send-audience-members)
and Google's own formatter (googleads/data-manager-python,
google/ads/datamanager_util/format.py); the Google Ads API Customer Match guide
(https://developers.google.com/google-ads/api/docs/remarketing/audience-types/customer-match)
asks for the same trim + lowercase + E.164:

* Email: trim, lowercase; for ``gmail.com`` and ``googlemail.com`` only, drop every ``.``
  in the local part *and* a ``+`` with everything after it
  (``cloudy.sanfrancisco+shopping@gmail.com`` -> ``cloudysanfrancisco@gmail.com``); other
  domains keep their dots and ``+`` (``user.name+NYC@Example.com`` ->
  ``user.name+nyc@example.com``).
* Phone: E.164 *with* the ``+`` and country code (``+18005550100``).
* First Name / Last Name: lowercase, no punctuation, no leading/trailing whitespace
  (``AddressInfo.given_name``/``family_name`` in google.ads.datamanager.v1; Google Ads API
  ``OfflineUserAddressInfo``).
* Country: ISO 3166-1 alpha-2, *not hashed* ("Only the private customer data in your file
  (Email, Phone, First Name, and Last Name) will be hashed, Country and Zip data won't be",
  https://support.google.com/google-ads/answer/7474263); upper case as Google's formatter
  emits it (``US``).
* CSV headers Email, Phone, First Name, Last Name, Country
  (https://support.google.com/google-ads/answer/7659867).

Phone numbers are parsed and validated with ``phonenumbers`` (libphonenumber); a number
without an international prefix needs a ``default_region`` (e.g. ``"0912 345 678"`` with
``"TW"`` -> ``+886912345678``).

Zip/postal code is not handled yet. Google matches on names only as a mailing address
(First Name + Last Name + Country + Zip together, answer/7659867), so until Zip is added
Google's name and country columns add no match; Meta uses FN/LN/COUNTRY as extra keys.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

import phonenumbers

Platform = Literal["meta", "google"]

FIELDS: dict[Platform, tuple[str, ...]] = {
    "meta": ("EMAIL", "PHONE", "FN", "LN", "COUNTRY"),
    "google": ("Email", "Phone", "First Name", "Last Name", "Country"),
}
"""The columns each platform's upload carries, in its order and spelling."""

# Domains whose mailboxes ignore dots and "+tags" in the local part (Google's rule only).
_GOOGLE_MAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

# ISO 3166-1 alpha-2 officially assigned codes (249; tzdata's iso3166.tab, ISO/TC 46 N1108).
ISO_COUNTRIES = frozenset(
    {
        "AD",
        "AE",
        "AF",
        "AG",
        "AI",
        "AL",
        "AM",
        "AO",
        "AQ",
        "AR",
        "AS",
        "AT",
        "AU",
        "AW",
        "AX",
        "AZ",
        "BA",
        "BB",
        "BD",
        "BE",
        "BF",
        "BG",
        "BH",
        "BI",
        "BJ",
        "BL",
        "BM",
        "BN",
        "BO",
        "BQ",
        "BR",
        "BS",
        "BT",
        "BV",
        "BW",
        "BY",
        "BZ",
        "CA",
        "CC",
        "CD",
        "CF",
        "CG",
        "CH",
        "CI",
        "CK",
        "CL",
        "CM",
        "CN",
        "CO",
        "CR",
        "CU",
        "CV",
        "CW",
        "CX",
        "CY",
        "CZ",
        "DE",
        "DJ",
        "DK",
        "DM",
        "DO",
        "DZ",
        "EC",
        "EE",
        "EG",
        "EH",
        "ER",
        "ES",
        "ET",
        "FI",
        "FJ",
        "FK",
        "FM",
        "FO",
        "FR",
        "GA",
        "GB",
        "GD",
        "GE",
        "GF",
        "GG",
        "GH",
        "GI",
        "GL",
        "GM",
        "GN",
        "GP",
        "GQ",
        "GR",
        "GS",
        "GT",
        "GU",
        "GW",
        "GY",
        "HK",
        "HM",
        "HN",
        "HR",
        "HT",
        "HU",
        "ID",
        "IE",
        "IL",
        "IM",
        "IN",
        "IO",
        "IQ",
        "IR",
        "IS",
        "IT",
        "JE",
        "JM",
        "JO",
        "JP",
        "KE",
        "KG",
        "KH",
        "KI",
        "KM",
        "KN",
        "KP",
        "KR",
        "KW",
        "KY",
        "KZ",
        "LA",
        "LB",
        "LC",
        "LI",
        "LK",
        "LR",
        "LS",
        "LT",
        "LU",
        "LV",
        "LY",
        "MA",
        "MC",
        "MD",
        "ME",
        "MF",
        "MG",
        "MH",
        "MK",
        "ML",
        "MM",
        "MN",
        "MO",
        "MP",
        "MQ",
        "MR",
        "MS",
        "MT",
        "MU",
        "MV",
        "MW",
        "MX",
        "MY",
        "MZ",
        "NA",
        "NC",
        "NE",
        "NF",
        "NG",
        "NI",
        "NL",
        "NO",
        "NP",
        "NR",
        "NU",
        "NZ",
        "OM",
        "PA",
        "PE",
        "PF",
        "PG",
        "PH",
        "PK",
        "PL",
        "PM",
        "PN",
        "PR",
        "PS",
        "PT",
        "PW",
        "PY",
        "QA",
        "RE",
        "RO",
        "RS",
        "RU",
        "RW",
        "SA",
        "SB",
        "SC",
        "SD",
        "SE",
        "SG",
        "SH",
        "SI",
        "SJ",
        "SK",
        "SL",
        "SM",
        "SN",
        "SO",
        "SR",
        "SS",
        "ST",
        "SV",
        "SX",
        "SY",
        "SZ",
        "TC",
        "TD",
        "TF",
        "TG",
        "TH",
        "TJ",
        "TK",
        "TL",
        "TM",
        "TN",
        "TO",
        "TR",
        "TT",
        "TV",
        "TW",
        "TZ",
        "UA",
        "UG",
        "UM",
        "US",
        "UY",
        "UZ",
        "VA",
        "VC",
        "VE",
        "VG",
        "VI",
        "VN",
        "VU",
        "WF",
        "WS",
        "YE",
        "YT",
        "ZA",
        "ZM",
        "ZW",
    }
)

_WHITESPACE = re.compile(r"\s+")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HashedPerson:
    """One exportable person, every identifier already in its platform's wire form.

    ``email``, ``phone``, ``first_name`` and ``last_name`` are lowercase-hex SHA-256 digests
    (or ``None`` when unknown/unusable). ``country`` is as the platform wants it: the hash of
    the lowercase code for Meta, the plain upper-case ISO code for Google.
    """

    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    country: str | None


def sha256_hex(value: str) -> str:
    """Lowercase hex SHA-256 of ``value``'s UTF-8 bytes (64 characters).

    Hashes exactly what it is given: normalise first. ``value`` must be valid Unicode (no
    lone surrogates), which every non-``None`` result of this module's normalisers is.
    """
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _valid_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def normal_email(value: str, platform: Platform) -> str | None:
    """The e-mail address exactly as ``platform`` hashes it, or ``None`` if unusable.

    Both platforms: trim, lowercase. Google only: for gmail.com/googlemail.com remove every
    ``.`` and any ``+suffix`` from the local part. ``None`` for blank input, inner
    whitespace, anything but one ``@`` between a non-empty local part and a dotted domain,
    or a Gmail local part that is empty once normalised (``...@gmail.com``).
    """
    if not _valid_unicode(value):
        return None
    email = value.strip().lower()
    if not email or _WHITESPACE.search(email):
        return None
    local, at, domain = email.partition("@")
    if not at or not local or "@" in domain or not _plausible_domain(domain):
        return None
    if platform == "google" and domain in _GOOGLE_MAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        if not local:
            return None
    return f"{local}@{domain}"


def _plausible_domain(domain: str) -> bool:
    labels = domain.split(".")
    return len(labels) >= 2 and all(labels)


def normal_phone(value: str, platform: Platform, default_region: str | None = None) -> str | None:
    """The phone number in E.164 as ``platform`` hashes it, or ``None`` if not a valid number.

    ``default_region`` (ISO 3166-1 alpha-2, any case) is the country assumed for numbers
    written without an international prefix; without it such numbers are ``None``. The
    number must be valid per libphonenumber's metadata. Google gets ``+<cc><number>``;
    Meta the same digits without the ``+``. Extensions are dropped.
    """
    if not _valid_unicode(value):
        return None
    region = default_region.strip().upper() if default_region else None
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164 if platform == "google" else e164.removeprefix("+")


def normal_name(value: str, platform: Platform) -> str | None:
    """A first or last name as ``platform`` hashes it, or ``None`` if nothing is left.

    Both platforms document the same rule: Unicode NFC, lowercase, punctuation removed
    (``O'Brien`` -> ``obrien``, ``Jean-Luc`` -> ``jeanluc``), whitespace trimmed and inner
    runs collapsed to one space; accents and non-Latin scripts are kept. Titles and
    suffixes (``Mrs.``, ``Jr.``) are not recognised: pass the bare name.
    """
    del platform  # identical rule on both platforms; kept for a uniform call shape
    if not _valid_unicode(value):
        return None
    text = unicodedata.normalize("NFC", value).lower()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    text = _WHITESPACE.sub(" ", text).strip()
    return text or None


def normal_country(value: str, platform: Platform) -> str | None:
    """An ISO 3166-1 alpha-2 code as ``platform`` wants it (Meta ``us``, Google ``US``).

    ``None`` unless the trimmed value is an officially assigned alpha-2 code (any case).
    """
    code = value.strip()
    if not code.isascii():  # non-ASCII can upper-case into a code: "\u0131t".upper() == "IT"
        return None
    code = code.upper()
    if code not in ISO_COUNTRIES:
        return None
    return code.lower() if platform == "meta" else code


def region_code(value: str) -> str | None:
    """The ISO 3166-1 alpha-2 code of a country written as its code (any case) or as its
    English name (``United States``, ``united kingdom``; names as libphonenumber's
    geocoder spells them, and a few common short forms), or ``None``. Used as the default
    region of a phone number written without its country code."""
    code = normal_country(value, "google")
    if code is not None:
        return code
    return _country_names().get(" ".join(value.split()).casefold())


@functools.cache
def _country_names() -> dict[str, str]:
    """English country name (case-folded) → ISO code, from libphonenumber's locale data."""
    from phonenumbers.geodata.locale import LOCALE_DATA

    names = {}
    for code, by_language in LOCALE_DATA.items():
        name = by_language.get("en")
        while isinstance(name, str) and name.startswith("*"):  # "*aa": as language "aa"
            name = by_language.get(name[1:])
        if code in ISO_COUNTRIES and isinstance(name, str) and name:
            names[name.casefold()] = code
    aliases = {"usa": "US", "united states of america": "US", "uk": "GB", "great britain": "GB"}
    return {**names, **aliases}


def _hash(value: str | None) -> str | None:
    return None if value is None else sha256_hex(value)


def hashed_person(
    *,
    email: str | None,
    phone: str | None,
    first_name: str | None,
    last_name: str | None,
    country: str | None,
    platform: Platform,
) -> HashedPerson | None:
    """Normalise and hash one person for ``platform``; ``None`` if they cannot be matched.

    A person is exportable only with a usable e-mail or phone: names and country alone
    never make a match key here, so without either the result is ``None`` and nothing about
    them is exported. Unusable fields become ``None``. The person's country, when it is a
    valid code, is the default region for a phone written without a country code.
    """
    region = normal_country(country, "google") if country is not None else None
    hashed_email = _hash(normal_email(email, platform) if email is not None else None)
    hashed_phone = _hash(normal_phone(phone, platform, region) if phone is not None else None)
    if hashed_email is None and hashed_phone is None:
        return None
    return HashedPerson(
        email=hashed_email,
        phone=hashed_phone,
        first_name=_hash(normal_name(first_name, platform) if first_name is not None else None),
        last_name=_hash(normal_name(last_name, platform) if last_name is not None else None),
        country=_country_on_wire(region, platform),
    )


def _country_on_wire(region: str | None, platform: Platform) -> str | None:
    if region is None or platform == "google":
        return region  # Google: plain upper-case code, never hashed
    return sha256_hex(region.lower())


def upload_row(person: HashedPerson, platform: Platform) -> dict[str, str]:
    """``person`` as one upload row: ``FIELDS[platform]`` column -> value, in that order.

    Unknown values are empty strings. Raises ``ValueError`` if a value is not in the form
    this platform's upload carries (every value a SHA-256 hex digest, except Google's
    Country which is a plain upper-case code) -- e.g. a person hashed for the other
    platform -- so a plain identifier can never reach a row.
    """
    values = (person.email, person.phone, person.first_name, person.last_name, person.country)
    row: dict[str, str] = {}
    for column, value in zip(FIELDS[platform], values, strict=True):
        plain_country = platform == "google" and column == "Country"
        if value is not None and not _wire_form(value, plain_country=plain_country):
            raise ValueError(f"{platform} column {column!r} holds a value not in wire form")
        row[column] = value or ""
    return row


def _wire_form(value: str, *, plain_country: bool) -> bool:
    if plain_country:
        return value in ISO_COUNTRIES
    return _HEX64.fullmatch(value) is not None
