"""marshmallow fields for values from outside, enforcing :mod:`shared.limits`.

HTTP schemas use these so that every limit is checked where the value enters, with the
field named in the error. Event schemas and ORM models do not: they describe what Funnel
itself writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import ValidationError, fields

from shared.identity import is_junk_id
from shared.limits import (
    MAX_ID_LENGTH,
    json_problems,
    text_problem,
    timestamp_problem,
    truncate,
)


class Identifier(fields.Field):
    """A person or object id: a string or an integer (Segment allows both), stripped,
    at most ``max_length`` characters, clean text, never a junk value ("null" …)."""

    default_error_messages = {
        "invalid": "must be a string or an integer",
        "junk": "{value!r} is not a usable id",
        "too_long": "must be at most {max_length} characters",
    }

    def __init__(self, *, max_length: int = MAX_ID_LENGTH, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.make_error("invalid")
        text = str(value).strip()
        problem = text_problem(text)
        if problem:
            raise ValidationError(problem)
        if is_junk_id(text):
            raise self.make_error("junk", value=value)
        if len(text) > self.max_length:
            raise self.make_error("too_long", max_length=self.max_length)
        return text


class Name(fields.String):
    """A short text: clean, at most ``max_length`` characters. ``cut=True`` cuts a longer
    one (ending in ``…``) and cleans it instead of refusing it: for descriptive text such
    as page names, where keeping the event matters more than the exact text."""

    def __init__(self, *, max_length: int, cut: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length
        self.cut = cut

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if self.cut:
            return truncate(text, self.max_length)
        if not text:
            raise ValidationError("must not be empty")
        problem = text_problem(text)
        if problem:
            raise ValidationError(problem)
        if len(text) > self.max_length:
            raise ValidationError(f"must be at most {self.max_length} characters")
        return text


class JsonObject(fields.Dict):
    """A free-form JSON object (properties, traits, context): strings cleaned, numbers
    finite and within 64 bits, nesting bounded; problems named by their path inside it."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        loaded = super()._deserialize(value, attr, data, **kwargs)
        cleaned, problems = json_problems(loaded)
        if problems:
            raise ValidationError(problems)
        return cleaned


class JsonValue(fields.Raw):
    """Any JSON value, held to the same rules as :class:`JsonObject`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        cleaned, problems = json_problems(value)
        if problems:
            raise ValidationError(problems if set(problems) != {"_value"} else problems["_value"])
        return cleaned


class Timestamp(fields.AwareDateTime):
    """An ISO-8601 time with its offset, between the floor and the ceiling of
    :mod:`shared.limits` (anything else cannot be a real event's time)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        at = super()._deserialize(value, attr, data, **kwargs)
        problem = timestamp_problem(at)
        if problem:
            raise ValidationError(f"must be a real event time: {problem}")
        return at


class MoneyOut(fields.Decimal):
    """An amount in an answer: a decimal string ("120.50"), never a float, and documented
    as one (OpenAPI ``string`` of format ``decimal``)."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"type": "string", "format": "decimal", **kwargs.pop("metadata", {})}
        super().__init__(places=2, as_string=True, metadata=metadata, **kwargs)
