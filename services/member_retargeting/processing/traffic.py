"""What traffic tells member-retargeting: orders (lifetime value, membership), what people
did (behaviours, for segments and product affinity), their consent decisions and where
they came from (their funnel journey, :mod:`.journeys`). A
handler of the traffic topic (an event and a session in, events out).

Everything is kept by the identifier it arrived with — the user id when there is one,
else the anonymous id — since traffic often comes before the lead events that name its
person. An order refreshes the member it belongs to when that person is known already.

Consent managers repeat their state on every call: a repeat is not a new decision. A
consent row is added only when the identifier's decision for the purpose changes; a run
of the same decision keeps two rows, its first statement and its latest (moved forward
by each repeat), so the table grows with decisions, not with traffic — and the latest
grant and latest denial that consent is decided by stay exactly as if every repeat were
stored.

An ``Order Completed`` whose amount is not a number an order can hold (not a number,
not finite, beyond ±999,999,999,999.99) loses only the order: the consent it carries and
what it says the person did are kept, the order is not stored and a warning names the
event (it stays on the traffic topic, to be replayed once fixed). A dead letter would
have rolled back the consent decision with it — and a withdrawal must never be lost.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.member_retargeting.model.tiers import TierRules
from services.member_retargeting.models import Behaviour, Consent, Contact, ContactIdentity, Order
from services.member_retargeting.people.members import refresh
from services.member_retargeting.processing import journeys
from shared.consent import decisions
from shared.db import utcnow
from shared.events import ORDER_COMPLETED, Envelope
from shared.identity import ANONYMOUS_ID, USER_ID
from shared.limits import MAX_MONEY, money, truncate
from shared.outbox import Outgoing
from shared.provenance import from_browser

log = logging.getLogger(__name__)
MAX_PRODUCTS = 50


def handle_traffic(event: Envelope, session: Session, tiers: TierRules) -> list[Outgoing]:
    key = (USER_ID, event.user_id) if event.user_id else (ANONYMOUS_ID, event.anonymous_id or "")
    traits = event.payload.get("traits") if event.type == "identify" else None
    _record_consent(session, key, event, decisions(event.context, traits))
    journeys.on_traffic(session, event)
    if event.type != "track":
        return []
    # Applied before (the runner skips redeliveries by id; this holds even when those ids
    # are gone, e.g. pruned before a replay from the topic's start): nothing more to add.
    if session.scalar(select(Behaviour.id).where(Behaviour.event_id == event.event_id).limit(1)):
        return []
    name = event.payload["event"]
    properties = event.payload.get("properties") or {}
    for product in _products(properties) or [{}]:
        session.add(
            Behaviour(
                kind=key[0],
                value=key[1],
                event=name,
                product_id=_text(product.get("product_id") or product.get("sku")),
                product_name=_text(product.get("name")),
                category=_text(product.get("category")),
                at=event.effective_at,
                event_id=event.event_id,
            )
        )
    if name != ORDER_COMPLETED or from_browser(event.context):
        # A purchase counts for membership and revenue only from a server source: a
        # browser's public key could make anyone a member (shared.provenance).
        return []
    revenue = _revenue(properties)
    if revenue is None:
        log.warning(
            "event %s: order amount %.40r is not a number within ±%s; the order is not "
            "stored (its consent and behaviours are)",
            event.event_id,
            properties.get("revenue", properties.get("total")),
            MAX_MONEY,
        )
        return []
    currency = properties.get("currency")
    session.add(
        Order(
            event_id=event.event_id,
            user_id=event.user_id,
            anonymous_id=event.anonymous_id,
            revenue=revenue,
            currency=currency[:3].upper() if isinstance(currency, str) and currency else None,
            occurred_at=event.effective_at,
            source=event.source,
        )
    )
    session.flush()
    owner = session.scalar(
        select(ContactIdentity.lead_id).where(
            ContactIdentity.kind == key[0], ContactIdentity.value == key[1]
        )
    )
    contact = session.get(Contact, owner) if owner else None
    if contact is None or contact.merged_into:
        return []  # not known yet: the lead event that names them will count it
    return refresh(session, contact, tiers, utcnow())


def _products(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """The products an e-commerce event names: ``products`` (orders, checkouts, carts),
    else the event's own product fields (viewed, added, removed)."""
    products = properties.get("products")
    if isinstance(products, list):
        return [p for p in products[:MAX_PRODUCTS] if isinstance(p, dict)]
    if any(k in properties for k in ("product_id", "sku", "category")):
        return [properties]
    return []


def _text(value: Any) -> str | None:
    """A product's id, name or category as stored: text (numbers written out), cleaned of
    what no column can hold (NUL, lone surrogates), at most 200 characters."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    return truncate(value.strip(), 200) or None if isinstance(value, str) else None


def _revenue(properties: dict[str, Any]) -> Decimal | None:
    """The order's amount (none stated: 0), or None when it is not one an order holds."""
    value = properties.get("revenue", properties.get("total"))
    if value is None:
        return Decimal(0)
    return money(value)


def _record_consent(
    session: Session, key: tuple[str, str], event: Envelope, stated: dict[str, bool]
) -> None:
    """Keep the identifier's decisions, a row per change: a decision repeating the
    identifier's latest one for the purpose moves the last row of that run forward (its
    time and event) once the run has two rows (its first statement stays); one no newer
    than a kept decision of the same value is dropped. Consent is read from each
    identifier's latest grant and latest denial (:func:`..people.policy.consented`): those
    stay exactly what storing every decision would give, out-of-order events and ties
    included."""
    if not stated:
        return
    newest = {
        (purpose, granted): _aware(at)
        for purpose, granted, at in session.execute(
            select(Consent.purpose, Consent.granted, func.max(Consent.at))
            .where(
                Consent.kind == key[0],
                Consent.value == key[1],
                Consent.purpose.in_(list(stated)),
            )
            .group_by(Consent.purpose, Consent.granted)
        )
    }
    at = event.effective_at
    for purpose, granted in stated.items():
        same = newest.get((purpose, granted))
        if same is not None and at <= same:
            continue  # a decision like it, as new or newer, is kept already
        last_two = session.scalars(
            select(Consent)
            .where(Consent.kind == key[0], Consent.value == key[1], Consent.purpose == purpose)
            .order_by(Consent.at.desc(), Consent.id.desc())
            .limit(2)
        ).all()
        if len(last_two) == 2 and all(row.granted is granted for row in last_two):
            tail = last_two[0]  # the run's last row: its first one (before it) stays
            tail.at, tail.event_id, tail.source = at, event.event_id, event.source
            continue
        session.add(
            Consent(
                kind=key[0],
                value=key[1],
                purpose=purpose,
                granted=granted,
                at=at,
                event_id=event.event_id,
                source=event.source,
            )
        )


def _aware(value: Any) -> datetime:
    """An aggregate's time (SQLite returns it without the column's type or zone)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
