"""The audit log every service keeps: who changed what, when, with the state before and
after. Admin and marketing actions that change something are recorded (sales actions
are recorded in the leads' own history).

A view opts in with :func:`audited` (under :func:`shared.http.require_role`, so the
caller is known): after the view succeeds, one row — the principal (role, account id,
name), the action (``campaign.create``), the target (``campaign:3``), ``before`` (what a
loader read before the change) and ``after`` (what the view returned). The row is
written in a transaction of its own right after the change commits; a change whose view
raises leaves no row (nothing changed). Values are stored as JSON, cut to
:data:`MAX_AUDIT_BYTES` each.

The log holds what actions carried: erasure replaces a person's identifiers in it by
``[erased]`` (:func:`scrub`); entries older than the retention are pruned (:func:`prune`).
``GET /admin/audit`` lists it (admin), newest first.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from flask import current_app, g
from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from shared.db import BigIntPK, UTCDateTime, utcnow

F = TypeVar("F", bound=Callable[..., Any])
AUDIT_ENGINE = "funnel_audit_engine"
"""``app.extensions[AUDIT_ENGINE]``: ``(engine, table)`` where a service keeps its log."""
MAX_AUDIT_BYTES = 16_000


def audit_table(metadata: MetaData) -> Table:
    return Table(
        "audit_log",
        metadata,
        Column("id", BigIntPK, primary_key=True, autoincrement=True),
        Column("at", UTCDateTime(), nullable=False, default=utcnow, index=True),
        Column("actor_role", String(20), nullable=False),
        Column("actor_id", Integer, nullable=True),
        Column("actor", String(200), nullable=False),
        Column("action", String(100), nullable=False, index=True),
        Column("target", String(200), nullable=True, index=True),
        Column("before", JSON, nullable=True),
        Column("after", JSON, nullable=True),
    )


# Secrets a view may return once (a new token, a write key): never kept in the log.
SECRET_KEYS = frozenset(
    {"token", "write_key", "secret", "password", "token_hash", "write_key_hash"}
)


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "[secret]" if k in SECRET_KEYS else _without_secrets(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """A JSON-able copy of a view's value (ORM rows as their columns), secrets replaced,
    at most :data:`MAX_AUDIT_BYTES` when encoded (else a note that it was cut)."""
    if value is None:
        return None
    if hasattr(value, "__table__"):
        value = {c.key: getattr(value, c.key, None) for c in value.__table__.columns}
    value = _without_secrets(json.loads(json.dumps(value, default=str, ensure_ascii=False)))
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text.encode()) > MAX_AUDIT_BYTES:
        return {"cut": True, "start": text[: MAX_AUDIT_BYTES // 4]}
    return json.loads(text)


def record(
    bind: Connection | Session,
    table: Table,
    *,
    action: str,
    target: str | None,
    before: Any,
    after: Any,
    actor_role: str,
    actor: str,
    actor_id: int | None = None,
) -> None:
    bind.execute(
        table.insert().values(
            at=utcnow(),
            actor_role=actor_role,
            actor_id=actor_id,
            actor=actor[:200],
            action=action[:100],
            target=None if target is None else target[:200],
            before=plain(before),
            after=plain(after),
        )
    )


def audited(
    action: str,
    *,
    target: Callable[..., str | None] | None = None,
    before: Callable[..., Any] | None = None,
    after: Callable[[Any], Any] | None = None,
) -> Callable[[F], F]:
    """Record the view's change (see the module). ``target(result, **view_kwargs)``
    names what changed; ``before(**view_kwargs)`` reads it before the change;
    ``after(result)`` picks what of the result to keep (default: all of it)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            previous = before(**kwargs) if before is not None else None
            result = view(*args, **kwargs)
            engine, table = current_app.extensions[AUDIT_ENGINE]
            principal = getattr(g, "funnel_principal", None)
            body = result[0] if isinstance(result, tuple) else result
            with engine.begin() as conn:
                record(
                    conn,
                    table,
                    action=action,
                    target=target(body, **kwargs) if target is not None else None,
                    before=previous,
                    after=after(body) if after is not None else body,
                    actor_role=getattr(principal, "role", "unknown"),
                    actor=getattr(principal, "name", "") or "unknown",
                    actor_id=getattr(principal, "person_id", None),
                )
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


