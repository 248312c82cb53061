"""Message templates with a person's fields, rendered in a locked-down Jinja2 sandbox. Pure.

A campaign's subject and body may use ``{{ first_name }}``, ``{{ last_name }}``,
``{{ tier }}``, ``{{ product }}`` (the person's strongest product affinity), ``{{ category
}}`` and ``{{ company }}``, with ``{% if %}`` and a short list of text filters
(:data:`FILTERS`: ``{{ first_name | default("there") | title }}``).

Templates are written by marketing and rendered once per recipient inside a campaign run,
so a template must not be able to stall a run or exhaust memory: no loops, macros or
``{% set %}`` (refused by :func:`check`), no globals such as ``range``, only the listed
filters, no attribute or method access (``first_name.ljust(10**9)``), and ``*`` / ``**`` /
``%`` refused on anything but small numbers. Rendering is
then linear in the template's length, which the HTTP schema bounds. A template that does
not parse or names an unknown field is refused when the campaign is created
(:func:`check`); one that fails for a person renders with the fields empty rather than
stopping the run.

An e-mail body may be HTML: rendered with ``html=True`` every field is HTML-escaped
(autoescape), so a name such as ``<script>`` or ``Ben & Jerry`` arrives as text, never
as markup; SMS, WhatsApp and webhook texts (and subjects) are plain text and stay as
they are. :func:`fields_used` names the fields a template reads, for the sharing ledger.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, Undefined, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

FIELDS = ("first_name", "last_name", "tier", "product", "category", "company")
FILTERS = (
    "default",
    "d",
    "upper",
    "lower",
    "title",
    "capitalize",
    "trim",
    "truncate",
    "e",
    "escape",
    "string",
)
# What a message needs none of: loops, calls and blocks could repeat work without bound
# (a block calling the one before it twice doubles the work per level), attributes reach
# past the text (``.format`` with a huge width), other templates need a loader.
FORBIDDEN = (
    nodes.For,
    nodes.Macro,
    nodes.CallBlock,
    nodes.Call,
    nodes.Block,
    nodes.Assign,
    nodes.AssignBlock,
    nodes.FilterBlock,
    nodes.With,
    nodes.Include,
    nodes.Extends,
    nodes.Import,
    nodes.FromImport,
    nodes.Getattr,
)
MAX_OPERAND = 1000
MAX_OUTPUT = 100_000


class _MessageEnvironment(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "//", "/"})

    def __init__(self, undefined: type[Undefined], *, html: bool = False) -> None:
        super().__init__(undefined=undefined, autoescape=html)
        self.globals.clear()
        self.filters = {name: self.filters[name] for name in FILTERS}
        self.tests = {name: self.tests[name] for name in ("defined", "undefined", "none")}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return False  # fields are plain texts: nothing to reach through them

    def wrap_str_format(self, value: Any) -> None:
        return None  # no str.format either (the sandbox would hand it out before the check)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        small = all(
            isinstance(v, int | float) and not isinstance(v, bool) and abs(v) <= MAX_OPERAND
            for v in (left, right)
        )
        if not small:
            raise SecurityError(f"'{operator_name}' only on numbers up to {MAX_OPERAND}")
        ops = {
            "*": operator.mul,
            "**": operator.pow,
            "%": operator.mod,
            "//": operator.floordiv,
            "/": operator.truediv,
        }
        return ops[operator_name](left, right)


_STRICT = _MessageEnvironment(StrictUndefined)
_LENIENT = _MessageEnvironment(Undefined)
_LENIENT_HTML = _MessageEnvironment(Undefined, html=True)


def check(template: str) -> str | None:
    """Why ``template`` cannot be used (a syntax error, a statement or call, an unknown
    field or filter), or None. Never raises."""
    try:
        tree = _STRICT.parse(template)
        forbidden = next(iter(tree.find_all(FORBIDDEN)), None)
        if forbidden is not None:
            return f"line {forbidden.lineno}: {type(forbidden).__name__.lower()} not allowed"
        unknown = sorted({n.name for n in tree.find_all(nodes.Name)} - set(FIELDS))
        if unknown:
            return f"unknown field {unknown[0]!r}: use {', '.join(FIELDS)}"
        _STRICT.from_string(template).render(dict.fromkeys(FIELDS, "x"))
    except Exception as exc:  # any failure is a reason to refuse it, never a crash
        return str(exc) or type(exc).__name__
    return None


def fields_used(template: str) -> frozenset[str]:
    """The person's fields ``template`` reads (in output or in a condition): what a message
    made from it shares. Every field when it does not parse (never too few). Never raises."""
    try:
        tree = _STRICT.parse(template)
    except Exception:  # a stored template this version cannot parse: assume the worst
        return frozenset(FIELDS)
    return frozenset(n.name for n in tree.find_all(nodes.Name) if n.name in FIELDS)


def render(template: str, person: Mapping[str, Any], *, html: bool = False) -> str:
    """``template`` with the person's fields (missing ones render empty), at most
    :data:`MAX_OUTPUT` characters; with ``html`` every field is HTML-escaped."""
    values = {k: person.get(k) for k in FIELDS if person.get(k) is not None}
    text = ""
    for attempt in (values, dict.fromkeys(FIELDS, "")):
        try:
            text = _compiled(template, html).render(attempt)
            break
        except Exception:  # a template that fails for this person: try with empty fields
            continue
    return text[:MAX_OUTPUT]


@functools.lru_cache(maxsize=256)
def _compiled(template: str, html: bool = False) -> Template:
    """A run renders the same few templates for every recipient: compile each once."""
    return (_LENIENT_HTML if html else _LENIENT).from_string(template)
