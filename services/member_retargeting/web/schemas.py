"""HTTP schemas of the marketing API (separate from event schemas and ORM models).

Every text that may reach the database or a log is checked where it enters: names, keys
and short texts with :class:`shared.fields.Name` (no control characters or lone
surrogates), longer free texts (message templates, descriptions, reasons) with
:class:`FreeText` (line breaks allowed; no NUL, no lone surrogates) — neither PostgreSQL
nor UTF-8 can hold those, so they would otherwise end as a 500.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from services.member_retargeting.delivery.receipts import RECEIPT_STATUSES
from services.member_retargeting.model.segments import (
    ROOT,
    SegmentError,
    is_legacy,
    legacy,
    parse,
)
from services.member_retargeting.model.templates import check
from shared.fields import MoneyOut, Name, Timestamp
from shared.limits import MAX_EMAIL_LENGTH, MAX_INTEGER, MAX_REASON_LENGTH, clean_text

CHANNELS = ("email", "sms", "whatsapp", "webhook", "ads")
KINDS = ("marketing", "transactional")
PLATFORMS = ("meta", "google")


# A client's idempotency key is kept under a namespace ("api:<key>", "page:<key>") in a
# column of 200 characters.
MAX_KEY_LENGTH = 190


class FreeText(fields.String):
    """A text a person wrote (a template, a description, a reason): ``min_length`` to
    ``max_length`` characters, line breaks allowed, never NUL or a lone surrogate."""

    def __init__(self, *, max_length: int, min_length: int = 0, **kwargs: Any) -> None:
        super().__init__(validate=validate.Length(min=min_length, max=max_length), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if clean_text(text) != text:
            raise ma.ValidationError("must not contain NUL or lone surrogates")
        return text


class SegmentRuleField(fields.Raw):
    """A segment rule in the rule language (or the first, three-field form), validated
    with every bad part named by its path."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        rule = legacy(value) if is_legacy(value) or value == {} else value
        try:
            parse(rule)
        except SegmentError as exc:
            problems = dict(exc.problems)
            whole = problems.pop(ROOT, None)  # the rule itself is wrong: name the field
            raise ma.ValidationError(whole if whole and not problems else problems) from exc
        return rule


class Message(ma.Schema):
    """What to send: a template (subject, body) with the person's fields; for ``ads`` the
    platform to export to."""

    class Meta:
        unknown = ma.RAISE

    subject = FreeText(min_length=1, max_length=300)
    body = FreeText(min_length=1, max_length=20_000)
    platform = fields.String(validate=validate.OneOf(PLATFORMS))
    url = Name(max_length=2000, metadata={"description": "webhook"})

    @ma.validates_schema
    def _templates(self, data: dict[str, Any], **_: Any) -> None:
        for name in ("subject", "body"):
            if name in data and (problem := check(data[name])):
                raise ma.ValidationError(f"template: {problem}", name)


class TriggerRule(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    event = Name(required=True, max_length=200)
    delay_hours = fields.Float(load_default=0, validate=validate.Range(min=0, max=24 * 30))
    unless = Name(load_default=None, allow_none=True, max_length=200)


class CampaignIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    name = Name(required=True, max_length=200)
    segment = SegmentRuleField(load_default=None, metadata={"description": "a segment rule"})
    segment_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=MAX_INTEGER))
    channel = fields.String(load_default="email", validate=validate.OneOf(CHANNELS))
    kind = fields.String(load_default="marketing", validate=validate.OneOf(KINDS))
    message = fields.Nested(Message, required=True)
    schedule_at = Timestamp(load_default=None, allow_none=True)
    trigger = fields.Nested(TriggerRule, load_default=None, allow_none=True)
    attribution_days = fields.Integer(load_default=7, validate=validate.Range(min=1, max=90))

    @ma.validates_schema
    def _whole(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("segment") is None) == (data.get("segment_id") is None):
            raise ma.ValidationError("give a segment rule or a segment_id", "segment")
        message = data.get("message") or {}
        if data.get("channel") == "ads":
            if "platform" not in message:
                raise ma.ValidationError("an ads campaign names its platform", "message.platform")
        elif not {"subject", "body"} <= set(message):
            raise ma.ValidationError("a message needs a subject and a body", "message")
        if data.get("schedule_at") and data.get("trigger"):
            raise ma.ValidationError("a schedule or an event trigger, not both", "trigger")


class RunOut(ma.Schema):
    run_id = fields.Integer()
    trigger = fields.String()
    status = fields.String(metadata={"description": "pending, running, done or failed"})
    error = fields.String(allow_none=True, metadata={"description": "why it failed"})
    audience_size = fields.Integer()
    processed = fields.Integer()
    progress = fields.Float(metadata={"description": "0..1"})
    triggered_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)


