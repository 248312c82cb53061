"""``make demo`` (``python -m deploy.demo``): realistic traffic through the public APIs of a
running funnel (``make run``), so a newcomer sees a living funnel, scored leads and a
campaign worth triggering within a minute.

Three parts, usable on their own:

* :func:`generate` — pure: a seed, a number of visitors and "now" in, the Segment calls
  of their journeys out (:class:`Journeys`), with ids and timestamps. Visitors arrive
  from every channel intake classifies (paid and organic search, paid and organic social,
  e-mail, referral, direct; later pages of a visit are internal), as real SDKs report
  them: ``context.page`` url/referrer/search, ``context.campaign`` (UTM), click ids. Some
  identify (traits: company, title, industry, size, country), fill forms, view products
  and add them to the cart; some abandon, some buy; members come back and buy again;
  some deny consent (``context.consent.categoryPreferences`` on every call, as consent
  managers send it). The same seed gives the same calls, ids included; visitor ``i``'s
  journey depends only on the seed and ``i``.
* :func:`send` — posts calls to traffic-intake with the server write key (so orders count
  for membership: :mod:`shared.provenance`), one visitor's calls in order, either as fast
  as intake takes them (``/v1/batch``) or paced open-loop at ``rate`` events/s (one call
  per request, ``/v1/track`` / ``/v1/page`` / ``/v1/identify``). Bounded by a deadline.
* :func:`main` — the command: checks the three services are up, sends with a progress
  bar, waits (bounded) for lead-scoring and member-retargeting to catch up, saves a
  "cart abandoners" segment and a draft campaign over it (never triggered), and prints
  what to look at.

Only public HTTP APIs are used, never a database, so the demo doubles as a load generator
(:mod:`bench.e2e`). Talks to 127.0.0.1 only unless told otherwise.

Failure modes: a service that is not reachable, or a credential it refuses, ends the
command with a one-line message (exit status 1), never a traceback. A call intake rejects
for its content is counted as failed and the rest go on; 429 and 503 are retried after
``Retry-After`` (a few times, within the deadline).
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import click

SITE = "https://www.acme-cloud.example"
SITE_HOST = urlsplit(SITE).hostname
MAX_VISITORS = 100_000
# A journey is at most three visits of bounded length: a visitor sends no more than this.
MAX_CALLS_PER_VISITOR = 80
LIBRARY = {"name": "funnel-demo", "version": "1.0"}

# First-touch channels, as intake's classifier (services/traffic_intake/channels.py)
# names them, with the share of visitors each brings.
CHANNEL_WEIGHTS: dict[str, int] = {
    "organic_search": 30,
    "paid_search": 14,
    "paid_social": 8,
    "organic_social": 10,
    "email": 10,
    "referral": 10,
    "direct": 18,
}
# Consent a visitor's consent manager reports: (share, categoryPreferences or None).
CONSENT_PROFILES: dict[str, tuple[int, dict[str, bool] | None]] = {
    "granted": (68, {"analytics": True, "marketing": True, "advertising": True}),
    "no_marketing": (12, {"analytics": True, "marketing": False, "advertising": False}),
    "denied": (6, {"analytics": False, "marketing": False, "advertising": False}),
    "unanswered": (14, None),
}
LANDING_PAGES = (
    ("/", "Acme Cloud — analytics for B2B teams"),
    ("/pricing", "Pricing and plans"),
    ("/blog/seo-guide", "The B2B SEO guide"),
    ("/blog/lead-scoring-101", "Lead scoring 101"),
    ("/products/analytics-pro", "Analytics Pro"),
    ("/products/crm-connector", "CRM Connector"),
    ("/integrations/salesforce", "Salesforce integration"),
    ("/security", "Security and SSO"),
    ("/compare/hubspot-alternative", "A HubSpot alternative"),
    ("/docs/api", "API reference"),
)
BROWSE_PAGES = (
    *LANDING_PAGES,
    ("/customers", "Customer stories"),
    ("/about", "About us"),
    ("/blog/gdpr-checklist", "A GDPR checklist"),
)
PRODUCTS = (
    ("sku-analytics-pro", "Analytics Pro", "software", 499.0),
    ("sku-analytics-team", "Analytics Team", "software", 199.0),
    ("sku-crm-connector", "CRM Connector", "integrations", 149.0),
    ("sku-sso-addon", "SSO add-on", "security", 99.0),
    ("sku-onboarding", "Guided onboarding", "services", 990.0),
    ("sku-training", "Team training day", "services", 1490.0),
)
FORMS = (
    ("contact-sales", "Contact sales", "/contact"),
    ("whitepaper", "Download: the B2B funnel report", "/resources/funnel-report"),
    ("webinar", "Webinar sign-up", "/events/webinar"),
)
FIRST_NAMES = (
    "Ada", "Grace", "Linus", "Mei", "Hiro", "Priya", "Jonas", "Sofia", "Kenji", "Amara",
    "Chen", "Lucas", "Yuki", "Omar", "Elena", "Ravi", "Hana", "Noah", "Ines", "Wei",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Hopper", "Tanaka", "Lin", "Sato", "Patel", "Berg", "Rossi", "Kim", "Okafor",
    "Wang", "Silva", "Mori", "Haddad", "Novak", "Iyer", "Park", "Fischer", "Costa", "Huang",
)  # fmt: skip
COMPANIES = (
    ("Northwind", "e-commerce", 250),
    ("Contoso", "software", 1200),
    ("Initech", "fintech", 80),
    ("Globex", "manufacturing", 3000),
    ("Umbrella Health", "healthcare", 600),
    ("Hooli", "saas", 900),
    ("Vandelay Imports", "retail", 40),
    ("Stark Components", "manufacturing", 150),
    ("Pied Piper", "software", 30),
    ("Soylent Foods", "food", 12),
)
TITLES = (
    "VP Marketing", "Head of Growth", "Marketing Manager", "CTO", "Data Analyst",
    "Founder", "Director of Sales", "Product Manager", "Growth Hacker", "CMO",
)  # fmt: skip
COUNTRIES = ("TW", "JP", "SG", "US", "HK", "KR", "DE", "GB", "FR", "AU")
USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
)
LOCALES = ("en-US", "zh-TW", "ja-JP", "en-GB", "ko-KR", "de-DE")


# --------------------------------------------------------------------------- journeys


@dataclass(frozen=True)
class Call:
    """One Segment call of a journey: ``type`` (page, track, identify) and ``body`` as a
    server-side SDK sends it (messageId, anonymousId, userId once known, ISO timestamp,
    context…). ``at`` is the call's timestamp; ``visitor`` the journey it belongs to (a
    visitor's calls must reach intake in order)."""

    at: datetime
    visitor: int
    type: str
    body: dict[str, Any]

    @property
    def path(self) -> str:
        return f"/v1/{self.type}"

    def batch_item(self) -> dict[str, Any]:
        """The call as an item of ``/v1/batch``."""
        return {"type": self.type, **self.body}

    @property
    def event(self) -> str | None:
        """The track call's event name (None for other calls)."""
        return self.body.get("event") if self.type == "track" else None


