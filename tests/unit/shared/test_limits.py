"""The limits of shared/limits.py hold for any value, generated (Hypothesis)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.http import NotJSON, loads_strict
from shared.limits import (
    FUTURE_TOLERANCE,
    MAX_DEPTH,
    MAX_TRAITS_BYTES,
    TIMESTAMP_FLOOR,
    capped_traits,
    clean_text,
    effective_time,
    json_problems,
    json_size,
    money,
    text_problem,
    truncate,
)

# Any text Python can hold, lone surrogates and NUL included.
any_text = st.text(alphabet=st.characters(codec=None, categories=None), max_size=40)
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=30,
)
any_time = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)


@given(any_text)
def test_clean_text_is_always_storable(text: str) -> None:
    cleaned = clean_text(text)
    cleaned.encode("utf-8")  # no lone surrogates left
    assert "\x00" not in cleaned
    assert len(cleaned) == len(text)
    if "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert cleaned is text


@given(any_text, st.integers(min_value=2, max_value=50))
def test_truncate_bounds_and_marks(text: str, limit: int) -> None:
    cut = truncate(text, limit)
    assert len(cut) <= limit
    cut.encode("utf-8")
    if len(text) > limit:
        assert cut.endswith("…")


def test_text_problem_names_control_characters_and_surrogates() -> None:
    assert text_problem("user-1") is None
    assert text_problem("a\x00b") and text_problem("a\ud800") and text_problem("a\nb")


@settings(max_examples=300)
@given(json_values)
def test_an_accepted_json_value_is_storable_everywhere(value: object) -> None:
    cleaned, problems = json_problems(value)
    if problems:
        return
    # What PostgreSQL's json type and every text column can hold.
    text = json.dumps(cleaned, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert "\\u0000" not in json.dumps(cleaned)


@settings(max_examples=300)
@given(json_values)
def test_the_plain_value_shortcut_agrees_with_the_full_walk(value: object) -> None:
    """``json_problems`` answers plain values without walking them: only where the full
    walk would change nothing and find nothing."""
    from shared.limits import _plain, _walk

    problems: dict[str, list[str]] = {}
    walked = _walk(value, "", 0, problems)
    if _plain(value, 0):
        assert not problems and walked is value


@given(json_values)
def test_problems_name_what_is_wrong(value: object) -> None:
    _, problems = json_problems({"p": value})
    for path, reasons in problems.items():
        assert path.startswith("p") and reasons


def test_problems_of_numbers_and_depth() -> None:
    deep: object = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    _, problems = json_problems(
        {"big": 2**64, "nan": math.nan, "inf": -math.inf, "ok": 2**63 - 1, "deep": deep}
    )
    assert set(problems) == {"big", "nan", "inf", "deep" + ".0" * (MAX_DEPTH - 1)}


def test_clean_values_come_back_as_the_same_object() -> None:
    value = {"a": [1, "x", {"b": None}]}
    assert json_problems(value)[0] is value
    cleaned, _ = json_problems({"k\x00": "v\ud800"})
    assert cleaned == {"k\ufffd": "v\ufffd"}


@pytest.mark.parametrize(
    "body",
    [
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": -Infinity}',
        '{"a": 1e400}',
        '{"a": ' + "9" * 5000 + "}",
        "[" * 100_000 + "]" * 100_000,
        b'{"a": "\xff"}',
        "{nope",
    ],
)
def test_loads_strict_refuses_what_is_not_storable_json(body: str | bytes) -> None:
    with pytest.raises(NotJSON) as caught:
        loads_strict(body)
    assert isinstance(caught.value, json.JSONDecodeError) and str(caught.value)


def test_loads_strict_reads_ordinary_json() -> None:
    assert loads_strict(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}


@given(any_time, any_time)
def test_effective_time_never_raises_and_never_trusts_the_future(
    occurred: datetime, received: datetime
) -> None:
    at = effective_time(occurred, received)
    assert at >= TIMESTAMP_FLOOR
    assert at <= max(occurred, TIMESTAMP_FLOOR)
    if TIMESTAMP_FLOOR <= received < datetime(9000, 1, 1, tzinfo=UTC):
        assert at <= received + FUTURE_TOLERANCE
    at - timedelta(days=3650)  # room for cap periods: never overflows


def test_effective_time_keeps_past_and_present_as_sent() -> None:
    now = datetime(2026, 11, 29, tzinfo=UTC)
    backfill = datetime(2019, 5, 1, tzinfo=UTC)
    assert effective_time(backfill, now) == backfill
    assert effective_time(now + timedelta(minutes=1), now) == now + timedelta(minutes=1)
    assert effective_time(now + timedelta(days=400), now) == now + FUTURE_TOLERANCE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10, Decimal("10.00")),
        ("19.999", Decimal("20.00")),
        (-5.5, Decimal("-5.50")),
        (10**12, None),
        ("1e999999", None),
        ("abc", None),
        (True, None),
        (None, None),
        (math.inf, None),
    ],
)
def test_money(value: object, expected: Decimal | None) -> None:
    assert money(value) == expected


@given(
    st.dictionaries(st.text(max_size=8), st.text(max_size=300), max_size=60),
    st.dictionaries(st.text(max_size=8), st.text(max_size=300), max_size=60),
)
def test_capped_traits_stay_bounded_and_keep_the_newest(old: dict, new: dict) -> None:
    merged = capped_traits(old, new, max_keys=50, max_bytes=4096)
    assert len(merged) <= max(50, 1)
    assert json_size(merged) <= 4096 or len(merged) == 1
    # The newest traits win; what is kept of the old ones is unchanged.
    for key, value in merged.items():
        assert value == (new[key] if key in new else old[key])


def test_capped_traits_drop_the_oldest_keys_first() -> None:
    old = {f"k{i}": "x" * 100 for i in range(400)}
    merged = capped_traits(old, {"k0": "again", "new": 1})
    assert list(merged)[-2:] == ["k0", "new"]
    assert "k1" not in merged and "k399" in merged
    assert json_size(merged) <= MAX_TRAITS_BYTES