class DeliveryOut(ma.Schema):
    sent = fields.Integer(metadata={"description": "handed to the mail server or receiver"})
    delivered = fields.Integer(
        metadata={"description": "on the phone, by an SMS or WhatsApp provider's receipt"}
    )
    failed = fields.Integer(metadata={"description": "given up after retries, or refused"})
    bounced = fields.Integer(metadata={"description": "no such mailbox (then suppressed)"})
    suppressed = fields.Integer(metadata={"description": "suppressed before it was sent"})
    pending = fields.Integer(metadata={"description": "dispatched, no delivery status yet"})
    opened = fields.Integer(metadata={"description": "people who allowed tracking only"})
    clicked = fields.Integer(metadata={"description": "people who allowed tracking only"})
    unsubscribed = fields.Integer()


class ReceiptIn(ma.Schema):
    """A provider's receipt for one SMS or WhatsApp dispatch (:mod:`..delivery.receipts`)."""

    class Meta:
        unknown = ma.RAISE

    id = fields.String(
        required=True,
        validate=validate.Length(min=1, max=128),
        metadata={"description": "the dispatch id: the id the webhook carried"},
    )
    status = fields.String(required=True, validate=validate.OneOf(sorted(RECEIPT_STATUSES)))
    code = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,32}\Z"),
        metadata={"description": "the provider's error code (a code: never its text)"},
    )


class ReceiptOut(ma.Schema):
    dispatch_id = fields.String()
    recorded = fields.String(
        allow_none=True,
        metadata={"description": "the delivery status it became; null: nothing new"},
    )


class ReportOut(ma.Schema):
    audience_size = fields.Integer(metadata={"description": "of the latest run"})
    dispatched_count = fields.Integer(metadata={"description": "sent, all runs"})
    published_count = fields.Integer(metadata={"description": "acked by Kafka"})
    skipped_count = fields.Integer()
    skipped = fields.Dict(keys=fields.String(), values=fields.Integer())
    conversions = fields.Integer(metadata={"description": "people who bought in the window"})
    revenue = MoneyOut()
    attribution_days = fields.Integer()
    delivery = fields.Nested(
        DeliveryOut, metadata={"description": "what the dispatcher and recipients reported"}
    )


class CampaignOut(ReportOut):
    id = fields.Integer(dump_only=True)
    name = fields.String()
    segment = fields.Dict()
    channel = fields.String()
    kind = fields.String()
    message = fields.Dict()
    schedule_at = fields.DateTime(allow_none=True)
    trigger = fields.Dict(allow_none=True)
    created_at = fields.DateTime()
    current_audience = fields.Integer(
        allow_none=True,
        metadata={"description": "who the segment matches now (null: the rule is broken)"},
    )
    runs = fields.List(
        fields.Nested(RunOut),
        metadata={"description": "the newest 50 runs, oldest of them first"},
    )


class CampaignList(ma.Schema):
    items = fields.List(fields.Nested(CampaignOut))


class TriggerOut(ma.Schema):
    campaign_id = fields.Integer()
    run_id = fields.Integer()
    audience_size = fields.Integer()
    status = fields.String()
    created = fields.Boolean(metadata={"description": "false: this key started it before"})


class RunIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    idempotency_key = Name(
        required=True,
        max_length=MAX_KEY_LENGTH,
        metadata={"description": "required: one run per key (a retry with it starts nothing new)"},
    )


class SegmentIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    name = Name(required=True, max_length=200)
    rule = SegmentRuleField(required=True)
    description = FreeText(load_default=None, max_length=500)


class PreviewIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    rule = SegmentRuleField(required=True)


class PersonOut(ma.Schema):
    contact_id = fields.String()
    email = fields.String(allow_none=True)
    stage = fields.String()
    is_member = fields.Boolean()
    tier = fields.String(allow_none=True)
    rfm_group = fields.String(allow_none=True)


class PreviewOut(ma.Schema):
    count = fields.Integer()
    sample = fields.List(fields.Nested(PersonOut))