@dataclass(frozen=True)
class Visitor:
    """What one journey did, for summaries and tests."""

    index: int
    anonymous_id: str
    channel: str  # the first-touch channel the journey was generated for
    consent: str  # a key of CONSENT_PROFILES
    user_id: str | None = None
    email: str | None = None
    form_fills: int = 0
    carts: int = 0
    orders: int = 0
    abandoned: bool = False


@dataclass(frozen=True)
class Journeys:
    """Every call of every visitor, ordered by time (one visitor's calls in their own
    order), and what each visitor did."""

    calls: tuple[Call, ...]
    visitors: tuple[Visitor, ...]

    def counts(self) -> dict[str, int]:
        v = self.visitors
        return {
            "visitors": len(v),
            "calls": len(self.calls),
            "identified": sum(1 for x in v if x.user_id),
            "form_fills": sum(x.form_fills for x in v),
            "carts": sum(1 for x in v if x.carts),
            "abandoned_carts": sum(1 for x in v if x.abandoned),
            "buyers": sum(1 for x in v if x.orders),
            "orders": sum(x.orders for x in v),
            "repeat_buyers": sum(1 for x in v if x.orders > 1),
            "consent_denials": sum(1 for x in v if x.consent in ("denied", "no_marketing")),
        }

    def channels(self) -> Counter[str]:
        return Counter(x.channel for x in self.visitors)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _first_touch(
    rng: random.Random, channel: str
) -> tuple[dict[str, str], str, dict[str, str] | None]:
    """(query parameters of the landing URL, referrer, ``context.campaign``) for a
    visitor arriving from ``channel``, the way browsers and SDKs report it."""
    if channel == "organic_search":
        engine = rng.choice(
            ("https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/")
        )
        return {}, engine, None
    if channel == "paid_search":
        if rng.random() < 0.7:
            source, click_id = "google", "gclid"
        else:
            source, click_id = "bing", "msclkid"
        name = rng.choice(("brand-tw", "competitor-terms", "analytics-generic"))
        utm = {"utm_source": source, "utm_medium": "cpc", "utm_campaign": name}
        query = {**utm, click_id: uuid.UUID(int=rng.getrandbits(128)).hex[:20]}
        referrer = f"https://www.{source}.com/"
        return query, referrer, {"source": source, "medium": "cpc", "name": name}
    if channel == "paid_social":
        if rng.random() < 0.6:
            source, click_id, referrer = "facebook", "fbclid", "https://m.facebook.com/"
        else:
            source, click_id, referrer = "linkedin", "li_fat_id", "https://www.linkedin.com/"
        name = rng.choice(("retargeting-q3", "lookalike-buyers", "webinar-promo"))
        utm = {"utm_source": source, "utm_medium": "paid_social", "utm_campaign": name}
        query = {**utm, click_id: uuid.UUID(int=rng.getrandbits(128)).hex[:24]}
        return query, referrer, {"source": source, "medium": "paid_social", "name": name}
    if channel == "organic_social":
        referrer = rng.choice(
            (
                "https://www.facebook.com/",
                "https://www.linkedin.com/feed/",
                "https://www.ptt.cc/bbs/",
            )
        )
        return {}, referrer, None
    if channel == "email":
        name = rng.choice(("newsletter-weekly", "product-update", "nurture-3"))
        utm = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": name}
        referrer = rng.choice(("", "https://mail.google.com/"))
        return utm, referrer, {"source": "newsletter", "medium": "email", "name": name}
    if channel == "referral":
        referrer = rng.choice(
            (
                "https://news.ycombinator.com/item?id=40000001",
                "https://www.g2.com/products/acme-cloud/reviews",
                "https://partner-blog.example.org/best-b2b-tools",
            )
        )
        return {}, referrer, None
    if channel == "direct":
        return {}, "", None
    raise ValueError(f"unknown channel {channel!r}")


