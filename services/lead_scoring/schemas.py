"""HTTP schemas of the sales API (separate from event schemas and ORM models)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from shared.events import STAGES


class LeadQuery(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    stage = fields.String(validate=validate.OneOf(STAGES))
    min_score = fields.Integer()
    sort = fields.String(
        load_default="-score", validate=validate.OneOf(["-score", "score", "-updated_at"])
    )
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Integer(load_default=25, validate=validate.Range(min=1, max=200))


class LeadSummary(ma.Schema):
    id = fields.String(dump_only=True)
    stage = fields.String()
    score = fields.Integer()
    email = fields.String(allow_none=True)
    user_id = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    company = fields.String(allow_none=True)
    last_event_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime()


class LeadPage(ma.Schema):
    items = fields.List(fields.Nested(LeadSummary))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


class PointOut(ma.Schema):
    rule_id = fields.String()
    points = fields.Integer()
    reason = fields.String()
    event_id = fields.String()
    event_type = fields.String(allow_none=True)
    event_name = fields.String(allow_none=True)
    occurred_at = fields.DateTime()


class ScoreOut(ma.Schema):
    total = fields.Integer()
    points = fields.List(fields.Nested(PointOut))


class StageChangeOut(ma.Schema):
    from_stage = fields.String(allow_none=True)
    to_stage = fields.String()
    reason = fields.String()
    changed_by = fields.String()
    changed_at = fields.DateTime()


class EventOut(ma.Schema):
    event_id = fields.String()
    type = fields.String()
    name = fields.String(allow_none=True)
    path = fields.String(allow_none=True)
    occurred_at = fields.DateTime()


class MergeOut(ma.Schema):
    merged_lead_id = fields.String()
    reason = fields.String()
    merged_at = fields.DateTime()


class LeadDetail(LeadSummary):
    anonymous_ids = fields.List(fields.String())
    traits = fields.Dict()
    account_id = fields.String(allow_none=True)
    account_traits = fields.Dict()
    created_at = fields.DateTime()
    score_explained = fields.Nested(ScoreOut)
    stage_history = fields.List(fields.Nested(StageChangeOut))
    recent_events = fields.List(fields.Nested(EventOut))
    merges = fields.List(fields.Nested(MergeOut))
