"""The SMTP client against a real SMTP server (the development mail sink): what goes on
the wire, and what each kind of refusal means."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from deploy.mailsink import MailSink
from services.member_retargeting.delivery.links import Links
from services.member_retargeting.delivery.message import Sender, build
from services.member_retargeting.delivery.smtp import (
    Mailer,
    Result,
    SmtpSettings,
    _provider_code,
    _refused_recipient,
)

LINKS = Links(("k" * 32,), "https://mail.example.com")
SENDER = Sender("news@shop.example", "Shop")


@pytest.fixture
def sink() -> Iterator[MailSink]:
    sink = MailSink(port=0, refuse=["gone@example.com"]).start()
    yield sink
    sink.stop()


def message(to: str) -> Any:
    payload = {
        "contact_id": "L1",
        "email": to,
        "message": {"subject": "Hello", "body": "<p>.leading dot line</p>\n.\nend"},
    }
    return build("dispatch-with-a-long-id-" + "x" * 40, payload, SENDER, LINKS)


def test_the_wire_carries_one_click_headers_unencoded_and_dot_stuffed(sink: MailSink) -> None:
    mailer = Mailer(SmtpSettings(host=sink.host, port=sink.port))
    marked: list[bool] = []
    attempt = mailer.send(
        SENDER.address,
        "ada@example.com",
        message("ada@example.com"),
        lambda: marked.append(True) or True,
    )
    mailer.close()
    assert attempt.result is Result.SENT and marked == [True]
    (caught,) = sink.messages()
    raw = caught.raw
    # Not folded into RFC 2047 encoded-words: mail clients read it as it is.
    assert b"\r\nList-Unsubscribe: <https://mail.example.com/u/" in raw
    assert b"=?utf-8?" not in raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert b"\n.\n" not in raw  # a lone dot inside the body did not end the message


def test_a_missing_mailbox_bounces_and_the_connection_is_reused(sink: MailSink) -> None:
    mailer = Mailer(SmtpSettings(host=sink.host, port=sink.port))
    bounced = mailer.send(
        SENDER.address, "gone@example.com", message("gone@example.com"), lambda: True
    )
    assert bounced.result is Result.BOUNCED and bounced.detail.startswith("550 5.1.1")
    sent = mailer.send(SENDER.address, "ada@example.com", message("ada@example.com"), lambda: True)
    mailer.close()
    assert sent.result is Result.SENT and len(sink.messages()) == 1


def test_an_international_address_goes_with_smtputf8_or_is_refused_never_raised(
    sink: MailSink,
) -> None:
    mailer = Mailer(SmtpSettings(host=sink.host, port=sink.port))
    sent = mailer.send(
        SENDER.address, "jörg@exämple.com", message("jörg@exämple.com"), lambda: True
    )
    mailer.close()
    assert sent.result is Result.SENT
    assert sink.messages()[0].recipients == ("jörg@exämple.com",)
    plain = MailSink(port=0, smtputf8=False).start()
    try:
        mailer = Mailer(SmtpSettings(host=plain.host, port=plain.port))
        attempt, after = _twice(mailer)
    finally:
        plain.stop()
    assert attempt.result is Result.REFUSED
    assert after.result is Result.SENT


def _twice(mailer: Mailer) -> tuple[Any, Any]:
    """An international address, then a plain one, on one connection."""
    attempt = mailer.send(
        SENDER.address, "jörg@exämple.com", message("jörg@exämple.com"), lambda: True
    )
    after = mailer.send(SENDER.address, "ada@example.com", message("ada@example.com"), lambda: True)
    mailer.close()
    return attempt, after


def test_a_claim_lost_before_the_final_dot_delivers_nothing(sink: MailSink) -> None:
    mailer = Mailer(SmtpSettings(host=sink.host, port=sink.port))
    attempt = mailer.send(
        SENDER.address, "ada@example.com", message("ada@example.com"), lambda: False
    )
    assert attempt.result is Result.ABANDONED
    again = mailer.send(SENDER.address, "bo@example.com", message("bo@example.com"), lambda: True)
    mailer.close()
    assert again.result is Result.SENT
    assert [c.recipients for c in sink.messages()] == [("bo@example.com",)]


def test_a_server_that_is_not_there_is_a_provider_failure() -> None:
    from shared.broker import free_port

    mailer = Mailer(SmtpSettings(port=free_port(), timeout=2))
    attempt = mailer.send(
        SENDER.address, "ada@example.com", message("ada@example.com"), lambda: True
    )
    assert attempt.result is Result.RETRY and attempt.provider_failure


@pytest.mark.parametrize(
    ("code", "reply", "result", "provider"),
    [
        (550, b"5.1.1 No such user", Result.BOUNCED, False),
        (552, b"5.2.2 Mailbox full", Result.BOUNCED, False),
        (550, b"No such user here", Result.BOUNCED, False),
        (554, b"5.7.1 Relay access denied", Result.RETRY, True),
        (550, b"5.7.1 Client host blocked", Result.RETRY, True),
        (530, b"5.7.0 Authentication required", Result.RETRY, True),
        (554, b"Transaction failed", Result.RETRY, True),
        (450, b"4.2.1 Try later", Result.RETRY, False),
        (421, b"4.3.2 Closing", Result.RETRY, True),
    ],
)
def test_what_a_refused_recipient_means(
    code: int, reply: bytes, result: Result, provider: bool
) -> None:
    attempt = _refused_recipient(code, reply)
    assert (attempt.result, attempt.provider_failure) == (result, provider)


def test_permanent_replies_about_the_sender_or_relay_are_the_providers() -> None:
    assert _provider_code(554, b"5.7.1 Message rejected: sending paused")
    assert _provider_code(535, b"Authentication failed")
    assert not _provider_code(550, b"5.6.0 Content rejected")
    assert not _provider_code(552, b"Message too big")