@dataclass
class _Journey:
    """Builds one visitor's calls; time moves forward with every call."""

    rng: random.Random
    index: int
    anonymous_id: str
    consent: dict[str, bool] | None
    at: datetime
    user_agent: str
    locale: str
    ip: str
    user_id: str | None = None
    calls: list[Call] = field(default_factory=list)
    page: dict[str, str] = field(default_factory=dict)
    campaign: dict[str, str] | None = None

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _context(self) -> dict[str, Any]:
        context: dict[str, Any] = {
            "page": dict(self.page),
            "userAgent": self.user_agent,
            "locale": self.locale,
            "ip": self.ip,
            "library": LIBRARY,
        }
        if self.campaign:
            context["campaign"] = dict(self.campaign)
        if self.consent is not None:
            context["consent"] = {"categoryPreferences": dict(self.consent)}
        return context

    def _call(self, call_type: str, body: dict[str, Any]) -> None:
        self.at += timedelta(seconds=self.rng.uniform(2.0, 40.0))
        full: dict[str, Any] = {
            "messageId": self._id(),
            "anonymousId": self.anonymous_id,
            "timestamp": _iso(self.at),
            **body,
            "context": self._context(),
        }
        if self.user_id:
            full["userId"] = self.user_id
        self.calls.append(Call(self.at, self.index, call_type, full))

    def visit(
        self, path: str, title: str, query: dict[str, str], referrer: str, campaign: Any
    ) -> None:
        """A page view; the page becomes the context of the calls that follow."""
        search = f"?{urlencode(query)}" if query else ""
        self.page = {
            "path": path,
            "url": f"{SITE}{path}{search}",
            "search": search,
            "referrer": referrer,
            "title": title,
        }
        self.campaign = campaign
        self._call("page", {"name": title, "properties": dict(self.page)})

    def browse(self, path: str, title: str) -> None:
        """A page reached from the previous one: the site itself is the referrer."""
        self.visit(path, title, {}, self.page.get("url", "").split("?")[0], None)

    def track(self, event: str, properties: dict[str, Any]) -> None:
        self._call("track", {"event": event, "properties": properties})

    def identify(self, user_id: str, traits: dict[str, Any]) -> None:
        self.user_id = user_id
        self._call("identify", {"traits": dict(traits)})


def _product(rng: random.Random) -> dict[str, Any]:
    sku, name, category, price = rng.choice(PRODUCTS)
    return {
        "product_id": sku,
        "sku": sku,
        "name": name,
        "category": category,
        "price": price,
        "currency": "USD",
        "url": f"{SITE}/products/{_slug(name)}",
    }


