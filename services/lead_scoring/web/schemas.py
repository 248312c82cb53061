"""HTTP schemas of the sales API (separate from event schemas and ORM models)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from services.lead_scoring.handoff.actions import REJECTION_CODES
from services.lead_scoring.model.fit import GRADE_LETTERS
from services.lead_scoring.model.identity import ANY, EVICT_OLDEST, NEVER, REFUSE, TRUSTED
from shared.events import STAGES
from shared.fields import Identifier, JsonObject, JsonValue
from shared.identity import ANONYMOUS_ID, USER_ID
from shared.limits import (
    MAX_ANONYMOUS_IDS,
    MAX_EMAIL_LENGTH,
    MAX_EVENT_NAME_LENGTH,
    MAX_INTEGER,
    MAX_REASON_LENGTH,
)

# A sales note is kept inside the stage change's reason ("rejected by sales (code): …").
MAX_NOTE_LENGTH = MAX_REASON_LENGTH - 100


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
    fit_grade = fields.String(validate=validate.OneOf(GRADE_LETTERS))
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
    id = fields.Integer(metadata={"description": "what a split names to undo it"})
    merged_lead_id = fields.String()
    reason = fields.String()
    merged_at = fields.DateTime()
    event_id = fields.String(allow_none=True, metadata={"description": "the linking event"})
    source = fields.String(allow_none=True, metadata={"description": "that event's source"})
    split_at = fields.DateTime(allow_none=True)
    split_by = fields.String(allow_none=True)
    split_reason = fields.String(allow_none=True)


class IdentityOut(ma.Schema):
    kind = fields.String()
    value = fields.String()
    linked_at = fields.DateTime(metadata={"description": "when it was linked to this lead"})
    event_id = fields.String(allow_none=True, metadata={"description": "the event that did"})
    source = fields.String(allow_none=True, metadata={"description": "that event's source"})


class ConflictOut(ma.Schema):
    kind = fields.String()
    value = fields.String()
    other_lead_id = fields.String(allow_none=True)
    reason = fields.String()
    moved = fields.Boolean(metadata={"description": "the identifier came to this lead"})
    event_id = fields.String()
    source = fields.String(allow_none=True)
    at = fields.DateTime()


class FitReason(ma.Schema):
    label = fields.String()
    points = fields.Integer()


class HistoryQuery(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class HistoryPage(ma.Schema):
    page = fields.Integer()
    page_size = fields.Integer()
    points_total = fields.Integer(metadata={"description": "all points of the lead"})
    events_total = fields.Integer(metadata={"description": "all events of the lead"})


class LeadDetail(LeadSummary):
    fit_reasons = fields.List(fields.Nested(FitReason))
    anonymous_ids = fields.List(fields.String())
    traits = fields.Dict()
    account_id = fields.String(allow_none=True)
    account_traits = fields.Dict()
    created_at = fields.DateTime()
    history = fields.Nested(HistoryPage)
    score_explained = fields.Nested(ScoreOut, metadata={"description": "a page, newest first"})
    stage_history = fields.List(fields.Nested(StageChangeOut))
    recent_events = fields.List(
        fields.Nested(EventOut), metadata={"description": "a page, newest first"}
    )
    merges = fields.List(fields.Nested(MergeOut))
    identities = fields.List(
        fields.Nested(IdentityOut), metadata={"description": "where each identifier came from"}
    )
    conflicts = fields.List(
        fields.Nested(ConflictOut),
        metadata={"description": "identifiers the identity rules let another lead keep"},
    )


class _SalesAction(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    rep_id = fields.Integer(
        load_default=None,
        allow_none=True,
        metadata={"description": "the rep acting (recorded as who)"},
    )
    note = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=MAX_NOTE_LENGTH),
        metadata={"description": "kept with the stage change"},
    )


class AcceptIn(_SalesAction):
    pass


class RejectIn(_SalesAction):
    reason_code = fields.String(required=True, validate=validate.OneOf(sorted(REJECTION_CODES)))


class StageMoveIn(_SalesAction):
    to_stage = fields.String(required=True, validate=validate.OneOf(STAGES))
    reason = fields.String(required=True, validate=validate.Length(min=3, max=500))


class IdentifierIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    kind = fields.String(required=True, validate=validate.Length(min=1, max=40))
    value = fields.String(required=True, validate=validate.Length(min=1, max=MAX_EMAIL_LENGTH))


class SplitIn(_SalesAction):
    merge_id = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_INTEGER),
        metadata={"description": "a merge recorded on the lead, to undo"},
    )
    identifier = fields.Nested(
        IdentifierIn,
        load_default=None,
        allow_none=True,
        metadata={"description": "or one identifier of the lead, to give a lead of its own"},
    )
    reason = fields.String(required=True, validate=validate.Length(min=3, max=300))

    @ma.validates_schema
    def _one_of(self, data: dict, **_: object) -> None:
        if (data.get("merge_id") is None) == (data.get("identifier") is None):
            raise ma.ValidationError("name either merge_id or identifier", "merge_id")


class OverdueLead(LeadSummary):
    overdue_hours = fields.Float()


class OverdueList(ma.Schema):
    items = fields.List(fields.Nested(OverdueLead))
    sla_hours = fields.Float()


class RepIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(required=True, validate=validate.Length(max=MAX_EMAIL_LENGTH))
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


class RepTokenOut(ma.Schema):
    rep_id = ma.fields.Integer(required=True)
    token = ma.fields.String(
        required=True, metadata={"description": "shown once; store it like a password"}
    )


class RepList(ma.Schema):
    items = fields.List(fields.Nested(RepOut))


EVENT_TYPES = ["track", "page", "screen", "identify", "group", "alias", "intent"]
RULE_ID = validate.Regexp(
    r"^[a-z0-9][a-z0-9:_-]{0,99}$", error="lower-case letters, digits, ':', '_' and '-'"
)


class RuleIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    id = fields.String(required=True, validate=RULE_ID)
    description = fields.String(required=True, validate=validate.Length(min=1, max=200))
    points = fields.Integer(required=True, validate=validate.Range(min=-1000, max=1000))
    event_type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    event_name = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=MAX_EVENT_NAME_LENGTH)
    )
    path_pattern = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=2000)
    )
    properties = JsonObject(keys=fields.String(), load_default=dict)
    repeatable = fields.Boolean(load_default=True)
    cap = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    cap_period_days = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=0, max=3650, min_inclusive=False),
        metadata={"description": "at most ten years"},
    )


class TopicIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    id = fields.String(required=True, validate=RULE_ID)
    label = fields.String(required=True, validate=validate.Length(min=1, max=200))
    keywords = fields.List(
        fields.String(validate=validate.Length(min=1, max=100)),
        required=True,
        validate=validate.Length(min=1),
    )
    weight = fields.Integer(required=True, validate=validate.Range(min=-100, max=1000))
    daily_cap = fields.Integer(load_default=2, validate=validate.Range(min=1))


class CriterionIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    id = fields.String(required=True, validate=RULE_ID)
    label = fields.String(required=True, validate=validate.Length(min=1, max=200))
    trait = fields.String(required=True, validate=validate.Length(min=1, max=100))
    op = fields.String(
        required=True, validate=validate.OneOf(["eq", "in", "gte", "lte", "contains_any"])
    )
    value = JsonValue(required=True)
    points = fields.Integer(required=True, validate=validate.Range(min=-1000, max=1000))

    @ma.validates_schema
    def _value_fits_op(self, data: dict, **_: object) -> None:
        value, op = data.get("value"), data.get("op")
        if op in ("in", "contains_any") and not (isinstance(value, list) and value):
            raise ma.ValidationError("must be a non-empty list for this op", "value")
        if op in ("gte", "lte") and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ma.ValidationError("must be a number for this op", "value")


class GradesIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    A = fields.Integer(required=True)
    B = fields.Integer(required=True)
    C = fields.Integer(required=True)

    @ma.validates_schema
    def _descending(self, data: dict, **_: object) -> None:
        if not data["A"] > data["B"] > data["C"]:
            raise ma.ValidationError("floors must descend: A > B > C", "A")


class RuleSetIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    rules = fields.List(fields.Nested(RuleIn), required=True)
    taxonomy = fields.List(fields.Nested(TopicIn), required=True)
    fit_criteria = fields.List(fields.Nested(CriterionIn), required=True)
    grades = fields.Nested(GradesIn, required=True)
    mql_threshold = fields.Integer(required=True, validate=validate.Range(min=1))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))

    @ma.validates_schema
    def _unique_ids(self, data: dict, **_: object) -> None:
        for name in ("rules", "taxonomy", "fit_criteria"):
            ids = [item["id"] for item in data.get(name, [])]
            if len(ids) != len(set(ids)):
                raise ma.ValidationError("ids must be unique", name)


class RuleSetOut(ma.Schema):
    version = fields.Integer()
    document = fields.Dict()


class RescoreJobOut(ma.Schema):
    id = fields.Integer()
    version = fields.Integer()
    total = fields.Integer()
    done = fields.Integer()
    failed = fields.Integer(metadata={"description": "leads that could not be rescored"})
    progress = fields.Float(metadata={"description": "0..1"})
    status = fields.String()
    created_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)


class IdentityRuleIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    kind = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^(user_id|email|anonymous_id|external:[A-Za-z0-9_.-]{1,30})$",
            error="user_id, email, anonymous_id or external:<type>",
        ),
    )
    priority = fields.Integer(required=True, validate=validate.Range(min=1, max=100))
    limit = fields.Integer(required=True, validate=validate.Range(min=1, max=MAX_ANONYMOUS_IDS))
    on_limit = fields.String(load_default=REFUSE, validate=validate.OneOf([REFUSE, EVICT_OLDEST]))
    follows_latest = fields.Boolean(load_default=False)
    merge = fields.String(load_default=ANY, validate=validate.OneOf([ANY, TRUSTED, NEVER]))
    trusted_sources = fields.List(
        fields.String(validate=validate.Length(min=1, max=200)),
        load_default=list,
        validate=validate.Length(max=100),
    )
    blocked = fields.List(
        fields.String(validate=validate.Length(min=1, max=MAX_EMAIL_LENGTH)),
        load_default=list,
        validate=validate.Length(max=1000),
    )


class IdentityRulesIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    rules = fields.List(
        fields.Nested(IdentityRuleIn), required=True, validate=validate.Length(min=2, max=50)
    )
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))

    @ma.validates_schema
    def _sound(self, data: dict, **_: object) -> None:
        kinds = [r["kind"] for r in data.get("rules", [])]
        if len(kinds) != len(set(kinds)):
            raise ma.ValidationError("one rule per kind", "rules")
        if not {USER_ID, ANONYMOUS_ID} <= set(kinds):
            raise ma.ValidationError("user_id and anonymous_id need rules", "rules")
        priorities = [r["priority"] for r in data["rules"]]
        if len(priorities) != len(set(priorities)):
            raise ma.ValidationError("priorities must differ", "rules")


class IdentityRulesOut(ma.Schema):
    version = fields.Integer()
    document = fields.Dict()


# Privacy (admin): erasure and access requests.

PRIVACY_KINDS = ("user_id", "email", "anonymous_id", "lead_id")


class ErasureIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    kind = fields.String(required=True, validate=validate.OneOf(PRIVACY_KINDS))
    value = Identifier(required=True, max_length=320)  # an e-mail can be that long


class ServiceAnswerOut(ma.Schema):
    answered = fields.Boolean()
    answered_at = fields.DateTime(allow_none=True)
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())


class PrivacyStatusOut(ma.Schema):
    request_id = fields.String()
    kind = fields.String(metadata={"description": "erasure or access"})
    requested_by = fields.String()
    requested_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)
    complete = fields.Boolean(metadata={"description": "every service has answered"})
    services = fields.Dict(keys=fields.String(), values=fields.Nested(ServiceAnswerOut))


class AccessQuery(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    kind = fields.String(
        load_default=None,
        validate=validate.OneOf(PRIVACY_KINDS),
        metadata={"description": "what the id is; by default a lead id, else a user id"},
    )
    request_id = fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "read a request started before instead of a new one"},
    )
    wait_seconds = fields.Float(load_default=10.0, validate=validate.Range(min=0, max=30))


class AccessOut(PrivacyStatusOut):
    identifiers = fields.List(fields.Dict())
    parts = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(),
        metadata={"description": "per service: {data: by store, truncated: [stores cut short]}"},
    )
