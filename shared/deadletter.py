"""Dead letters: the one place where unprocessable data becomes a message on
``funnel.deadletter``, and the replay that sends them back.

A dead letter keeps the original key and value byte for byte; its headers say where it
came from and why it failed:

=========================  ==================================================
``dlq.source``             original topic, or ``http:<path>`` for intake
``dlq.partition``          original partition (``-1`` for HTTP)
``dlq.offset``             original offset (``-1`` for HTTP)
``dlq.consumer``           the consumer group / service that gave up
``dlq.kind``               a typed reason: ``bad_json``, ``schema_violation`` …
``dlq.reason``             the human-readable reason
``dlq.failed_at``          ISO-8601 UTC time
=========================  ==================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.db import utcnow

HEADER_PREFIX = "dlq."
MAX_REASON_BYTES = 2000


@dataclass(frozen=True)
class DeadLetter:
    source: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    consumer: str
    kind: str
    reason: str

    def headers(self) -> list[tuple[str, bytes]]:
        def utf8(text: str) -> bytes:
            # A reason may quote client text: never let it fail to encode.
            return text.encode("utf-8", "replace")

        return [
            ("dlq.source", utf8(self.source)),
            ("dlq.partition", str(self.partition).encode()),
            ("dlq.offset", str(self.offset).encode()),
            ("dlq.consumer", utf8(self.consumer)),
            ("dlq.kind", utf8(self.kind)),
            ("dlq.reason", utf8(self.reason)[:MAX_REASON_BYTES]),
            ("dlq.failed_at", utcnow().isoformat().encode()),
        ]


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The ``dlq.*`` headers of a dead letter as a plain dict (prefix stripped)."""
    out: dict[str, str] = {}
    for name, value in headers or []:
        if name.startswith(HEADER_PREFIX):
            out[name[len(HEADER_PREFIX) :]] = value.decode(errors="replace")
    return out


def replay_target(info: Mapping[str, str]) -> str | None:
    """Where a dead letter goes back to: its source topic, or None when it came from no
    topic (HTTP dead letters are re-submitted through intake; a timer's or a refused
    outbox row's have no message to replay)."""
    source = info.get("source", "")
    # Topic names never hold ":"; "http:…", "timer:…" and "outbox:…" letters have no
    # message to send back.
    return None if not source or ":" in source else source