def _person(rng: random.Random, anonymous_id: str) -> tuple[str, dict[str, Any]]:
    """A user id and identify traits (e-mail on a reserved ``.example`` domain)."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    company, industry, employees = rng.choice(COMPANIES)
    tag = anonymous_id.replace("-", "")[:6]
    email = f"{first.lower()}.{last.lower()}.{tag}@{_slug(company)}.example"
    traits = {
        "email": email,
        "name": f"{first} {last}",
        "first_name": first,
        "last_name": last,
        "company": company,
        "title": rng.choice(TITLES),
        "industry": industry,
        "employees": employees,
        "country": rng.choice(COUNTRIES),
    }
    return f"usr_{tag}{rng.getrandbits(32):08x}", traits


def _shop(j: _Journey, *, may_buy: bool, traits: dict[str, Any] | None) -> tuple[int, int, bool]:
    """Product views, maybe a cart, maybe a checkout and an order: (carts, orders,
    abandoned). An order needs an identified buyer (checkout asks who you are)."""
    rng = j.rng
    viewed = [_product(rng) for _ in range(rng.randint(1, 3))]
    for product in viewed:
        j.browse(f"/products/{_slug(product['name'])}", product["name"])
        j.track("Product Viewed", product)
    if rng.random() >= 0.7:
        return 0, 0, False
    cart_id = j._id()
    added = viewed[: rng.randint(1, len(viewed))]
    for product in added:
        j.track("Product Added", {**product, "cart_id": cart_id, "quantity": 1})
    products = [{**p, "quantity": 1} for p in added]
    total = round(sum(p["price"] for p in products), 2)
    if not may_buy or rng.random() >= 0.65:
        return 1, 0, True
    j.browse("/checkout", "Checkout")
    order_id = f"ord_{j._id()[:13]}"
    j.track(
        "Checkout Started",
        {
            "order_id": order_id,
            "value": total,
            "revenue": total,
            "currency": "USD",
            "products": products,
        },
    )
    if j.user_id is None and traits is not None:
        user_id, person = _person(rng, j.anonymous_id)
        traits.update(person)
        j.identify(user_id, traits)
    if j.user_id is None or rng.random() >= 0.75:
        return 1, 0, True
    j.track(
        "Order Completed",
        {
            "checkout_id": order_id,
            "order_id": order_id,
            "total": total,
            "revenue": total,
            "tax": round(total * 0.05, 2),
            "currency": "USD",
            "products": products,
        },
    )
    return 1, 1, False


def _journey(seed: int, index: int, now: datetime, days: float) -> tuple[list[Call], Visitor]:
    rng = random.Random(f"funnel-demo:{seed}:{index}")
    anonymous_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    channel = rng.choices(list(CHANNEL_WEIGHTS), weights=list(CHANNEL_WEIGHTS.values()))[0]
    consent_name = rng.choices(
        list(CONSENT_PROFILES), weights=[w for w, _ in CONSENT_PROFILES.values()]
    )[0]
    start = now - timedelta(seconds=rng.uniform(3600.0, max(days * 86400.0, 7200.0)))
    j = _Journey(
        rng,
        index,
        anonymous_id,
        CONSENT_PROFILES[consent_name][1],
        start,
        rng.choice(USER_AGENTS),
        rng.choice(LOCALES),
        f"198.51.100.{rng.randint(1, 254)}",
    )
    query, referrer, campaign = _first_touch(rng, channel)
    path, title = rng.choice(LANDING_PAGES)
    j.visit(path, title, query, referrer, campaign)
    for _ in range(rng.randint(0, 3)):
        j.browse(*rng.choice(BROWSE_PAGES))

    denied = consent_name == "denied"
    traits: dict[str, Any] = {}
    form_fills = carts = orders = 0
    abandoned = False
    # Who tells us who they are: a form (sales, whitepaper, webinar) or a sign-up.
    if not denied and rng.random() < (0.35 if consent_name == "no_marketing" else 0.5):
        user_id, traits = _person(rng, anonymous_id)
        if rng.random() < 0.6:
            form_id, form_name, form_path = rng.choice(FORMS)
            j.browse(form_path, form_name)
            if rng.random() < 0.08:
                j.track("Form Error", {"form_id": form_id, "field": "email"})
            j.identify(user_id, traits)
            j.track("Form Submitted", {"form_id": form_id, "form_name": form_name})
            form_fills += 1
            if form_id == "contact-sales" and rng.random() < 0.5:
                j.track("Demo Requested", {"form_id": form_id})
        else:
            j.browse("/signup", "Sign up")
            j.identify(user_id, traits)
            j.track("Signed Up", {"method": "email"})
            if rng.random() < 0.3:
                j.track("Trial Started", {"plan": rng.choice(("enterprise", "business", "team"))})
    if rng.random() < (0.15 if denied else 0.5):
        c, o, a = _shop(j, may_buy=not denied, traits=None if denied else traits)
        carts, orders, abandoned = carts + c, orders + o, a

    # Members come back (a newsletter or by heart) and buy again; some twice.
    returns = 0
    while orders and returns < 2 and rng.random() < (0.55 if returns == 0 else 0.35):
        back = j.at + timedelta(hours=rng.uniform(6.0, 24.0 * max(days / 2, 1.0)))
        latest = now - timedelta(hours=1)
        if back > latest:
            if latest - j.at < timedelta(minutes=30):
                break
            back = j.at + (latest - j.at) * rng.uniform(0.3, 0.9)
        j.at = back
        returns += 1
        if rng.random() < 0.5:
            name = "member-offer"
            utm = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": name}
            campaign = {"source": "newsletter", "medium": "email", "name": name}
            j.visit("/", LANDING_PAGES[0][1], utm, "", campaign)
        else:
            j.visit("/", LANDING_PAGES[0][1], {}, "", None)
        c, o, _ = _shop(j, may_buy=True, traits=traits)
        carts, orders = carts + c, orders + o

    visitor = Visitor(
        index,
        anonymous_id,
        channel,
        consent_name,
        user_id=j.user_id,
        email=traits.get("email") if j.user_id else None,
        form_fills=form_fills,
        carts=carts,
        orders=orders,
        abandoned=abandoned and not orders,
    )
    return j.calls, visitor


def generate(seed: int, visitors: int, now: datetime, *, days: float = 7.0) -> Journeys:
    """The journeys of ``visitors`` visitors whose first visits fall in the ``days``
    before ``now`` (an aware datetime; every call is at least ten minutes before it).

    Pure and deterministic: the same arguments give the same calls, message ids and
    timestamps. At most :data:`MAX_CALLS_PER_VISITOR` calls per visitor. Raises
    ``ValueError`` for a visitor count outside 0..:data:`MAX_VISITORS`, a naive ``now``
    or ``days`` outside (0, 365]."""
    if not 0 <= visitors <= MAX_VISITORS:
        raise ValueError(f"visitors must be within 0..{MAX_VISITORS}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not 0 < days <= 365:
        raise ValueError("days must be within (0, 365]")
    calls: list[tuple[datetime, int, int, Call]] = []
    people = []
    for index in range(visitors):
        mine, visitor = _journey(seed, index, now, days)
        people.append(visitor)
        calls += [(c.at, index, n, c) for n, c in enumerate(mine[:MAX_CALLS_PER_VISITOR])]
    calls.sort(key=lambda item: item[:3])
    return Journeys(tuple(item[3] for item in calls), tuple(people))


# --------------------------------------------------------------------------- HTTP


class DemoError(Exception):
    """A failure the command reports in one line: a service down, a credential refused."""


@dataclass(frozen=True)
class Response:
    status: int
    body: Any
    retry_after: float | None = None


class JsonClient:
    """JSON over one keep-alive HTTP/1.1 connection (not thread-safe: one per thread).
    ``auth`` is the whole Authorization header value, or None."""

    def __init__(self, base_url: str, auth: str | None, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise DemoError(f"{base_url!r} is not an http://host:port URL")
        self.base_url = base_url.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or 80
        self.auth = auth
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> Response:
        """One request; raises ``OSError`` / ``http.client.HTTPException`` when the
        connection fails (after one reconnect, for a keep-alive the server closed)."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.auth:
            headers["Authorization"] = self.auth
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                raw = self._conn.getresponse()
                payload = raw.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            if raw.getheader("Connection", "").lower() == "close":
                self.close()
            retry = raw.getheader("Retry-After")
            try:
                parsed = json.loads(payload) if payload else None
            except ValueError:
                parsed = payload.decode("utf-8", "replace")
            return Response(raw.status, parsed, float(retry) if retry and retry.isdigit() else None)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def bearer(token: str) -> str:
    return f"Bearer {token}"


