"""HTTP schemas of the sales API (separate from event schemas and ORM models)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from services.lead_scoring.handoff import REJECTION_CODES
from shared.events import STAGES


class LeadQuery(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    stage = fields.String(validate=validate.OneOf(STAGES))
    min_score = fields.Integer()
    sort = fields.String(
        load_default="priority",
        validate=validate.OneOf(["priority", "-score", "score", "-updated_at"]),
        metadata={"description": "priority: fit grade, then engagement now (A1 first)"},
    )
    fit_grade = fields.String(validate=validate.OneOf(["A", "B", "C", "D"]))
    owner_id = fields.Integer(metadata={"description": "a rep's queue"})
    unassigned = fields.Boolean(metadata={"description": "only leads without an owner"})
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
    owner_id = fields.Integer(allow_none=True)
    mql_at = fields.DateTime(allow_none=True)
    fit_grade = fields.String()
    fit_score = fields.Integer()
    engagement = fields.Float(metadata={"description": "decayed points, now"})
    priority = fields.String(metadata={"description": "fit grade x engagement bucket, A1-D4"})
    intent = fields.Dict(keys=fields.String(), values=fields.Integer())


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
    reason_code = fields.String(allow_none=True)
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


class FitReason(ma.Schema):
    label = fields.String()
    points = fields.Integer()


class LeadDetail(LeadSummary):
    fit_reasons = fields.List(fields.Nested(FitReason))
    anonymous_ids = fields.List(fields.String())
    traits = fields.Dict()
    account_id = fields.String(allow_none=True)
    account_traits = fields.Dict()
    created_at = fields.DateTime()
    score_explained = fields.Nested(ScoreOut)
    stage_history = fields.List(fields.Nested(StageChangeOut))
    recent_events = fields.List(fields.Nested(EventOut))
    merges = fields.List(fields.Nested(MergeOut))


class _SalesAction(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    rep_id = fields.Integer(
        load_default=None,
        allow_none=True,
        metadata={"description": "the rep acting (recorded as who)"},
    )
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class AcceptIn(_SalesAction):
    pass


class RejectIn(_SalesAction):
    reason_code = fields.String(required=True, validate=validate.OneOf(sorted(REJECTION_CODES)))


class StageMoveIn(_SalesAction):
    to_stage = fields.String(required=True, validate=validate.OneOf(STAGES))
    reason = fields.String(required=True, validate=validate.Length(min=3, max=500))


class OverdueLead(LeadSummary):
    overdue_hours = fields.Float()


class OverdueList(ma.Schema):
    items = fields.List(fields.Nested(OverdueLead))
    sla_hours = fields.Float()


class RepIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(required=True)
    available = fields.Boolean(load_default=True)
    countries = fields.List(
        fields.String(validate=validate.Length(min=2, max=60)), load_default=list
    )
    industries = fields.List(
        fields.String(validate=validate.Length(min=1, max=100)), load_default=list
    )


class RepPatch(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    available = fields.Boolean()
    countries = fields.List(fields.String(validate=validate.Length(min=2, max=60)))
    industries = fields.List(fields.String(validate=validate.Length(min=1, max=100)))


class RepOut(ma.Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String()
    email = fields.String()
    available = fields.Boolean()
    countries = fields.List(fields.String())
    industries = fields.List(fields.String())
    last_assigned_at = fields.DateTime(allow_none=True)


class RepList(ma.Schema):
    items = fields.List(fields.Nested(RepOut))