def install(app: Any, engine: Engine, table: Table) -> None:
    app.extensions[AUDIT_ENGINE] = (engine, table)


def entries(
    bind: Connection | Session,
    table: Table,
    *,
    action: str | None = None,
    target: str | None = None,
    page: int = 1,
    page_size: int = 50,
) -> list[Mapping[str, Any]]:
    stmt = select(table).order_by(table.c.id.desc())
    if action:
        stmt = stmt.where(table.c.action == action)
    if target:
        stmt = stmt.where(table.c.target == target)
    rows = bind.execute(stmt.offset((page - 1) * page_size).limit(page_size))
    return [dict(row._mapping) for row in rows]


ERASED = "[erased]"


def _redact(value: Any, wanted: list[str]) -> Any:
    if isinstance(value, str):
        return ERASED if any(w in value for w in wanted) else value
    if isinstance(value, list):
        return [_redact(v, wanted) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v, wanted) for k, v in value.items()}
    return value


def scrub(bind: Connection | Session, table: Table, values: Iterable[str]) -> int:
    """Replace every text in an entry's target, before or after that mentions one of
    ``values`` (a person's identifiers, on erasure) by ``[erased]``: who did what stays
    accountable, about whom does not. Returns how many entries changed."""
    wanted = [v for v in values if v]
    if not wanted:
        return 0
    changed = 0
    for row in bind.execute(select(table.c.id, table.c.target, table.c.before, table.c.after)):
        text = json.dumps([row.target, row.before, row.after], default=str, ensure_ascii=False)
        if not any(w in text for w in wanted):
            continue
        bind.execute(
            update(table)
            .where(table.c.id == row.id)
            .values(
                target=_redact(row.target, wanted),
                before=_redact(row.before, wanted),
                after=_redact(row.after, wanted),
            )
        )
        changed += 1
    return changed


def prune(bind: Connection | Session, table: Table, older_than: Any) -> int:
    """Drop entries past the log's retention (``FUNNEL_AUDIT_RETENTION_DAYS``)."""
    result = bind.execute(delete(table).where(table.c.at < older_than))
    return int(getattr(result, "rowcount", 0) or 0)


# ------------------------------------------------------------------------------ HTTP


def blueprint() -> Any:
    """``GET /admin/audit`` (admin): the service's audit log, newest first, filtered by
    action or target, paged."""
    import marshmallow as ma
    from flask.views import MethodView
    from marshmallow import RAISE, fields, validate

    from shared.http import Blueprint, require_role

    class AuditQuery(ma.Schema):
        class Meta:
            unknown = RAISE

        action = fields.String(validate=validate.Length(max=100))
        target = fields.String(validate=validate.Length(max=200))
        page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
        page_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))

    class AuditEntry(ma.Schema):
        id = fields.Integer()
        at = fields.DateTime()
        actor_role = fields.String()
        actor_id = fields.Integer(allow_none=True)
        actor = fields.String()
        action = fields.String()
        target = fields.String(allow_none=True)
        before = fields.Raw(allow_none=True)
        after = fields.Raw(allow_none=True)

    class AuditPage(ma.Schema):
        items = fields.List(fields.Nested(AuditEntry))
        page = fields.Integer()
        page_size = fields.Integer()

    blp = Blueprint("audit", __name__, url_prefix="/admin/audit", description="Audit log")

    @blp.route("")
    class AuditView(MethodView):
        @require_role("admin")
        @blp.arguments(AuditQuery, location="query", unknown=RAISE)
        @blp.response(200, AuditPage)
        def get(self, query: dict[str, Any]) -> dict[str, Any]:
            """Who changed what and when, with the state before and after."""
            engine, table = current_app.extensions[AUDIT_ENGINE]
            with engine.connect() as conn:
                items = entries(
                    conn,
                    table,
                    action=query.get("action"),
                    target=query.get("target"),
                    page=query["page"],
                    page_size=query["page_size"],
                )
            return {"items": items, "page": query["page"], "page_size": query["page_size"]}

    return blp
