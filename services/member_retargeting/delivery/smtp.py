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
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from enum import StrEnum

CRLF = b"\r\n"


class Result(StrEnum):
    SENT = "sent"
    BOUNCED = "bounced"  # the address refused for good (5xx to RCPT): suppress it
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

    def _connection(self) -> smtplib.SMTP:
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
        smtp.ehlo_or_helo_if_needed()
        if s.username:
            smtp.login(s.username, s.password)
        self._smtp = smtp
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
        server or the network does; ``before_final_dot``'s own errors propagate (the
        message is then abandoned, not delivered)."""
        try:
            data = message.as_bytes(policy=email.policy.SMTP)
            options = []
        except UnicodeEncodeError:  # an internationalised address: needs SMTPUTF8
            data = message.as_bytes(policy=email.policy.SMTPUTF8)
            options = ["SMTPUTF8"]
        try:
            smtp = self._connection()
            if options and not smtp.has_extn("smtputf8"):
                return Attempt(Result.REFUSED, "the server does not take SMTPUTF8 addresses")
            code, reply = smtp.mail(sender, options)
            if code != 250:
                smtp.rset()
                return Attempt(Result.RETRY, _reply(code, reply), provider_failure=True)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                smtp.rset()
                if code >= 500:
                    return Attempt(Result.BOUNCED, _reply(code, reply))
                return Attempt(Result.RETRY, _reply(code, reply), provider_failure=code == 421)
            code, reply = smtp.docmd("data")
            if code != 354:
                smtp.rset()
                return Attempt(Result.RETRY, _reply(code, reply), provider_failure=True)
            staged = re.sub(rb"(?m)^\.", b"..", data)
            if not staged.endswith(CRLF):
                staged += CRLF
            smtp.send(staged)
        except (smtplib.SMTPException, OSError) as exc:
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
        if code == 250:
            return Attempt(Result.SENT, _reply(code, reply))
        if code >= 500:  # the content (size, policy, spam): not the address's fault
            return Attempt(Result.REFUSED, _reply(code, reply))
        return Attempt(Result.RETRY, _reply(code, reply), provider_failure=code == 421)
