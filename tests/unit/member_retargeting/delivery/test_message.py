"""The e-mail a dispatch becomes: headers mailbox providers require, both parts, links
tracked only with consent."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from services.member_retargeting.delivery.links import CLICK, OPEN, UNSUBSCRIBE, Links
from services.member_retargeting.delivery.message import Sender, build, plain_text

LINKS = Links(("k" * 32,), "https://mail.example.com")
SENDER = Sender("news@shop.example", "Shop")


def payload(**extra: object) -> dict[str, object]:
    return {
        "campaign_id": 1,
        "run_id": 2,
        "contact_id": "L1",
        "email": "ada@example.com",
        "channel": "email",
        "message": {
            "subject": "Back in stock, Ada",
            "body": '<p>Hi Ada &amp; co,</p><p>See <a href="https://shop.example/p?a=1&amp;b=2">'
            'the shoes</a> or <a href="mailto:help@shop.example">write</a>.</p>',
        },
        **extra,
    }


def parts(email: EmailMessage) -> tuple[str, str]:
    parsed = message_from_bytes(email.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    text = parsed.get_body(("plain",))
    page = parsed.get_body(("html",))
    assert text is not None and page is not None
    return text.get_content(), page.get_content()


def test_one_click_unsubscribe_headers_and_a_visible_link() -> None:
    email = build("d1", payload(), SENDER, LINKS)
    unsubscribe = email["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://mail.example.com/u/") and unsubscribe.endswith(">")
    token = unsubscribe[len("<https://mail.example.com/u/") : -1]
    assert LINKS.read(UNSUBSCRIBE, token).contact_id == "L1"
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert email["Message-ID"] == "<d1@shop.example>"
    assert email["To"] == "ada@example.com" and "news@shop.example" in email["From"]
    text, page = parts(email)
    assert unsubscribe[1:-1] in text
    assert unsubscribe[1:-1].replace("&", "&amp;") in page or unsubscribe[1:-1] in page


def test_plain_text_keeps_the_words_and_the_link_targets() -> None:
    text, _ = parts(build("d1", payload(), SENDER, LINKS))
    assert "Hi Ada & co," in text
    assert "the shoes (https://shop.example/p?a=1&b=2)" in text
    assert plain_text("just words\nline two") == "just words\nline two"


def test_without_analytics_consent_links_are_direct_and_there_is_no_pixel() -> None:
    _, page = parts(build("d1", payload(tracking=False), SENDER, LINKS))
    assert 'href="https://shop.example/p?a=1&amp;b=2"' in page
    assert "/c/" not in page and "/o/" not in page


def test_with_analytics_consent_web_links_go_through_signed_clicks_and_a_pixel_is_added() -> None:
    _, page = parts(build("d1", payload(tracking=True), SENDER, LINKS))
    assert "https://shop.example/p" not in page.split("mail.example.com/c/")[0]
    token = page.split("https://mail.example.com/c/", 1)[1].split('"', 1)[0]
    assert LINKS.read(CLICK, token).url == "https://shop.example/p?a=1&b=2"
    assert 'href="mailto:help@shop.example"' in page  # not a web link: left alone
    pixel = page.split("https://mail.example.com/o/", 1)[1].split('"', 1)[0]
    assert LINKS.read(OPEN, pixel).dispatch_id == "d1"


def test_a_plain_text_body_becomes_escaped_html() -> None:
    body = {"subject": "Hi", "body": "Line 1 & more\nLine 2"}
    text, page = parts(build("d1", payload(message=body), SENDER, LINKS))
    assert "Line 1 &amp; more<br>" in page
    assert text.startswith("Line 1 & more\nLine 2")


def test_subject_line_breaks_cannot_inject_headers() -> None:
    body = {"subject": "Hi\r\nBcc: victim@example.com", "body": "x"}
    email = build("d1", payload(message=body), SENDER, LINKS)
    assert email["Bcc"] is None
    assert email["Subject"] == "Hi Bcc: victim@example.com"


def test_a_dispatch_without_an_address_is_refused() -> None:
    with pytest.raises(ValueError, match="no e-mail address"):
        build("d1", payload(email=None), SENDER, LINKS)
