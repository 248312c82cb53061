from __future__ import annotations

import pytest

from services.traffic_intake.channels import classify


def ctx(
    referrer: str | None = None,
    url: str = "https://shop.example.com/p",
    campaign: dict | None = None,
    search: str | None = None,
) -> dict:
    page: dict = {"url": url}
    if referrer is not None:
        page["referrer"] = referrer
    if search is not None:
        page["search"] = search
    return {"page": page, **({"campaign": campaign} if campaign else {})}


@pytest.mark.parametrize(
    ("context", "channel", "engine"),
    [
        (ctx("https://www.google.com/"), "organic_search", "google"),
        (ctx("https://www.google.com.tw/search?q=crm"), "organic_search", "google"),
        (ctx("https://duckduckgo.com/"), "organic_search", "duckduckgo"),
        (ctx("https://www.bing.com/"), "organic_search", "bing"),
        (
            ctx("https://www.google.com/", url="https://shop.example.com/?gclid=abc"),
            "paid_search",
            "google",
        ),
        (ctx(None, search="?msclkid=x"), "paid_search", "bing"),
        (ctx("https://l.facebook.com/", search="?fbclid=1"), "organic_social", "facebook"),
        (
            ctx(None, search="?fbclid=1&utm_medium=paid_social&utm_source=facebook"),
            "paid_social",
            "facebook",
        ),
        (ctx(None, campaign={"source": "linkedin", "medium": "cpc"}), "paid_social", "linkedin"),
        (ctx(None, campaign={"source": "google", "medium": "cpc"}), "paid_search", "google"),
        (ctx("https://t.co/xyz"), "organic_social", "x"),
        (ctx("https://www.linkedin.com/feed"), "organic_social", "linkedin"),
        (ctx(None, campaign={"source": "newsletter", "medium": "email"}), "email", None),
        (ctx("https://mail.google.com/mail/u/0"), "email", None),
        (ctx("https://news.ycombinator.com/item"), "referral", None),
        (ctx("https://shop.example.com/cart"), "internal", None),
        (ctx(None), "direct", None),
        ({}, "direct", None),
        ({"page": "garbage", "campaign": 3}, "direct", None),
        (ctx("not a url at all"), "referral", None),
    ],
)
def test_classification(context: dict, channel: str, engine: str | None) -> None:
    source = classify(context)
    assert (source.channel, source.engine) == (channel, engine)


def test_organic_search_keeps_the_details_for_reports() -> None:
    source = classify(ctx("https://www.google.com/", campaign={"name": "spring"}))
    assert source.as_dict() == {
        "channel": "organic_search",
        "engine": "google",
        "referrer_host": "google.com",
        "utm_campaign": "spring",
    }
