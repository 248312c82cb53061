"""What traffic tells member-retargeting: orders (lifetime value, membership), what people
did (behaviours, for segments and product affinity) and their consent decisions. A
handler of the traffic topic (an event and a session in, events out).

Everything is kept by the identifier it arrived with — the user id when there is one,
else the anonymous id — since traffic often comes before the lead events that name its
person. An order refreshes the member it belongs to when that person is known already.
An amount beyond what an order can hold is refused (a dead letter), not stored.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.member_retargeting.model.tiers import TierRules
from services.member_retargeting.models import Behaviour, Consent, Contact, ContactIdentity, Order
from services.member_retargeting.people.members import refresh
from shared.consent import decisions
from shared.db import utcnow
from shared.events import ORDER_COMPLETED, Envelope, InvalidEvent
from shared.identity import ANONYMOUS_ID, USER_ID
from shared.limits import MAX_MONEY, money, truncate
from shared.outbox import Outgoing

MAX_PRODUCTS = 50


def handle_traffic(event: Envelope, session: Session, tiers: TierRules) -> list[Outgoing]:
    key = (USER_ID, event.user_id) if event.user_id else (ANONYMOUS_ID, event.anonymous_id or "")
    traits = event.payload.get("traits") if event.type == "identify" else None
    for purpose, granted in decisions(event.context, traits).items():
        session.add(
            Consent(
                kind=key[0],
                value=key[1],
                purpose=purpose,
                granted=granted,
                at=event.effective_at,
                event_id=event.event_id,
                source=event.source,
            )
        )
    if event.type != "track":
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
    if name != ORDER_COMPLETED:
        return []
    currency = properties.get("currency")
    session.add(
        Order(
            event_id=event.event_id,
            user_id=event.user_id,
            anonymous_id=event.anonymous_id,
            revenue=_revenue(properties),
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


def _revenue(properties: dict[str, Any]) -> Decimal:
    value = properties.get("revenue", properties.get("total"))
    if value is None:
        return Decimal(0)
    amount = money(value)
    if amount is None:
        raise InvalidEvent(f"order amount {str(value)[:40]!r} is not a number within ±{MAX_MONEY}")
    return amount
