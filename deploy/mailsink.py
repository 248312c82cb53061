"""The development mail sink: a real SMTP server (aiosmtpd) that keeps what it receives,
and a page listing the caught e-mails. ``make run`` starts it (SMTP on 127.0.0.1:1025,
the page on http://127.0.0.1:8025) unless ``RETARGETING_SMTP_HOST`` points elsewhere;
``python -m deploy.mailsink`` starts it alone. The tests use the same class.

It delivers nothing onwards. It keeps the newest ``keep`` messages in memory (older ones
are dropped: a long-running sink never grows without bound), and it can refuse chosen
recipients with a permanent error, as a real server refuses an unknown mailbox, so
bounces can be shown.
"""

from __future__ import annotations

import argparse
import html
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from shared.broker import free_port

log = logging.getLogger("funnel.mailsink")


@dataclass(frozen=True)
class Caught:
    """One message as the server accepted it."""

    number: int
    at: datetime
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Handler:
    keep: int
    refuse: Callable[[str], bool]
    on_message: Callable[[Caught], None] | None
    messages: deque[Caught] = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    numbers: Any = field(default_factory=lambda: itertools.count(1))
    accepted: int = 0

    def __post_init__(self) -> None:
        self.messages = deque(maxlen=self.keep)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refuse(address):
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        with self.lock:
            caught = Caught(
                number=next(self.numbers),
                at=datetime.now(UTC),
                mail_from=str(envelope.mail_from),
                recipients=tuple(envelope.rcpt_tos),
                raw=raw,
            )
            self.messages.append(caught)
            self.accepted += 1
        if self.on_message is not None:
            self.on_message(caught)
        return "250 Message accepted for delivery"


class MailSink:
    """SMTP on ``host:port`` (0: a free port, see :attr:`port`) keeping the newest
    ``keep`` messages; ``refuse(address)`` True answers that recipient 550; ``smtputf8``
    False: a server that takes no internationalised address."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1025,
        *,
        keep: int = 1000,
        refuse: Iterable[str] | Callable[[str], bool] = (),
        on_message: Callable[[Caught], None] | None = None,
        smtputf8: bool = True,
    ) -> None:
        if callable(refuse):
            check = refuse
        else:
            refused = frozenset(a.lower() for a in refuse)

            def check(address: str) -> bool:
                return address.lower() in refused

        self.handler = _Handler(keep=keep, refuse=check, on_message=on_message)
        self.controller = Controller(
            self.handler,
            hostname=host,
            port=port or free_port(),
            data_size_limit=10_000_000,
            enable_SMTPUTF8=smtputf8,
        )

    @property
    def host(self) -> str:
        return str(self.controller.hostname)

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def accepted(self) -> int:
        """Messages accepted since the start (also those no longer kept)."""
        return self.handler.accepted

    def start(self) -> MailSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def messages(self) -> list[Caught]:
        with self.handler.lock:
            return list(self.handler.messages)

    def clear(self) -> None:
        with self.handler.lock:
            self.handler.messages.clear()


# ------------------------------------------------------------------- the page


def _page(sink: MailSink, environ: dict[str, Any]) -> tuple[str, str, bytes]:
    path = environ.get("PATH_INFO", "/")
    caught = sink.messages()
    if path.startswith("/m/"):
        number = path[3:]
        found = next((c for c in caught if str(c.number) == number), None)
        if found is None:
            return "404 Not Found", "text/plain; charset=utf-8", b"no such message (kept: newest)"
        return "200 OK", "text/plain; charset=utf-8", found.raw
    rows = []
    for c in reversed(caught):
        m = c.message
        body = m.get_body(("plain",))
        preview = body.get_content()[:160] if body is not None else ""
        rows.append(
            f"<tr><td>{c.number}</td><td>{c.at:%H:%M:%S}</td>"
            f"<td>{html.escape(', '.join(c.recipients))}</td>"
            f'<td><a href="/m/{c.number}">{html.escape(str(m["Subject"] or "(no subject)"))}</a>'
            f'<div class="muted">{html.escape(preview)}</div></td>'
            f"<td>{'yes' if m['List-Unsubscribe-Post'] else 'no'}</td></tr>"
        )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5"><title>Funnel mail sink</title>
<style>body{{font:14px system-ui,sans-serif;margin:1.5rem;color:#1d2433}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #e4e7ec;
padding:.4rem;text-align:left;vertical-align:top}}.muted{{color:#667085;font-size:12px}}</style>
</head><body><h1>Caught e-mails</h1>
<p class="muted">{sink.accepted} accepted since start; the newest {len(caught)} are kept.
SMTP on {html.escape(sink.host)}:{sink.port}. Nothing is delivered onwards.</p>
<table><tr><th>#</th><th>at (UTC)</th><th>to</th><th>subject</th><th>one-click unsubscribe</th>
</tr>{"".join(rows) or '<tr><td colspan="5">Nothing yet: trigger a campaign.</td></tr>'}
</table></body></html>"""
    return "200 OK", "text/html; charset=utf-8", page.encode()


def wsgi_app(sink: MailSink) -> Callable[..., list[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        status, kind, body = _page(sink, environ)
        start_response(
            status,
            [
                ("Content-Type", kind),
                ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
                ("X-Content-Type-Options", "nosniff"),
            ],
        )
        return [body]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.mailsink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--web-port", type=int, default=8025)
    parser.add_argument("--keep", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    sink = MailSink(args.host, args.smtp_port, keep=args.keep).start()
    server = make_server(args.host, args.web_port, wsgi_app(sink), handler_class=_QuietHandler)
    log.info(
        "mail sink: SMTP %s:%d, page http://%s:%d", args.host, sink.port, args.host, args.web_port
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
