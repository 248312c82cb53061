"""Message templates: what :func:`check` refuses at campaign creation, what :func:`render`
gives each person, and the sandbox's promises (no reaching past the fields, no stalling a
run or exhausting memory, output bounded)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from jinja2.sandbox import SecurityError

from services.member_retargeting.model.templates import (
    FIELDS,
    FILTERS,
    MAX_OUTPUT,
    check,
    fields_used,
    render,
)

PERSON = {
    "first_name": "ann",
    "last_name": "lee",
    "tier": "gold",
    "product": "Trail Shoe",
    "category": "shoes",
    "company": "Acme",
}


# ------------------------------------------------------------------- check: good ones


@pytest.mark.parametrize(
    "template",
    [
        "",
        "Hello",
        "Hi {{ first_name }}, {{ tier }} members get 10% off {{ product }}!",
        '{{ first_name | default("there") | title }}',
        "{{ first_name | d('there') }}",
        "{% if tier == 'gold' %}Gold{% elif tier %}{{ tier }}{% else %}Member{% endif %}",
        "{{ category | upper }} {{ company | lower }} {{ last_name | capitalize }}",
        "{{ product | truncate(20) }} {{ product | upper }} {{ company | trim }}",
        "{{ first_name | e }} {{ last_name | escape }} {{ tier | string }}",
        "{{ first_name is defined }} {{ tier is undefined }} {{ company is none }}",
        "{{ 3 * 4 }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ 7 // 2 }} {{ 1 / 4 }}",
        "{{ first_name ~ ' ' ~ last_name }}",
        "{# a comment #}{{ first_name }}",
        "{% raw %}{{ not a field }}{% endraw %}",
    ],
)
def test_check_accepts_usable_templates(template: str) -> None:
    assert check(template) is None


@pytest.mark.parametrize("field", FIELDS)
def test_check_accepts_every_field(field: str) -> None:
    assert check(f"{{{{ {field} }}}}") is None


@pytest.mark.parametrize("name", FILTERS)
def test_check_accepts_every_listed_filter(name: str) -> None:
    args = {"replace": "('a', 'b')", "truncate": "(5)", "default": "('x')", "d": "('x')"}
    assert check(f"{{{{ first_name | {name}{args.get(name, '')} }}}}") is None


# -------------------------------------------------------------------- check: refusals


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{{ first_name ", "unexpected end of template"),
        ("{% if tier %}gold", "Unexpected end of template"),
        ("{{ }}", "Expected an expression"),
        ("{% endif %}", "endif"),
    ],
)
def test_check_names_syntax_errors(template: str, fragment: str) -> None:
    problem = check(template)
    assert problem is not None
    assert fragment.lower() in problem.lower()


@pytest.mark.parametrize("name", ["nickname", "email", "phone", "lead_id", "score", "person"])
def test_check_refuses_unknown_fields(name: str) -> None:
    problem = check(f"Hi {{{{ {name} }}}}")
    assert problem is not None and problem.startswith(f"unknown field '{name}'")


@pytest.mark.parametrize(
    "name", ["range", "lipsum", "cycler", "joiner", "namespace", "dict", "config", "request"]
)
def test_check_refuses_globals(name: str) -> None:
    problem = check(f"{{{{ {name} }}}}")
    assert problem is not None and problem.startswith(f"unknown field '{name}'")


@pytest.mark.parametrize(
    "expression", ["first_name | wordcount", "first_name | center(10**6)", "tier | attr('x')"]
)
def test_check_refuses_unlisted_filters(expression: str) -> None:
    problem = check(f"{{{{ {expression} }}}}")
    assert problem is not None
    assert "No filter named" in problem


@pytest.mark.parametrize("test", ["string", "number", "sameas(1)", "callable"])
def test_check_refuses_unlisted_tests(test: str) -> None:
    problem = check(f"{{{{ first_name is {test} }}}}")
    assert problem is not None
    assert "No test named" in problem


@pytest.mark.parametrize(
    ("template", "kind", "line"),
    [
        ("{% for i in range(10**9) %}x{% endfor %}", "for", 1),
        ("{% for c in first_name %}{{ c }}{% endfor %}", "for", 1),
        ("Hi\n\n{% for c in tier %}x{% endfor %}", "for", 3),
        ("{% macro m() %}x{% endmacro %}{{ m() }}", "macro", 1),
        ("{% macro m() %}{{ caller() }}{% endmacro %}\n{% call m() %}x{% endcall %}", "macro", 1),
        ("{% set x = first_name %}{{ x }}", "assign", 1),
        ("Hi\n{% set x %}{{ first_name }}{% endset %}", "assignblock", 2),
    ],
)
def test_check_refuses_loops_macros_and_assignments(template: str, kind: str, line: int) -> None:
    assert check(template) == f"line {line}: {kind} not allowed"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ first_name.__class__.__init__.__globals__ }}",
        "{{ first_name.upper() }}",
        "{{ first_name.ljust(10**9) }}",
        "{{ first_name.format }}",
        "{{ '{0.__class__}'.format(first_name) }}",
        "{{ self.__init__.__globals__ }}",
        "{{ {'a': 1}.items() }}",
        "{{ first_name['__class__'] }}",
    ],
)
def test_check_refuses_attribute_and_method_access(template: str) -> None:
    problem = check(template)
    assert problem is not None
    assert any(w in problem for w in ("getattr not allowed", "call not allowed", "unsafe"))
    assert render(template, PERSON) == ""  # a stored one renders nothing, never raises


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 10**9 }}",
        "{{ first_name * 1000000 }}",
        "{{ [first_name] * 1000 }}",
        "{{ '%s%s' % (first_name, tier) }}",
        "{{ 1001 * 2 }}",
        "{{ 1000 ** 1000 ** 1000 }}",
        "{{ (2 ** 10) ** 2 }}",
        "{{ true * 3 }}",
    ],
)
def test_check_refuses_arithmetic_beyond_small_numbers(template: str) -> None:
    problem = check(template)
    assert problem is not None
    assert "only on numbers up to 1000" in problem


@pytest.mark.parametrize(
    "template", ["{{ 1 / 0 }}", "{{ 1 // 0 }}", "{{ 5 % 0 }}", "{{ 1000.0 ** 1000 }}"]
)
def test_check_names_arithmetic_errors(template: str) -> None:
    problem = check(template)
    assert isinstance(problem, str)
    assert problem


@pytest.mark.parametrize(
    "template",
    [
        "{% include 'header.html' %}",
        "{% extends 'base.html' %}",
        "{% import 'macros.html' as m %}",
        "{% from 'macros.html' import greet %}",
    ],
)
def test_check_refuses_other_templates_with_a_reason(template: str) -> None:
    # check's contract is a reason or None; it is called inside the HTTP schema's
    # validation, so anything it raises becomes a server error instead of a 422.
    problem = check(template)
    assert isinstance(problem, str)
    assert problem


def test_check_refuses_a_recursive_block_with_a_reason() -> None:
    problem = check("{% block b %}{{ self['b']() }}{% endblock %}")
    assert isinstance(problem, str)
    assert problem


# ---------------------------------------------------------------------------- render


def test_render_fills_every_field() -> None:
    template = " ".join(f"{{{{ {field} }}}}" for field in FIELDS)
    assert render(template, PERSON) == "ann lee gold Trail Shoe shoes Acme"


def test_render_with_filters_and_if() -> None:
    template = (
        "Hi {{ first_name | default('there') | title }}, "
        "{% if tier == 'gold' %}thanks for being gold{% else %}welcome{% endif %}."
    )
    assert render(template, PERSON) == "Hi Ann, thanks for being gold."
    assert render(template, {}) == "Hi There, welcome."


def test_render_missing_and_none_fields_are_empty() -> None:
    template = "[{{ first_name }}][{{ company }}]"
    assert render(template, {}) == "[][]"
    assert render(template, {"first_name": None, "company": None}) == "[][]"
    assert render("{{ company | default('you') }}", {"company": None}) == "you"


def test_render_gives_only_the_fields() -> None:
    person = {**PERSON, "email": "ann@example.com", "phone": "+16502530000", "lead_id": "L1"}
    assert render("[{{ email }}][{{ phone }}][{{ lead_id }}]", person) == "[][][]"


def test_render_undefined_names_are_empty() -> None:
    assert render("Hello {{ nickname }}!", PERSON) == "Hello !"
    assert render("{{ range }}{{ cycler }}{{ lipsum }}", PERSON) == ""


def test_render_does_not_evaluate_field_values_as_templates() -> None:
    person = {"first_name": "{{ ''.__class__ }}", "last_name": "{% for x in y %}"}
    assert render("{{ first_name }} {{ last_name }}", person) == (
        "{{ ''.__class__ }} {% for x in y %}"
    )


def test_render_does_not_escape_text() -> None:
    # messages are e-mail / SMS text, not HTML pages: no autoescape
    assert render("{{ company }}", {"company": "Lee & Sons <Ltd>"}) == "Lee & Sons <Ltd>"
    assert render("{{ company | e }}", {"company": "Lee & Sons"}) == "Lee &amp; Sons"


def test_render_does_not_change_the_person() -> None:
    person = dict(PERSON)
    render("{{ first_name | upper }}", person)
    assert person == PERSON


def test_render_output_is_bounded() -> None:
    long_name = "a" * (MAX_OUTPUT + 5000)
    assert len(render("{{ first_name }}", {"first_name": long_name})) == MAX_OUTPUT
    assert len(render("x" * (MAX_OUTPUT * 2), {})) == MAX_OUTPUT
    assert render("{{ first_name }}!", {"first_name": "a" * MAX_OUTPUT}) == "a" * MAX_OUTPUT


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ first_name.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ first_name.__class__.__init__.__globals__ }}",
        "{{ self.__init__ }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{{ first_name['__class__'] }}",
    ],
)
def test_render_never_reaches_python_objects(template: str) -> None:
    try:
        text = render(template, PERSON)
    except SecurityError:
        return  # refused outright: nothing was reached
    assert "class" not in text
    assert "<" not in text
    assert "function" not in text


def test_render_of_a_checked_template_does_not_stop_the_run_for_a_person() -> None:
    # check() accepts it (every field is a text then); a person without a first name
    # must get the message with that field empty, not an exception that stops the run.
    template = "Hi {{ first_name[0] | upper }}."
    assert check(template) is None
    assert render(template, {"first_name": "ann"}) == "Hi A."
    assert render(template, {}) == "Hi ."


# ------------------------------------------------------------------- bounded resources


def _peak_bytes(template: str, person: dict[str, Any]) -> int:
    render("{{ first_name | title }}", PERSON)  # warm jinja's caches first
    tracemalloc.start()
    try:
        render(template, person)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Well above what any template of a few hundred characters needs (about 0.25 MB for a
# 400-character one), far below the multiplied allocations below.
RENDER_MEMORY = 4_000_000


def test_a_benign_template_stays_within_the_memory_bound() -> None:
    template = "Hi {{ first_name | default('there') | title }}, {{ product }}! " * 8
    assert check(template) is None
    assert _peak_bytes(template, PERSON) < RENDER_MEMORY


def test_chained_replace_cannot_multiply_memory() -> None:
    # Each `replace('', ten)` turns n characters into 11n + 10: seven in a row make
    # 58 million characters out of "ab" and a 200-character template. The module promises
    # rendering linear in the template's length and no exhausting memory.
    template = "{{ first_name" + " | replace('', '0123456789')" * 7 + " }}"
    assert len(template) < 250
    assert check(template) is not None  # refused at creation (replace is not offered)
    assert _peak_bytes(template, {"first_name": "ab"}) < RENDER_MEMORY  # and if stored


def test_str_format_cannot_allocate_a_huge_string() -> None:
    # `.format` is a method reached through a field; a width in the format spec makes
    # Python build a string that wide before render truncates it.
    template = "{{ '{:>50000000}'.format(first_name) }}"
    assert check(template) is not None  # refused at creation
    assert _peak_bytes(template, PERSON) < RENDER_MEMORY  # and if stored


class CountingText:
    """A field value that counts how often the template turns it into text."""

    def __init__(self) -> None:
        self.rendered = 0

    def __str__(self) -> str:
        self.rendered += 1
        return "ann"


def test_blocks_cannot_repeat_work() -> None:
    # Without loops each expression runs at most once per render. Block b(i) calls block
    # b(i-1) twice through `self`, so 12 blocks (700 characters) render b0 2**11 times:
    # every added block doubles the work, and about 30 stall a run for hours.
    levels = 12
    template = "{% block b0 %}{{ first_name }}{% endblock %}" + "".join(
        f"{{% block b{i} %}}{{{{ self['b{i - 1}']() }}}}{{{{ self['b{i - 1}']() }}}}"
        "{% endblock %}"
        for i in range(1, levels)
    )
    if check(template) is not None:
        return  # refused at campaign creation: never rendered in a run
    first_name = CountingText()
    render(template, {"first_name": first_name})
    assert first_name.rendered <= template.count("first_name")


# Regression (review finding 13): an e-mail body may be HTML, and a person's fields
# (names, companies from lead traits) went into it as markup.
def test_fields_are_html_escaped_only_when_asked_for_html() -> None:
    person = {"first_name": "<script>x</script>", "company": "Ben & Jerry's", "tier": '"gold"'}
    template = "<p>Hi {{ first_name }} of {{ company | upper }} ({{ tier | e }})</p>"
    html = render(template, person, html=True)
    assert html == (
        "<p>Hi &lt;script&gt;x&lt;/script&gt; of BEN &amp; JERRY&#39;S (&#34;gold&#34;)</p>"
    )
    plain = render(template, person)
    # Plain text stays as written (an explicit ``| e`` still escapes).
    assert plain == "<p>Hi <script>x</script> of BEN & JERRY'S (&#34;gold&#34;)</p>"
    # The template's own markup stays markup; empty fields stay empty.
    assert render("<b>{{ last_name }}</b>", {}, html=True) == "<b></b>"


# Regression (review finding 10): the sharing ledger listed a fixed set of fields per
# channel, whatever the message used.
@pytest.mark.parametrize(
    ("template", "used"),
    [
        ("{{ last_name }} at {{ company }}", {"last_name", "company"}),
        ("{% if tier %}VIP{% endif %} {{ product | default('it') }}", {"tier", "product"}),
        ("No fields at all", set()),
        ("{{ first_name }}{{ first_name | upper }}", {"first_name"}),
    ],
)
def test_fields_used_names_what_a_template_reads(template: str, used: set[str]) -> None:
    assert fields_used(template) == used


def test_fields_used_assumes_the_worst_for_a_template_it_cannot_parse() -> None:
    assert fields_used("{{ first_name") == set(FIELDS)