class SegmentOut(ma.Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String()
    rule = fields.Dict()
    builtin = fields.Boolean()
    description = fields.String(allow_none=True)
    count = fields.Integer(
        allow_none=True, metadata={"description": "who it matches now (null: rule broken)"}
    )


class SegmentList(ma.Schema):
    items = fields.List(fields.Nested(SegmentOut))


class AffinityOut(ma.Schema):
    products = fields.List(fields.Tuple((fields.String(), fields.Integer())))
    categories = fields.List(fields.Tuple((fields.String(), fields.Integer())))


class MemberOut(ma.Schema):
    lead_id = fields.String()
    email = fields.String(allow_none=True)
    user_id = fields.String(allow_none=True)
    member_since = fields.DateTime(allow_none=True)
    orders = fields.Integer()
    revenue = MoneyOut(metadata={"description": "lifetime value so far"})
    tier = fields.String(allow_none=True)
    tier_since = fields.DateTime(allow_none=True)
    last_order_at = fields.DateTime(allow_none=True)
    rfm = fields.Dict(allow_none=True)
    rfm_group = fields.String(allow_none=True)
    affinity = fields.Nested(AffinityOut, allow_none=True)


class MemberQuery(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    tier = FreeText(max_length=40)
    rfm_group = FreeText(max_length=40)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class MemberList(ma.Schema):
    items = fields.List(fields.Nested(MemberOut))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


class SuppressionIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    email = Name(load_default=None, max_length=MAX_EMAIL_LENGTH)
    phone = Name(load_default=None, max_length=64)
    region = Name(load_default=None, max_length=2, validate=validate.Length(equal=2))
    reason = FreeText(required=True, min_length=3, max_length=MAX_REASON_LENGTH)

    @ma.validates_schema
    def _one(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("email") is None) == (data.get("phone") is None):
            raise ma.ValidationError("give an email or a phone", "email")


class SuppressionOut(ma.Schema):
    id = fields.Integer(dump_only=True)
    kind = fields.String()
    value_hash = fields.String(metadata={"description": "SHA-256 of the normalised value"})
    reason = fields.String()
    created_by = fields.String()
    created_at = fields.DateTime()


class SuppressionList(ma.Schema):
    items = fields.List(fields.Nested(SuppressionOut))


class ExportIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    platform = fields.String(required=True, validate=validate.OneOf(PLATFORMS))
    rule = SegmentRuleField(load_default=None)
    segment_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=MAX_INTEGER))

    @ma.validates_schema
    def _one(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("rule") is None) == (data.get("segment_id") is None):
            raise ma.ValidationError("give a segment rule or a segment_id", "rule")


class ExportOut(ma.Schema):
    id = fields.Integer(dump_only=True)
    platform = fields.String()
    fields_ = fields.List(fields.String(), data_key="fields", attribute="fields")
    people = fields.Integer()
    requested_by = fields.String()
    created_at = fields.DateTime()


class ExportList(ma.Schema):
    items = fields.List(fields.Nested(ExportOut))


class SharingOut(ma.Schema):
    destination = fields.String()
    fields_ = fields.List(fields.String(), data_key="fields", attribute="fields")
    purpose = fields.String()
    campaign_id = fields.Integer(allow_none=True)
    export_id = fields.Integer(allow_none=True)
    requested_by = fields.String()
    at = fields.DateTime()


class SharingList(ma.Schema):
    contact_id = fields.String()
    items = fields.List(fields.Nested(SharingOut))


MAX_REPORT_DAYS = 400


class FunnelQuery(ma.Schema):
    """A report's window, ``[since, until)``: by default the 30 days to now."""

    class Meta:
        unknown = ma.RAISE

    since = Timestamp()
    until = Timestamp()

    @ma.validates_schema
    def _window(self, data: dict[str, Any], **_: Any) -> None:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None:
            if since >= until:
                raise ma.ValidationError("must be before until", "since")
            if (until - since).days > MAX_REPORT_DAYS:
                raise ma.ValidationError(f"a window is at most {MAX_REPORT_DAYS} days", "since")


class StageOut(ma.Schema):
    stage = fields.String()
    count = fields.Integer()
    rate_from_previous = fields.Float(allow_none=True)
    rate_from_visitor = fields.Float(allow_none=True)


def _stages() -> fields.List:
    return fields.List(fields.Nested(StageOut))


class ChannelOut(ma.Schema):
    channel = fields.String()
    stages = _stages()


class SourceOut(ma.Schema):
    channel = fields.String()
    engine = fields.String(metadata={"description": "search engine or social network"})
    stages = _stages()


class LandingPageOut(ma.Schema):
    landing_page = fields.String()
    stages = _stages()


class CampaignStagesOut(ma.Schema):
    campaign = fields.String(metadata={"description": "utm_campaign of the first touch"})
    stages = _stages()


class FunnelOut(ma.Schema):
    since = fields.AwareDateTime()
    until = fields.AwareDateTime()
    stages = _stages()
    by_channel = fields.List(fields.Nested(ChannelOut))
    by_source = fields.List(fields.Nested(SourceOut))
    by_landing_page = fields.List(fields.Nested(LandingPageOut))
    by_campaign = fields.List(fields.Nested(CampaignStagesOut))
    median_seconds = fields.Dict(keys=fields.String(), values=fields.Float(allow_none=True))
    sampled = fields.Boolean(metadata={"description": "medians read the newest 50,000 only"})


class ProductPrecursorOut(ma.Schema):
    product = fields.String()
    buyers = fields.Integer()
    share_of_buyers = fields.Float(allow_none=True)
    looked = fields.Integer()
    bought_after_looking = fields.Float(allow_none=True)


class IntentPrecursorOut(ma.Schema):
    topic = fields.String()
    people = fields.Integer()
    buyers = fields.Integer()
    bought = fields.Float(allow_none=True)


class PrecursorsOut(ma.Schema):
    since = fields.AwareDateTime()
    until = fields.AwareDateTime()
    buyers = fields.Integer()
    products = fields.List(fields.Nested(ProductPrecursorOut))
    intents = fields.List(fields.Nested(IntentPrecursorOut))
    intents_sampled = fields.Boolean()
