"""HTTP schemas of the marketing API."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from shared.events import STAGES

CHANNELS = ("email", "sms", "ads")


class SegmentRule(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    members = fields.Boolean(allow_none=True, load_default=None)
    stages = fields.List(fields.String(validate=validate.OneOf(STAGES)), load_default=None)
    min_score = fields.Integer(allow_none=True, load_default=None)


class Message(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    subject = fields.String(required=True, validate=validate.Length(min=1, max=300))
    body = fields.String(required=True, validate=validate.Length(min=1, max=20_000))


class CampaignIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    segment = fields.Nested(SegmentRule, required=True)
    channel = fields.String(load_default="email", validate=validate.OneOf(CHANNELS))
    message = fields.Nested(Message, required=True)


class RunOut(ma.Schema):
    run_id = fields.Integer()
    trigger = fields.String()
    audience_size = fields.Integer()
    triggered_at = fields.DateTime()


class CampaignOut(ma.Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String()
    segment = fields.Dict()
    channel = fields.String()
    message = fields.Dict()
    created_at = fields.DateTime()
    audience_size = fields.Integer(metadata={"description": "who the segment matches now"})
    dispatched_count = fields.Integer(metadata={"description": "dispatches queued, all runs"})
    published_count = fields.Integer(metadata={"description": "dispatches acked by Kafka"})
    runs = fields.List(fields.Nested(RunOut))


class CampaignList(ma.Schema):
    items = fields.List(fields.Nested(CampaignOut))


class TriggerOut(ma.Schema):
    campaign_id = fields.Integer()
    run_id = fields.Integer()
    audience_size = fields.Integer()


class MemberOut(ma.Schema):
    lead_id = fields.String()
    email = fields.String(allow_none=True)
    user_id = fields.String(allow_none=True)
    member_since = fields.DateTime(allow_none=True)
    orders = fields.Integer()
    revenue = fields.Decimal(as_string=True)


class MemberList(ma.Schema):
    items = fields.List(fields.Nested(MemberOut))
    total = fields.Integer()