@dataclass
class SendResult:
    """What :func:`send` did: events intake accepted (new or duplicate), events it
    refused, requests made, seconds from the first send to the last answer, and for
    paced sending how far behind its schedule the sender fell at worst."""

    accepted: int = 0
    duplicates: int = 0
    failed: int = 0
    requests: int = 0
    seconds: float = 0.0
    max_lag: float = 0.0
    unsent: int = 0

    @property
    def per_second(self) -> float:
        return (self.accepted + self.duplicates) / self.seconds if self.seconds else 0.0


def send(
    calls: Sequence[Call],
    intake_url: str,
    write_key: str,
    *,
    rate: float | None = None,
    batch_size: int = 25,
    threads: int = 4,
    max_seconds: float = 60.0,
    progress: Callable[[int], None] | None = None,
    on_sent: Callable[[Call, float], None] | None = None,
) -> SendResult:
    """Post ``calls`` (in time order) to intake at ``intake_url`` with ``write_key``.

    Visitors are shared out among ``threads`` connections, each sending its visitors'
    calls in order. Without ``rate``: ``/v1/batch`` requests of up to ``batch_size``
    calls, as fast as intake answers. With ``rate`` (events/s): open-loop pacing, call
    ``i`` due at ``start + i / rate``, one call per request on its own endpoint; a
    thread that falls behind sends at once (``max_lag`` says by how much).
    ``on_sent(call, t)`` is called (from a sender thread) with the monotonic time each
    call's request was sent, once intake accepted it. ``progress(n)`` is called from
    the calling thread as calls are answered.

    Stops at ``max_seconds`` (calls not sent are counted in ``unsent``). Raises
    :class:`DemoError` when intake is unreachable or refuses the write key (401/403).
    """
    if batch_size < 1 or threads < 1:
        raise ValueError("batch_size and threads must be at least 1")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be more than 0")
    shards: list[list[tuple[int, Call]]] = [[] for _ in range(threads)]
    for i, call in enumerate(calls):
        shards[call.visitor % threads].append((i, call))
    result = SendResult()
    lock = threading.Lock()
    answered = [0]
    errors: list[BaseException] = []
    stop = threading.Event()
    started = time.monotonic()
    deadline = started + max_seconds
    auth = basic_auth(write_key)

    def post(client: JsonClient, path: str, body: Any) -> Response:
        for attempt in range(6):
            try:
                response = client.request("POST", path, body)
            except (OSError, http.client.HTTPException) as exc:
                if attempt == 0 and result.requests == 0:
                    raise DemoError(
                        f"traffic-intake is not reachable at {intake_url} ({exc}); "
                        "is `make run` running?"
                    ) from exc
                response = Response(599, None, 0.5)
            if response.status in (401, 403):
                raise DemoError(
                    f"traffic-intake refused the write key ({response.status}): "
                    f"{_message(response)}"
                )
            if response.status not in (429, 503, 599) or time.monotonic() > deadline:
                return response
            time.sleep(min(response.retry_after or 0.2 * 2**attempt, 2.0))
        return response

    def account(batch: list[Call], response: Response, sent_at: float) -> None:
        body = response.body if isinstance(response.body, dict) else {}
        with lock:
            result.requests += 1
            answered[0] += len(batch)
            if 200 <= response.status < 300:
                rejected = len(body.get("rejected") or [])
                result.duplicates += int(body.get("duplicates") or 0)
                result.accepted += len(batch) - rejected - int(body.get("duplicates") or 0)
                result.failed += rejected
            else:
                result.failed += len(batch)
        if on_sent is not None and 200 <= response.status < 300:
            for call in batch:
                on_sent(call, sent_at)

    def work(shard: list[tuple[int, Call]]) -> None:
        client = JsonClient(intake_url, auth)
        try:
            position = 0
            while position < len(shard) and not stop.is_set():
                if time.monotonic() > deadline:
                    return
                if rate is not None:
                    index, call = shard[position]
                    due = started + index / rate
                    wait = due - time.monotonic()
                    if wait > 0:
                        if stop.wait(wait):
                            return
                    else:
                        with lock:
                            result.max_lag = max(result.max_lag, -wait)
                    sent_at = time.monotonic()
                    account([call], post(client, call.path, call.body), sent_at)
                    position += 1
                else:
                    batch = [c for _, c in shard[position : position + batch_size]]
                    sent_at = time.monotonic()
                    body = {"batch": [c.batch_item() for c in batch], "sentAt": _iso(_now())}
                    account(batch, post(client, "/v1/batch", body), sent_at)
                    position += len(batch)
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        finally:
            client.close()

    pool = [threading.Thread(target=work, args=(s,), daemon=True) for s in shards if s]
    for t in pool:
        t.start()
    shown = 0
    while any(t.is_alive() for t in pool):
        time.sleep(0.1)
        if progress is not None and answered[0] > shown:
            progress(answered[0] - shown)
            shown = answered[0]
    if progress is not None and answered[0] > shown:
        progress(answered[0] - shown)
    result.seconds = time.monotonic() - started
    result.unsent = len(calls) - answered[0]
    if errors:
        first = errors[0]
        if isinstance(first, DemoError):
            raise first
        raise DemoError(f"sending failed: {first!r}") from first
    return result


