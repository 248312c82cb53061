"""Product affinity: what each person wants, from the e-commerce events they sent —
viewed (1), added to the cart (3), bought (5), over the last ``days`` — per product and
per category, strongest first. One grouped query for any number of people."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from services.member_retargeting.models import Behaviour, ContactIdentity
from shared.events import ORDER_COMPLETED

WEIGHTS = {"Product Viewed": 1, "Product Added": 3, ORDER_COMPLETED: 5}


@dataclass(frozen=True)
class Affinity:
    products: list[tuple[str, int]]  # (product name or id, weight), strongest first
    categories: list[tuple[str, int]]

    @property
    def top_product(self) -> str | None:
        return self.products[0][0] if self.products else None


def affinities(
    session: Session, contact_ids: Sequence[str], now: datetime, days: int = 90, top: int = 5
) -> dict[str, Affinity]:
    """Each contact's affinity (contacts with no e-commerce events are left out)."""
    if not contact_ids:
        return {}
    weight = case(*((Behaviour.event == name, w) for name, w in WEIGHTS.items()), else_=0)
    product = func.coalesce(Behaviour.product_name, Behaviour.product_id)
    rows = session.execute(
        select(
            ContactIdentity.lead_id,
            product.label("product"),
            Behaviour.category,
            func.sum(weight).label("weight"),
        )
        .join(
            ContactIdentity,
            and_(ContactIdentity.kind == Behaviour.kind, ContactIdentity.value == Behaviour.value),
        )
        .where(
            ContactIdentity.lead_id.in_(list(contact_ids)),
            Behaviour.event.in_(list(WEIGHTS)),
            Behaviour.at >= now - timedelta(days=days),
        )
        .group_by(ContactIdentity.lead_id, product, Behaviour.category)
    ).all()
    products: dict[str, dict[str, int]] = {}
    categories: dict[str, dict[str, int]] = {}
    for contact_id, name, category, w in rows:
        if name:
            bucket = products.setdefault(contact_id, {})
            bucket[name] = bucket.get(name, 0) + int(w)
        if category:
            bucket = categories.setdefault(contact_id, {})
            bucket[category] = bucket.get(category, 0) + int(w)

    def ranked(counts: dict[str, int]) -> list[tuple[str, int]]:
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]

    return {
        contact_id: Affinity(
            ranked(products.get(contact_id, {})), ranked(categories.get(contact_id, {}))
        )
        for contact_id in set(products) | set(categories)
    }
