"""E-mail over SMTP, each message handed over exactly once.

An SMTP server takes responsibility for a message when it receives the final ``.`` of
``DATA``; a client killed before that leaves nothing behind (the server drops the
unfinished transaction). So the dispatcher stages the whole message, then records the
dispatch as sent in its store (``before_final_dot``, which commits), and only then sends
the ``.``. Killed before the commit: the message was not delivered and is sent again
after the restart. Killed after it: the store says sent, and the server has the message
— except for the few microseconds between the commit returning and the ``.`` leaving
the socket, the one moment in which a kill loses a message instead (never sends it
twice). If the server then refuses the message, the caller records that over the
"sent". ``before_final_dot`` returning False (another dispatcher owns the dispatch now)
abandons the message by dropping the connection.

Connections are reused between messages and replaced after any error. ``security``:
``none`` (a local relay or the development sink), ``starttls`` or ``ssl``; credentials
when set.
"""

from __future__ import annotations

import contextlib
import email.policy
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from enum import StrEnum

CRLF = b"\r\n"
WIRE = email.policy.SMTP.clone(max_line_length=998)
UTF8_WIRE = email.policy.SMTPUTF8.clone(max_line_length=998)
# A connection idle longer than this is checked (NOOP) before it is used again: servers
# close idle ones, and a dead connection must not cost a dispatch an attempt.
IDLE_CHECK_SECONDS = 20.0


class Result(StrEnum):
    SENT = "sent"
    BOUNCED = "bounced"  # the mailbox refused for good (5.1.x to RCPT): suppress it
    REFUSED = "refused"  # this message refused for good (5xx after DATA): not the address
    RETRY = "retry"  # try this dispatch again later
    ABANDONED = "abandoned"  # not ours any more: nothing was delivered


@dataclass(frozen=True)
class Attempt:
    result: Result
    detail: str = ""
    # The server or the connection failed (not this one recipient): slow the channel.
    provider_failure: bool = False


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 1025
    security: str = "none"  # none | starttls | ssl
    username: str = ""
    password: str = ""
    timeout: float = 30.0


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    return f"{code} {text}"[:500]


