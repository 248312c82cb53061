"""``POST /delivery/receipts``: SMS and WhatsApp providers' receipts, from the provider
bridge (:mod:`..delivery.receipts` says what each becomes).

No bearer token: the request is authorised by its ``Funnel-Signature`` header, the HMAC
of the raw body with ``RETARGETING_WEBHOOK_SECRET`` and a timestamp within five minutes
(:func:`..delivery.webhook.verify`), checked before the body is read. A missing or wrong
signature is a failed attempt against the caller's address, as an unknown token is.
Without a webhook secret configured there is nothing to check a signature with: 403.
"""

from __future__ import annotations

import functools
from typing import Any

from flask import request
from flask.views import MethodView

from services.member_retargeting.delivery.receipts import NotReceiptable, receipt_event
from services.member_retargeting.delivery.webhook import SIGNATURE_HEADER, verify
from services.member_retargeting.models import Delivery, outbox
from services.member_retargeting.state import state
from services.member_retargeting.web.schemas import ReceiptIn, ReceiptOut
from shared.db import utcnow
from shared.http import Blueprint, fail, note_failed_attempt, or_404, refuse_if_throttled
from shared.metrics import RECEIPTS
from shared.outbox import enqueue

blp = Blueprint("receipts", __name__, description="Delivery receipts from SMS/WhatsApp providers")
SIGNED = "funnelSignature"
"""The OpenAPI security scheme of signed requests (registered by ``create_app``)."""


def signed_by_the_bridge(view: Any) -> Any:
    """Allow the view only to requests signed with the webhook secret: 403 when none is
    configured, 401 for a missing, wrong or stale signature (counted against the
    caller's address; past the limit, 429)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        secret = state().config.delivery.webhook_secret
        if not secret:
            fail(403, "receipts need RETARGETING_WEBHOOK_SECRET, the secret that signs them")
        refuse_if_throttled()
        header = request.headers.get(SIGNATURE_HEADER, "")
        if not verify(secret, header, request.get_data(cache=True)):
            note_failed_attempt()
            fail(401, f"missing, wrong or stale {SIGNATURE_HEADER} header")
        return view(*args, **kwargs)

    return Blueprint.doc(security=[{SIGNED: []}])(wrapper)


@blp.route("/delivery/receipts")
class ReceiptsView(MethodView):
    @signed_by_the_bridge
    @blp.arguments(ReceiptIn)
    @blp.response(200, ReceiptOut)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Record what an SMS or WhatsApp provider says became of a dispatch. 404 for a
        dispatch this service does not hold (never sent, erased, or pruned past the
        delivery retention); 409 for one sent by e-mail, or not recorded as sent yet
        (retry later); ``recorded: null`` when it adds nothing (and is not to be retried)."""
        with state().sessions.begin() as session:
            delivery = or_404(session.get(Delivery, data["id"]), f"no dispatch {data['id']}")
            try:
                event = receipt_event(delivery, data["status"], data["code"], utcnow())
            except NotReceiptable as exc:
                RECEIPTS.labels(delivery.channel, data["status"], "refused").inc()
                fail(409, str(exc), errors={"id": [str(exc)]})
            if event is not None:
                enqueue(session, outbox, [event])
        recorded = event.envelope.payload["status"] if event is not None else None
        RECEIPTS.labels(delivery.channel, data["status"], recorded or "nothing").inc()
        return {"dispatch_id": data["id"], "recorded": recorded}