def _now() -> datetime:
    return datetime.now(UTC)


def _message(response: Response) -> str:
    """The error message of an answer (Funnel's one error shape), else its body."""
    body = response.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:200]
        return str(body.get("message") or body)[:200]
    return str(body)[:200]


# --------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class Services:
    """Where the three services are and the credentials the demo uses."""

    intake: str
    scoring: str
    retargeting: str
    write_key: str
    sales_token: str
    marketing_token: str


def load_credentials(var_dir: Path) -> dict[str, str]:
    """The dev credentials ``make run`` keeps in ``var/dev-credentials.json`` (empty when
    the file is missing; :class:`DemoError` when it is not readable JSON)."""
    path = var_dir / "dev-credentials.json"
    if not path.exists():
        return {}
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DemoError(f"cannot read {path}: {exc}") from exc
    return {k: v for k, v in kept.items() if isinstance(v, str)} if isinstance(kept, dict) else {}


def check_up(services: Services) -> None:
    """Each service answers ``/healthz``; else :class:`DemoError` naming the first that
    does not."""
    for name, url in (
        ("traffic-intake", services.intake),
        ("lead-scoring", services.scoring),
        ("member-retargeting", services.retargeting),
    ):
        client = JsonClient(url, None, timeout=3.0)
        try:
            response = client.request("GET", "/healthz")
        except (OSError, http.client.HTTPException) as exc:
            raise DemoError(
                f"{name} is not reachable at {url} ({exc}). Start the funnel with "
                "`make run` (or point the demo at it: --intake-url, --scoring-url, "
                "--retargeting-url)."
            ) from exc
        finally:
            client.close()
        if response.status != 200:
            raise DemoError(f"{name} at {url} is not healthy: HTTP {response.status}")


def _get(client: JsonClient, path: str, service: str) -> Any:
    try:
        response = client.request("GET", path)
    except (OSError, http.client.HTTPException) as exc:
        raise DemoError(f"{service} stopped answering at {client.base_url} ({exc})") from exc
    if response.status in (401, 403):
        raise DemoError(f"{service} refused the token ({response.status}): {_message(response)}")
    if response.status != 200:
        raise DemoError(f"{service}: GET {path} answered {response.status}: {_message(response)}")
    return response.body


def _total(client: JsonClient, path: str, service: str) -> int:
    return int(_get(client, path, service).get("total") or 0)


def wait_for_totals(
    check: Callable[[], Iterable[tuple[int, int]]], until: float, *, settle: float = 1.5
) -> bool:
    """Poll ``check`` (pairs of (seen, wanted)) until every pair has ``seen >= wanted``
    and the counts stopped moving for ``settle`` seconds, or until the monotonic time
    ``until``. True when everything was seen."""
    last: list[tuple[int, int]] | None = None
    steady_since = time.monotonic()
    while True:
        now = time.monotonic()
        pairs = list(check())
        if pairs != last:
            last, steady_since = pairs, now
        reached = all(seen >= wanted for seen, wanted in pairs)
        if reached and now - steady_since >= settle:
            return True
        if now >= until:
            return reached
        time.sleep(0.3)


SEGMENT_NAME = "Demo: cart abandoners this week"
CAMPAIGN_NAME = "Demo: your cart is waiting"


def cart_abandoners_rule(days: int = 7) -> dict[str, Any]:
    """Known people who added to the cart in ``days`` days and did not order since."""
    return {
        "all": [
            {"event": "Product Added", "within_days": days},
            {"not": {"event": "Order Completed", "within_days": days}},
            {"attribute": "has_email", "op": "eq", "value": True},
        ]
    }


