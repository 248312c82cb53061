"""Signed webhooks: the adapter for webhook campaigns and for SMS and WhatsApp providers.

Each dispatch is one JSON POST. Its headers, as Stripe and Segment sign theirs:

* ``Funnel-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with the
  shared webhook secret — a receiver recomputes it over the raw body (:func:`verify`),
  and refuses old timestamps (replays);
* ``Idempotency-Key: <dispatch id>`` — the same on every retry of a dispatch, so a
  receiver that already handled it answers 2xx and does nothing (retries are certain:
  a timeout does not say whether the receiver acted).

:func:`post` makes one attempt and says what it means (:class:`Outcome`): a 2xx is
delivered; a redirect is never followed (a POST turned into a GET elsewhere would count
as delivered); 408, 409, 425, 429, 5xx, a timeout, a refused connection, a redirect, and
401, 403, 404, 405, 410 (a moved endpoint or a rotated secret: every dispatch would get
it) are the receiver's trouble, retried with the channel slowed down; any other 4xx is
the receiver refusing this one dispatch for good.

A 2xx says the receiver took the dispatch (``sent``); an SMS or WhatsApp bridge reports
what became of it afterwards by posting the provider's receipts back, signed the same
way (:mod:`.receipts`).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

SIGNATURE_HEADER = "Funnel-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TOLERANCE_SECONDS = 300
MAX_TIMESTAMP_DIGITS = 12
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
RECEIVER_STATUS = frozenset({401, 403, 404, 405, 410})


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx comes back as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirects)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds of
    ``now``. For receivers (and the tests). Never raises."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        if len(parts["t"]) > MAX_TIMESTAMP_DIGITS:  # a float could not take it (overflow)
            return False
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(given.encode(), expected.encode())


def body_of(dispatch_id: str, payload: dict[str, Any]) -> bytes:
    """What the receiver gets: the dispatch id and what the dispatch says (its channel,
    the person's contact id and address, the rendered message)."""
    document = {
        "id": dispatch_id,
        "channel": payload.get("channel"),
        "campaign_id": payload.get("campaign_id"),
        "run_id": payload.get("run_id"),
        "contact_id": payload.get("contact_id"),
        "email": payload.get("email"),
        "phone": payload.get("phone"),
        "message": payload.get("message") or {},
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Outcome:
    """``delivered``; else ``retry`` says whether another attempt may succeed."""

    delivered: bool
    retry: bool = False
    detail: str = ""
    # The receiver as a whole failed (not this one dispatch): slow the channel down.
    provider_failure: bool = False


def post(url: str, secret: str, dispatch_id: str, body: bytes, *, timeout: float = 10.0) -> Outcome:
    """One signed POST of ``body``. Never raises for what the receiver or the network
    does."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Funnel-Dispatcher/1",
            SIGNATURE_HEADER: signature(secret, int(time.time()), body),
            IDEMPOTENCY_HEADER: dispatch_id,
        },
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # Refused, reset, timed out, a bad URL, or not HTTP at all.
        detail = f"{type(exc).__name__}: {exc}"[:500]
        return Outcome(False, retry=True, detail=detail, provider_failure=True)
    if 200 <= status < 300:
        return Outcome(True, detail=str(status))
    if status >= 500 or 300 <= status < 400 or status in RECEIVER_STATUS:
        return Outcome(False, retry=True, detail=f"HTTP {status}", provider_failure=True)
    return Outcome(False, retry=status in RETRYABLE_STATUS, detail=f"HTTP {status}")
