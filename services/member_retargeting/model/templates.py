"""Message templates with a person's fields, rendered in Jinja2's sandbox. Pure.

A campaign's subject and body may use ``{{ first_name }}``, ``{{ last_name }}``,
``{{ tier }}``, ``{{ product }}`` (the person's strongest product affinity), ``{{ category
}}`` and ``{{ company }}``, with filters and defaults (``{{ first_name | default("there")
}}``). The sandbox keeps templates from reaching anything else; a template that does not
parse is refused when the campaign is created (:func:`check`), and one that fails for a
person renders with that field empty rather than stopping the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment

FIELDS = ("first_name", "last_name", "tier", "product", "category", "company")
_STRICT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_LENIENT = SandboxedEnvironment(undefined=Undefined, autoescape=False)


def check(template: str) -> str | None:
    """Why ``template`` cannot be used (a syntax error, an unknown field), or None."""
    try:
        _STRICT.from_string(template).render(dict.fromkeys(FIELDS, ""))
    except TemplateError as exc:
        return str(exc)
    return None


def render(template: str, person: Mapping[str, Any]) -> str:
    """``template`` with the person's fields (missing ones render empty)."""
    values = {k: person.get(k) for k in FIELDS if person.get(k) is not None}
    try:
        return _LENIENT.from_string(template).render(values)
    except TemplateError:
        return _LENIENT.from_string(template).render({})