def save_segment_and_campaign(
    client: JsonClient, days: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo's segment and its draft campaign: created, or the ones an earlier run
    created (found by name). The campaign is never run here."""

    def call(method: str, path: str, body: Any = None) -> Response:
        try:
            response = client.request(method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            raise DemoError(f"member-retargeting stopped answering ({exc})") from exc
        if response.status in (401, 403):
            raise DemoError(f"member-retargeting refused the marketing token ({response.status})")
        return response

    created = call(
        "POST",
        "/segments",
        {
            "name": SEGMENT_NAME,
            "rule": cart_abandoners_rule(days),
            "description": "made by make demo: people with an e-mail who left a cart",
        },
    )
    if created.status == 201:
        segment = created.body
    elif created.status == 409:
        segment = next(
            s
            for s in _get(client, "/segments", "member-retargeting")["items"]
            if s["name"] == SEGMENT_NAME
        )
    else:
        raise DemoError(f"saving the segment failed ({created.status}): {_message(created)}")
    campaigns = _get(client, "/campaigns", "member-retargeting")["items"]
    mine = [c for c in campaigns if c["name"] == CAMPAIGN_NAME and not c.get("runs")]
    if mine:
        return segment, mine[0]
    created = call(
        "POST",
        "/campaigns",
        {
            "name": CAMPAIGN_NAME,
            "segment_id": segment["id"],
            "channel": "email",
            "message": {
                "subject": "{{ first_name | default('Hi') }}, your cart is waiting",
                "body": "You left {{ product | default('something good') }} in your cart. "
                "Finish your order today and onboarding is on us.",
            },
        },
    )
    if created.status != 201:
        raise DemoError(f"creating the campaign failed ({created.status}): {_message(created)}")
    return segment, created.body


def _services_from(
    var_dir: str,
    intake_url: str | None,
    scoring_url: str | None,
    retargeting_url: str | None,
    write_key: str | None,
    sales_token: str | None,
    marketing_token: str | None,
) -> Services:
    from deploy.run import DevConfig, base_url
    from shared.config import Env

    config = DevConfig.from_env(Env())
    base = base_url(config)
    kept = load_credentials(Path(var_dir))
    missing = [
        name
        for name, value in (
            ("FUNNEL_WRITE_KEY", write_key or kept.get("FUNNEL_WRITE_KEY")),
            ("FUNNEL_SALES_TOKEN", sales_token or kept.get("FUNNEL_SALES_TOKEN")),
            ("FUNNEL_MARKETING_TOKEN", marketing_token or kept.get("FUNNEL_MARKETING_TOKEN")),
        )
        if not value
    ]
    if missing:
        raise DemoError(
            f"no {', '.join(missing)}: not in the environment, the options, or "
            f"{Path(var_dir) / 'dev-credentials.json'} (`make run` writes it)"
        )
    return Services(
        intake=intake_url or f"{base}:{config.intake_port}",
        scoring=scoring_url or f"{base}:{config.scoring_port}",
        retargeting=retargeting_url or f"{base}:{config.retargeting_port}",
        write_key=write_key or kept["FUNNEL_WRITE_KEY"],
        sales_token=sales_token or kept["FUNNEL_SALES_TOKEN"],
        marketing_token=marketing_token or kept["FUNNEL_MARKETING_TOKEN"],
    )


def run_demo(
    services: Services,
    journeys: Journeys,
    *,
    days: int,
    max_seconds: float,
    rate: float | None = None,
    batch_size: int = 25,
    threads: int = 4,
    echo: Callable[[str], None] = click.echo,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Send ``journeys``, wait for the funnel to catch up, save the segment and draft
    campaign, and return the figures the summary prints. Bounded by ``max_seconds``
    overall; raises :class:`DemoError` for a service down or a credential refused."""
    started = time.monotonic()
    until = started + max_seconds
    check_up(services)
    sales = JsonClient(services.scoring, bearer(services.sales_token))
    marketing = JsonClient(services.retargeting, bearer(services.marketing_token))
    leads_before = _total(sales, "/leads?page_size=1", "lead-scoring")
    members_before = _total(marketing, "/members?page_size=1", "member-retargeting")

    counts = journeys.counts()
    # Leave a third of the time for the funnel to catch up.
    send_budget = max(5.0, (max_seconds * 2 / 3) - (time.monotonic() - started))
    with click.progressbar(
        length=len(journeys.calls),
        label=f"{counts['visitors']} visitors, {counts['calls']} calls",
        hidden=not show_progress,
        show_pos=True,
    ) as bar:
        sent = send(
            journeys.calls,
            services.intake,
            services.write_key,
            rate=rate,
            batch_size=batch_size,
            threads=threads,
            max_seconds=send_budget,
            progress=bar.update,
        )
    echo(
        f"intake accepted {sent.accepted} events ({sent.duplicates} duplicates, "
        f"{sent.failed} refused, {sent.unsent} not sent in time) in {sent.seconds:.1f}s"
    )

    # Every visitor who did not deny analytics is at least one lead; every buyer whose
    # order was sent becomes a member.
    sent_all = sent.unsent == 0 and sent.duplicates == 0
    want_leads = sum(1 for v in journeys.visitors if v.consent != "denied") if sent_all else 1
    want_members = counts["buyers"] if sent_all else 0
    echo("waiting for lead-scoring and member-retargeting to catch up …")
    caught_up = wait_for_totals(
        lambda: [
            (_total(sales, "/leads?page_size=1", "lead-scoring") - leads_before, want_leads),
            (
                _total(marketing, "/members?page_size=1", "member-retargeting") - members_before,
                want_members,
            ),
        ],
        until,
    )
    segment, campaign = save_segment_and_campaign(marketing, days)
    top = _get(sales, "/leads?page_size=5", "lead-scoring")["items"]
    figures = {
        **counts,
        "sent": sent,
        "caught_up": caught_up,
        "leads": _total(sales, "/leads?page_size=1", "lead-scoring"),
        "new_leads": _total(sales, "/leads?page_size=1", "lead-scoring") - leads_before,
        "mql": _total(sales, "/leads?page_size=1&stage=mql", "lead-scoring"),
        "customers": _total(sales, "/leads?page_size=1&stage=customer", "lead-scoring"),
        "members": _total(marketing, "/members?page_size=1", "member-retargeting"),
        "segment": _get(marketing, f"/segments/{segment['id']}", "member-retargeting"),
        "campaign": _get(marketing, f"/campaigns/{campaign['id']}", "member-retargeting"),
        "top_leads": top,
        "seconds": time.monotonic() - started,
    }
    sales.close()
    marketing.close()
    return figures


def summary(services: Services, journeys: Journeys, figures: dict[str, Any]) -> str:
    channels = ", ".join(f"{name} {n}" for name, n in journeys.channels().most_common())
    top = "\n".join(
        f"    {lead['score']:>4}  {lead['stage']:<10} {lead.get('priority') or '':<3} "
        f"{lead.get('email') or '(anonymous)'}  {lead.get('company') or ''}"
        for lead in figures["top_leads"]
    )
    segment, campaign = figures["segment"], figures["campaign"]
    late = (
        ""
        if figures["caught_up"]
        else "\n  (still catching up: counts keep growing for a few seconds)"
    )
    return f"""
Done in {figures["seconds"]:.0f}s.{late}
  traffic   {figures["visitors"]} visitors by first touch: {channels}
            {figures["identified"]} identified, {figures["form_fills"]} form fills, \
{figures["carts"]} carts ({figures["abandoned_carts"]} abandoned), {figures["orders"]} orders \
from {figures["buyers"]} buyers ({figures["repeat_buyers"]} came back and bought again), \
{figures["consent_denials"]} denied some consent
  lead-scoring        {figures["leads"]} leads ({figures["new_leads"]} new), \
{figures["mql"]} MQLs, {figures["customers"]} customers. Top by priority:
{top}
    sales pages   {services.scoring}/app/leads   (sign in with the sales token)
    API           {services.scoring}/leads   docs {services.scoring}/docs
  member-retargeting  {figures["members"]} members; segment "{segment["name"]}" \
matches {segment.get("count")}
    draft campaign "{campaign["name"]}" (audience {campaign.get("current_audience")}, \
not triggered): {services.retargeting}/app/campaigns/{campaign["id"]}
    marketing pages {services.retargeting}/app/   (sign in with the marketing token)"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--visitors", type=click.IntRange(1, MAX_VISITORS), default=300, show_default=True)
@click.option("--seed", type=int, default=None, help="same seed, same calls (default: random)")
@click.option(
    "--max-seconds", type=click.FloatRange(5, 3600), default=60.0, show_default=True,
    help="the whole run, sending and waiting",
)  # fmt: skip
@click.option(
    "--rate", type=click.FloatRange(min=0.1), default=None,
    help="events/s, paced open-loop, one call per request (default: batches, as fast as "
    "intake takes them)",
)  # fmt: skip
@click.option("--days", type=click.IntRange(1, 90), default=7, show_default=True,
              help="first visits spread over this many days before now")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1, 500), default=25, show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--var-dir", envvar="FUNNEL_VAR_DIR", default="var", show_default=True,
              help="where make run keeps dev-credentials.json")  # fmt: skip
@click.option("--intake-url", envvar="FUNNEL_INTAKE_URL", default=None)
@click.option("--scoring-url", envvar="FUNNEL_SCORING_URL", default=None)
@click.option("--retargeting-url", envvar="FUNNEL_RETARGETING_URL", default=None)
@click.option("--write-key", envvar="FUNNEL_WRITE_KEY", default=None)
@click.option("--sales-token", envvar="FUNNEL_SALES_TOKEN", default=None)
@click.option("--marketing-token", envvar="FUNNEL_MARKETING_TOKEN", default=None)
def main(
    visitors: int,
    seed: int | None,
    max_seconds: float,
    rate: float | None,
    days: int,
    batch_size: int,
    threads: int,
    var_dir: str,
    intake_url: str | None,
    scoring_url: str | None,
    retargeting_url: str | None,
    write_key: str | None,
    sales_token: str | None,
    marketing_token: str | None,
) -> None:
    """Drive realistic visitor journeys through a running funnel (`make run`).

    URLs default to `make run`'s (FUNNEL_*_PORT), credentials to the environment, else
    var/dev-credentials.json. The same --seed sends the same message ids: intake counts
    a replay as duplicates. Exits 1 with a message when a service is down.
    """
    try:
        services = _services_from(
            var_dir,
            intake_url,
            scoring_url,
            retargeting_url,
            write_key,
            sales_token,
            marketing_token,
        )
        if seed is None:
            seed = random.SystemRandom().randrange(1, 1_000_000)
        journeys = generate(seed, visitors, _now(), days=days)
        click.echo(f"seed {seed} (replay with --seed {seed})")
        figures = run_demo(
            services,
            journeys,
            days=days,
            max_seconds=max_seconds,
            rate=rate,
            batch_size=batch_size,
            threads=threads,
        )
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary(services, journeys, figures))


if __name__ == "__main__":
    main()
