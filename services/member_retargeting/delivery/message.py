"""A dispatch as the e-mail a person receives. Pure: no SMTP, no database.

The campaign's subject and body arrive rendered with the person's fields (fields
HTML-escaped in the body, :mod:`..model.templates`). The message is ``multipart/
alternative``: the plain text derived from the HTML (links kept as ``text (url)``) and
the HTML itself, each with a visible unsubscribe line. Headers, as mailbox providers ask
of bulk senders (RFC 2369, RFC 8058): ``List-Unsubscribe`` with the signed HTTPS link
and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``, so the mail client's button
unsubscribes with one POST. (DKIM signing, which RFC 8058 also asks for, belongs to the
relay the dispatcher hands mail to.) ``Message-ID`` is derived from the dispatch, so the
same dispatch is the same message wherever it is seen.

Tracking only with consent: when the person allowed analytics at dispatch time
(``tracking``), absolute http(s) links go through the signed click endpoint and a 1x1
open pixel is added; otherwise links lead straight to their targets and there is no
pixel.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from html.parser import HTMLParser
from typing import Any

from services.member_retargeting.delivery.links import (
    CLICK,
    OPEN,
    UNSUBSCRIBE,
    Link,
    Links,
    trackable,
)
from shared.db import utcnow

HREF = re.compile(r"""(href\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
MAX_SUBJECT = 998  # one header line (RFC 5322)


@dataclass(frozen=True)
class Sender:
    """Who messages come from: ``address`` (the envelope and ``From``), ``name``."""

    address: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2] or "funnel.invalid"


def build(dispatch_id: str, payload: dict[str, Any], sender: Sender, links: Links) -> EmailMessage:
    """The e-mail for the ``campaign.dispatch`` payload. Raises ``ValueError`` when the
    payload has no address (a dispatch that cannot be an e-mail)."""
    to = payload.get("email")
    if not to:
        raise ValueError("the dispatch has no e-mail address")
    message = payload.get("message") or {}
    contact_id = str(payload.get("contact_id") or "")
    link = Link(dispatch_id, contact_id)
    unsubscribe = links.url(UNSUBSCRIBE, link)
    tracking = bool(payload.get("tracking"))
    body = str(message.get("body") or "")
    page = body if "<" in body else "<p>" + html.escape(body).replace("\n", "<br>\n") + "</p>"
    if tracking:
        page = _track_links(page, dispatch_id, contact_id, links)
    footer = (
        '<p style="font-size:12px;color:#666">You receive this because you are on our list. '
        f'<a href="{html.escape(unsubscribe)}">Unsubscribe</a> with one click.</p>'
    )
    pixel = (
        f'<img src="{html.escape(links.url(OPEN, link))}" width="1" height="1" alt="">'
        if tracking
        else ""
    )
    text = plain_text(body) + f"\n\n--\nUnsubscribe with one click: {unsubscribe}\n"

    email = EmailMessage()
    email["Subject"] = _one_line(str(message.get("subject") or ""))[:MAX_SUBJECT]
    email["From"] = formataddr((sender.name, sender.address)) if sender.name else sender.address
    email["To"] = to
    email["Date"] = format_datetime(utcnow())
    email["Message-ID"] = f"<{dispatch_id}@{sender.domain}>"
    email["List-Unsubscribe"] = f"<{unsubscribe}>"
    email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email["Funnel-Dispatch-Id"] = dispatch_id
    email.set_content(text)
    email.add_alternative(
        f"<!doctype html><html><body>{page}{footer}{pixel}</body></html>", subtype="html"
    )
    return email


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _track_links(page: str, dispatch_id: str, contact_id: str, links: Links) -> str:
    def replace(match: re.Match[str]) -> str:
        target = html.unescape(match.group(3)).strip()
        if not trackable(target):
            return match.group(0)
        tracked = links.url(CLICK, Link(dispatch_id, contact_id, target))
        return f"{match.group(1)}{match.group(2)}{html.escape(tracked)}{match.group(2)}"

    return HREF.sub(replace, page)


class _Text(HTMLParser):
    """Text of an HTML body: block elements break lines, links show their target."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.href: str | None = None
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self.skip += 1
        if tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "a":
            self.href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self.skip = max(0, self.skip - 1)
        if tag == "a" and self.href:
            self.parts.append(f" ({self.href})")
            self.href = None
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def plain_text(body: str) -> str:
    """The body as plain text: HTML tags dropped, entities decoded, links as ``text
    (url)``, at most two line breaks in a row. A body without tags stays as it is."""
    if "<" not in body:
        return body.strip()
    parser = _Text()
    parser.feed(body)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
