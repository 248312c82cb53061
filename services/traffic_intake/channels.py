"""Traffic-source classification: which channel brought this visit.

Pure. Inputs are what Segment-style clients send: ``context.campaign`` (UTM: source,
medium, name, term, content), ``context.page.referrer`` and ``context.page.url`` /
``context.page.search`` (click ids and UTM in the query string). Output, in order of
precedence:

1. click ids: ``gclid``/``dclid``/``wbraid``/``gbraid`` → paid search (Google),
   ``msclkid`` → paid search (Bing); ``fbclid`` → social (Facebook) — paid only when the
   UTM medium says so, because Facebook adds fbclid to organic link clicks too;
   ``li_fat_id``, ``ttclid``, ``twclid`` likewise for LinkedIn, TikTok, X.
2. UTM medium: paid (cpc, ppc, paid…) → paid search, or paid social when the source is
   a social network; email/newsletter → email; social → organic social;
   organic → organic search; referral/affiliate → referral.
3. referrer host: a search engine → organic search (with the engine), a social network →
   organic social, a webmail host → email, the site itself → internal (not a new visit's
   channel), anything else → referral.
4. nothing → direct.

SEO-led marketing depends on organic search being told apart from paid search: a Google
referrer without a click id or paid medium is organic.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

SEARCH_ENGINES = {
    "google": "google",
    "bing": "bing",
    "duckduckgo": "duckduckgo",
    "yahoo": "yahoo",
    "baidu": "baidu",
    "yandex": "yandex",
    "ecosia": "ecosia",
    "naver": "naver",
    "seznam": "seznam",
    "qwant": "qwant",
    "startpage": "startpage",
    "brave": "brave",
}
SOCIAL_NETWORKS = {
    "facebook.com": "facebook",
    "fb.com": "facebook",
    "instagram.com": "instagram",
    "t.co": "x",
    "twitter.com": "x",
    "x.com": "x",
    "linkedin.com": "linkedin",
    "lnkd.in": "linkedin",
    "reddit.com": "reddit",
    "youtube.com": "youtube",
    "pinterest.com": "pinterest",
    "tiktok.com": "tiktok",
    "threads.net": "threads",
    "line.me": "line",
    "ptt.cc": "ptt",
    "dcard.tw": "dcard",
    "weibo.com": "weibo",
}
WEBMAIL = ("mail.google.com", "outlook.live.com", "outlook.office.com", "mail.yahoo.com")
PAID_MEDIA = {
    "cpc",
    "ppc",
    "paid",
    "paidsearch",
    "paid_search",
    "paid-search",
    "cpm",
    "paid_social",
    "paidsocial",
    "paid-social",
    "display",
    "cpv",
    "ads",
}
EMAIL_MEDIA = {"email", "e-mail", "newsletter", "mail"}
SOCIAL_MEDIA = {"social", "social-network", "social-media", "sm", "organic_social"}
CLICK_IDS = {
    "gclid": ("paid_search", "google"),
    "dclid": ("paid_search", "google"),
    "wbraid": ("paid_search", "google"),
    "gbraid": ("paid_search", "google"),
    "msclkid": ("paid_search", "bing"),
    "fbclid": ("social", "facebook"),
    "li_fat_id": ("social", "linkedin"),
    "ttclid": ("social", "tiktok"),
    "twclid": ("social", "x"),
}


@dataclass(frozen=True)
class TrafficSource:
    channel: str
    engine: str | None = None  # search engine or social network
    referrer_host: str | None = None
    click_id: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _host(url: Any) -> str | None:
    if not isinstance(url, str) or not url:
        return None
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname
    except ValueError:
        return None
    return host.lower().removeprefix("www.").removeprefix("m.") if host else None


def _query(page: dict[str, Any]) -> dict[str, str]:
    raw = page.get("search") if isinstance(page.get("search"), str) else None
    if raw is None and isinstance(page.get("url"), str):
        try:
            raw = urlsplit(page["url"]).query
        except ValueError:
            raw = ""
    return {k: v[0] for k, v in parse_qs((raw or "").lstrip("?")).items() if v}


def _engine(host: str) -> str | None:
    labels = host.split(".")
    for label in labels[:-1] or labels:
        if label in SEARCH_ENGINES:
            return SEARCH_ENGINES[label]
    return None


def _social(host: str) -> str | None:
    for domain, name in SOCIAL_NETWORKS.items():
        if host == domain or host.endswith("." + domain):
            return name
    return None


_PAGE_KEYS = ("referrer", "url", "search")
_CAMPAIGN_KEYS = ("source", "medium", "name")


def classify(context: dict[str, Any]) -> TrafficSource:
    """The traffic source of an event's context. Memoised on the few strings it reads:
    one visit's events repeat them, and intake classifies every event."""
    raw_page, raw_campaign = context.get("page"), context.get("campaign")
    page: dict[str, Any] = raw_page if isinstance(raw_page, dict) else {}
    campaign: dict[str, Any] = raw_campaign if isinstance(raw_campaign, dict) else {}
    key = tuple(page.get(k) for k in _PAGE_KEYS) + tuple(campaign.get(k) for k in _CAMPAIGN_KEYS)
    if all(v is None or isinstance(v, str) for v in key):
        return _classify_cached(key)
    return _classify(page, campaign)


