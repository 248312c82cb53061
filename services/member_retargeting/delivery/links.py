"""Signed links in messages: unsubscribe, tracked click, open pixel. Pure.

A link carries what its endpoint needs (the dispatch, the person, for a click the target
URL) signed with the service's link key, so nobody can unsubscribe someone else, count a
click that never happened or turn the click endpoint into an open redirect: a token that
does not verify is refused. Each kind has its own salt: an unsubscribe token is no click
token. Tokens do not expire (an unsubscribe link must work years later, RFC 8058 asks it
to keep working); what they reveal is ids, not personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeSerializer

UNSUBSCRIBE, CLICK, OPEN = "unsubscribe", "click", "open"
PATHS = {UNSUBSCRIBE: "/u/", CLICK: "/c/", OPEN: "/o/"}
MAX_URL = 2000


class InvalidLink(ValueError):
    """A token that does not verify (tampered, another kind's, another key's)."""


@dataclass(frozen=True)
class Link:
    """What a token says: the dispatch (its event id), the person (contact id), and for a
    click the URL it leads to."""

    dispatch_id: str
    contact_id: str
    url: str | None = None


@dataclass(frozen=True)
class Links:
    """Makes and reads the links of one deployment: ``keys`` (oldest first) — the last
    signs, every one verifies, so a rotated secret breaks no link already sent;
    ``base_url`` is where the public endpoints answer (``https://mail.example.com``)."""

    keys: tuple[str, ...]
    base_url: str

    def __post_init__(self) -> None:
        # A bare string would be taken as a list of one-character keys.
        if isinstance(self.keys, str) or not self.keys or not all(self.keys):
            raise ValueError("Links needs a tuple of non-empty keys, the signing one last")

    def _serializer(self, kind: str) -> URLSafeSerializer:
        return URLSafeSerializer(list(self.keys), salt=f"funnel-link-{kind}")

    def token(self, kind: str, link: Link) -> str:
        data = [link.dispatch_id, link.contact_id]
        if kind == CLICK:
            data.append(link.url or "")
        return str(self._serializer(kind).dumps(data))

    def url(self, kind: str, link: Link) -> str:
        return f"{self.base_url.rstrip('/')}{PATHS[kind]}{self.token(kind, link)}"

    def read(self, kind: str, token: str) -> Link:
        """The link ``token`` signs; :class:`InvalidLink` when it does not verify."""
        try:
            data = self._serializer(kind).loads(token)
        except BadSignature as exc:
            raise InvalidLink(f"not a valid {kind} link") from exc
        expected = 3 if kind == CLICK else 2
        if not isinstance(data, list) or len(data) != expected:
            raise InvalidLink(f"not a valid {kind} link")
        if not all(isinstance(part, str) for part in data):
            raise InvalidLink(f"not a valid {kind} link")
        url = data[2] if kind == CLICK else None
        return Link(dispatch_id=data[0], contact_id=data[1], url=url)


def trackable(url: str) -> bool:
    """Only absolute http(s) links are rewritten for click tracking (never ``mailto:``,
    anchors or script URLs), and only reasonably short ones."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and len(url) <= MAX_URL
