"""One logging set-up for every Funnel process.

``FUNNEL_LOG_FORMAT=json`` (docker-compose sets it) writes one JSON object per line
(python-json-logger): ``time``, ``level``, ``logger``, ``process``, ``message``, and —
when known — ``request_id`` (the HTTP request being served: the client's
``X-Request-ID`` or one made up, echoed in the answer, see :func:`shared.http.init_api`)
and ``event_id`` (the event a consumer is applying or dead-lettering), plus any
``extra`` fields. ``text`` (the default) is the same, readable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from shared.config import Env

_fields: ContextVar[dict[str, str]] = ContextVar("funnel_log_fields", default={})  # noqa: B039
TEXT = "%(asctime)s %(levelname)s %(name)s[%(process)d]%(context)s %(message)s"


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Every record logged inside carries ``fields`` (e.g. ``event_id``)."""
    token = _fields.set({**_fields.get(), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


def _request_id() -> str | None:
    try:
        from flask import g, has_request_context
    except ImportError:  # pragma: no cover - Flask is a dependency
        return None
    return getattr(g, "request_id", None) if has_request_context() else None


class ContextFilter(logging.Filter):
    """Puts the request id and the log context's fields on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = dict(_fields.get())
        request_id = _request_id()
        if request_id:
            fields["request_id"] = request_id
        for key, value in fields.items():
            setattr(record, key, value)
        record.context = "".join(f" {k}={v}" for k, v in sorted(fields.items()))
        return True


def formatter(json_format: bool) -> logging.Formatter:
    if json_format:
        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*_RESERVED, "context"],
        )
    return logging.Formatter(TEXT)


def configure_logging(level: str = "INFO", json_format: bool | None = None) -> None:
    """Root logging for the process: one stream handler (stderr), the format from
    ``FUNNEL_LOG_FORMAT`` (``json`` or ``text``) unless given."""
    if json_format is None:
        json_format = Env().text("FUNNEL_LOG_FORMAT", "text").lower() == "json"
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter(json_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO about every connection.
    logging.getLogger("kafka").setLevel(logging.WARNING)


_RESERVED: list[Any] = [
    "args",
    "asctime",
    "created",
    "exc_info",
    "exc_text",
    "filename",
    "funcName",
    "levelname",
    "levelno",
    "lineno",
    "module",
    "msecs",
    "message",
    "msg",
    "name",
    "pathname",
    "process",
    "processName",
    "relativeCreated",
    "stack_info",
    "taskName",
    "thread",
    "threadName",
]
