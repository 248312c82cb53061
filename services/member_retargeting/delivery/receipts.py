"""Receipts from SMS and WhatsApp providers: what became of a message after the provider
took it (the dispatcher's ``sent``).

The provider bridge — the receiver of the signed webhooks (:mod:`.webhook`), which hands
each message to Twilio, MessageBird or a WhatsApp Business API — POSTs each receipt back
to ``POST /delivery/receipts`` (:mod:`..web.receipts`), signed the way Funnel signs its
webhooks, with the same secret (``Funnel-Signature`` over the raw body,
``RETARGETING_WEBHOOK_SECRET``). Its body names the dispatch by the id the webhook
carried and gives the provider's status, in the words most providers share (Twilio's
``MessageStatus``):

=================================  ==================================================
``delivered``                      ``delivered``
``undelivered``, ``failed``        ``failed``, with the provider's error code only
``read`` (WhatsApp)                ``opened`` — only for a WhatsApp dispatch whose
                                   person allowed tracking (``tracking`` in its
                                   payload), as for the e-mail open pixel
``accepted``, ``queued``,          nothing: the dispatcher reported ``sent`` already
``sending``, ``sent``
=================================  ==================================================

A receipt is taken only for a dispatch the dispatcher has recorded as ``sent``. One it
is still sending (the bridge answered, the answer is not recorded yet) or will retry
(the answer timed out) gets a 409, and the bridge retries later: a receipt never lands
before the ``sent`` it follows. One that ended otherwise (failed, bounced, suppressed)
takes nothing — a given-up dispatch is never also delivered — and the bridge is told
so (200, nothing recorded), not to retry. Receipts come for SMS, WhatsApp and webhook
dispatches (a webhook receiver may be any provider's bridge); e-mail bounces come back
by mail.

Times are when Funnel heard (a provider's clock does not order our events). The event id
is derived from the dispatch and the receipt's status: a bridge retrying a receipt adds
nothing.
"""

from __future__ import annotations

from datetime import datetime

from services.member_retargeting.delivery.status import (
    DELIVERED,
    FAILED,
    OPENED,
    SENT,
    delivery_status,
    dispatch_payload,
)
from services.member_retargeting.models import Delivery
from shared.outbox import Outgoing

RECEIPT_STATUSES: dict[str, str | None] = {
    "delivered": DELIVERED,
    "undelivered": FAILED,
    "failed": FAILED,
    "read": OPENED,
    "accepted": None,
    "queued": None,
    "sending": None,
    "sent": None,
}
# The channels whose dispatches go through the provider bridge (the e-mail channel's go
# to the SMTP server, which sends no receipts here: bounces come back by mail).
RECEIPT_CHANNELS = ("sms", "whatsapp", "webhook")
# The dispatcher's statuses before it records the send (queue.py, dispatcher.py).
NOT_YET = frozenset({"queued", "sending"})


class NotReceiptable(ValueError):
    """The dispatch takes no receipt (yet): not sent through the bridge (its channel), or
    not recorded as sent (its delivery status)."""


def receipt_event(
    delivery: Delivery, status: str, code: str | None, at: datetime
) -> Outgoing | None:
    """The ``delivery.status`` a receipt of ``status`` for ``delivery`` makes, or None when
    it says nothing new (a status before delivery, a read the person did not allow to be
    tracked, a dispatch that ended without being sent). Raises :class:`NotReceiptable`
    for a dispatch of a channel without receipts or not sent yet (queued, sending), and
    ``KeyError`` for a status outside :data:`RECEIPT_STATUSES` (the HTTP schema refuses
    those first)."""
    if delivery.channel not in RECEIPT_CHANNELS:
        raise NotReceiptable(f"dispatch {delivery.dispatch_id} went by {delivery.channel}")
    if delivery.status in NOT_YET:
        raise NotReceiptable(
            f"dispatch {delivery.dispatch_id} is {delivery.status}, not sent: retry later"
        )
    if delivery.status != SENT:
        return None  # it ended otherwise: nothing to add, nothing to retry
    ours = RECEIPT_STATUSES[status]
    tracked = delivery.channel == "whatsapp" and bool(delivery.payload.get("tracking"))
    if ours is None or (ours == OPENED and not tracked):
        return None
    detail = f"receipt {status}" + (f" {code}" if code else "")
    return delivery_status(
        delivery.dispatch_id,
        dispatch_payload(delivery),
        ours,
        at,
        detail=detail,
        occurrence=f"receipt:{status}",
    )