class Mailer:
    """One reusable SMTP connection. Not thread-safe: one per sending thread."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None
        self._used = 0.0

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None and time.monotonic() - self._used > IDLE_CHECK_SECONDS:
            try:
                alive = self._smtp.noop()[0] == 250
            except (smtplib.SMTPException, OSError):
                alive = False
            if not alive:
                self._drop()
        if self._smtp is not None:
            return self._smtp
        s = self.settings
        smtp: smtplib.SMTP
        if s.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                s.host, s.port, timeout=s.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            if s.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
        # The final dot is a small write after the commit: without this, Nagle's algorithm
        # holds it until the server acknowledges the body (a delayed ACK, ~40 ms a message).
        if smtp.sock is not None:
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        smtp.ehlo_or_helo_if_needed()
        if s.username:
            smtp.login(s.username, s.password)
        self._smtp = smtp
        self._used = time.monotonic()
        return smtp

    def close(self) -> None:
        if self._smtp is None:
            return
        try:
            self._smtp.quit()
        except (smtplib.SMTPException, OSError):
            self._drop()
        self._smtp = None

    def _drop(self) -> None:
        """Close without QUIT: the server discards a transaction in progress."""
        if self._smtp is not None:
            with contextlib.suppress(OSError):
                self._smtp.close()
        self._smtp = None

    def send(
        self,
        sender: str,
        recipient: str,
        message: EmailMessage,
        before_final_dot: Callable[[], bool],
    ) -> Attempt:
        """Hand ``message`` to the server for ``recipient``. Never raises for what the
        server, the network or the message does; ``before_final_dot``'s own errors
        propagate (the message is then abandoned, not delivered)."""
        international = not (recipient.isascii() and sender.isascii())
        try:
            # One header line may be up to 998 characters: a long List-Unsubscribe URL
            # must go out as it is, never folded into RFC 2047 encoded-words (which mail
            # clients do not decode in that header, losing the one-click button).
            data = message.as_bytes(policy=UTF8_WIRE if international else WIRE)
        except (ValueError, UnicodeError) as exc:
            return Attempt(Result.REFUSED, f"the message cannot be encoded: {exc}"[:500])
        try:
            smtp = self._connection()
            options = []
            if international:
                if not smtp.has_extn("smtputf8"):
                    return Attempt(Result.REFUSED, "the server takes no internationalised address")
                options = ["SMTPUTF8"]
            code, reply = smtp.mail(sender, options)
            if code != 250:
                smtp.rset()
                return Attempt(Result.RETRY, _reply(code, reply), provider_failure=True)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                smtp.rset()
                return _refused_recipient(code, reply)
            code, reply = smtp.docmd("data")
            if code != 354:
                smtp.rset()
                return Attempt(Result.RETRY, _reply(code, reply), provider_failure=True)
            staged = re.sub(rb"(?m)^\.", b"..", data)
            if not staged.endswith(CRLF):
                staged += CRLF
            smtp.send(staged)
        except (smtplib.SMTPException, OSError, ValueError, UnicodeError) as exc:
            self._drop()
            return Attempt(Result.RETRY, f"{type(exc).__name__}: {exc}"[:500], True)
        try:
            owned = before_final_dot()
        except BaseException:
            self._drop()
            raise
        if not owned:
            self._drop()
            return Attempt(Result.ABANDONED, "claimed by another dispatcher")
        try:
            smtp.send(b"." + CRLF)
            code, reply = smtp.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            # The final dot may or may not have reached the server: the store says sent,
            # and sending again could deliver twice. Left as sent (at most once).
            self._drop()
            return Attempt(Result.SENT, f"no reply after the final dot: {exc}"[:500], True)
        self._used = time.monotonic()
        if code == 250:
            return Attempt(Result.SENT, _reply(code, reply))
        if code == 421:
            self._drop()  # the server is closing this connection
        if code >= 500 and not _provider_code(code, reply):
            # The content (size, spam): this message, not the address, is refused.
            return Attempt(Result.REFUSED, _reply(code, reply))
        # 4xx (throttling, greylisting) or a refusal of the sender or relay: the provider.
        return Attempt(Result.RETRY, _reply(code, reply), provider_failure=True)


ENHANCED = re.compile(rb"^\s*([245])\.(\d{1,3})\.(\d{1,3})")


def _enhanced(reply: bytes | str) -> tuple[int, int, int] | None:
    raw = reply.encode(errors="replace") if isinstance(reply, str) else reply
    found = ENHANCED.match(raw)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


def _provider_code(code: int, reply: bytes | str) -> bool:
    """A permanent reply about the sender, the relay or its policy (5.7.x: not allowed,
    authentication, block lists; 5.3.x / 5.4.x / 5.5.x: the system, routing, protocol;
    530, 535), not about one mailbox: every message would get it."""
    if code in (530, 535):
        return True
    enhanced = _enhanced(reply)
    return enhanced is not None and enhanced[1] in (3, 4, 5, 7)


def _refused_recipient(code: int, reply: bytes | str) -> Attempt:
    """RCPT refused: a bounce (suppress the address) only when the reply is about the
    mailbox (5.1.x: no such user or domain; 5.2.1 / 5.2.2: disabled, full; or no enhanced
    code with 550, 551, 553); anything else permanent is the provider's trouble."""
    text = _reply(code, reply)
    if code < 500:
        return Attempt(Result.RETRY, text, provider_failure=code == 421)
    enhanced = _enhanced(reply)
    if enhanced is not None:
        mailbox = enhanced[1] == 1 or enhanced[1:] in ((2, 1), (2, 2))
    else:
        mailbox = code in (550, 551, 553)
    if mailbox:
        return Attempt(Result.BOUNCED, text)
    return Attempt(Result.RETRY, text, provider_failure=True)