@functools.lru_cache(maxsize=4096)
def _classify_cached(key: tuple[str | None, ...]) -> TrafficSource:
    page = {k: v for k, v in zip(_PAGE_KEYS, key[:3], strict=True) if v is not None}
    campaign = {k: v for k, v in zip(_CAMPAIGN_KEYS, key[3:], strict=True) if v is not None}
    return _classify(page, campaign)


def _classify(page: dict[str, Any], campaign: dict[str, Any]) -> TrafficSource:
    query = _query(page)
    utm_source = str(campaign.get("source") or query.get("utm_source") or "").lower() or None
    medium = str(campaign.get("medium") or query.get("utm_medium") or "").lower() or None
    utm_campaign = campaign.get("name") or query.get("utm_campaign")
    referrer = _host(page.get("referrer"))
    own_host = _host(page.get("url"))
    common = {
        "referrer_host": referrer,
        "utm_source": utm_source,
        "utm_medium": medium,
        "utm_campaign": utm_campaign if isinstance(utm_campaign, str) else None,
    }
    paid = medium in PAID_MEDIA

    for click_id, (kind, network) in CLICK_IDS.items():
        if click_id in query:
            if kind == "social":
                kind = "paid_social" if paid else "organic_social"
            return TrafficSource(kind, network, click_id=click_id, **common)

    if medium:
        source_social = _social(utm_source or "") or (
            utm_source if utm_source in SOCIAL_NETWORKS.values() else None
        )
        if paid:
            if source_social:
                return TrafficSource("paid_social", source_social, **common)
            return TrafficSource("paid_search", _engine(utm_source or "") or utm_source, **common)
        if medium in EMAIL_MEDIA:
            return TrafficSource("email", **common)
        if medium in SOCIAL_MEDIA:
            return TrafficSource("organic_social", source_social or utm_source, **common)
        if medium == "organic":
            return TrafficSource(
                "organic_search", _engine(utm_source or "") or utm_source, **common
            )
        if medium in {"referral", "affiliate"}:
            return TrafficSource("referral", **common)

    if referrer:
        if own_host and (referrer == own_host or referrer.endswith("." + own_host)):
            return TrafficSource("internal", **common)
        if referrer.startswith(WEBMAIL) or referrer in WEBMAIL:
            return TrafficSource("email", **common)
        engine = _engine(referrer)
        if engine:
            return TrafficSource("organic_search", engine, **common)
        social = _social(referrer)
        if social:
            return TrafficSource("organic_social", social, **common)
        return TrafficSource("referral", **common)
    if utm_source:
        return TrafficSource("referral", **common)
    return TrafficSource("direct", **common)
