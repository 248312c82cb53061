"""traffic-intake admin API (bearer token of role ``admin``): sources and their write
keys, and the failed events intake kept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask.views import MethodView
from marshmallow import RAISE, ValidationError
from sqlalchemy import func, select, update

from services.traffic_intake import failed
from services.traffic_intake.models import failed_events, sources
from services.traffic_intake.schemas import (
    FailedEventPage,
    FailedEventQuery,
    OriginsIn,
    ResubmitIn,
    ResubmitOut,
    SourceIn,
    SourceList,
    SourceOut,
    SourceWithKey,
)
from services.traffic_intake.sources import (
    DuplicateSource,
    UnknownSource,
    create_source,
    rotate_key,
)
from services.traffic_intake.state import state
from shared.audit import audited
from shared.http import Blueprint, fail, or_404, require_role
from shared.provenance import BROWSER

blp = Blueprint("admin", __name__, url_prefix="/admin", description="Sources, keys, failures")


def _source(conn: Any, source_id: int) -> Any:
    row = or_404(
        conn.execute(select(sources).where(sources.c.id == source_id)).first(),
        f"no source {source_id}",
    )
    return row


def _before(source_id: int) -> dict[str, Any] | None:
    """A source as it was, for the audit log."""
    with state().engine.connect() as conn:
        row = conn.execute(select(sources).where(sources.c.id == source_id)).first()
    return None if row is None else dict(row._mapping)


def _with_key(row: Any, key: str) -> dict[str, Any]:
    return {**row._mapping, "write_key": key}


@blp.route("/sources")
class SourcesView(MethodView):
    @require_role("admin")
    @blp.response(200, SourceList)
    def get(self) -> dict[str, Any]:
        """Every source; keys are never shown again after creation or rotation."""
        with state().engine.connect() as conn:
            return {"items": [r._mapping for r in conn.execute(select(sources).order_by("id"))]}

    @require_role("admin")
    @blp.arguments(SourceIn)
    @blp.response(201, SourceWithKey)
    @audited("source.create", target=lambda r, **_: f"source:{r['id']}")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create a source and its write key (returned once; stored hashed)."""
        try:
            with state().engine.begin() as conn:
                issued = create_source(
                    conn,
                    name=data["name"],
                    kind=data["kind"],
                    allowed_origins=data["allowed_origins"],
                    rate_limit_per_second=data["rate_limit_per_second"],
                )
        except DuplicateSource as exc:
            fail(409, str(exc), errors={"name": ["already taken"]})
        state().sources.invalidate()
        return _with_key(issued.row, issued.key)


@blp.route("/sources/<id:source_id>/origins")
class OriginsView(MethodView):
    @require_role("admin")
    @blp.arguments(OriginsIn)
    @blp.response(200, SourceOut)
    @audited(
        "source.origins", target=lambda _r, source_id, **_: f"source:{source_id}", before=_before
    )
    def put(self, data: dict[str, Any], source_id: int) -> Any:
        """Replace a browser source's allowed origins (within the key cache's seconds
        everywhere)."""
        with state().engine.begin() as conn:
            row = _source(conn, source_id)
            if row.kind != BROWSER:
                fail(
                    409,
                    f"source {row.name!r} is a server source: never used from a browser",
                    errors={"allowed_origins": ["only browser sources have origins"]},
                )
            conn.execute(
                update(sources)
                .where(sources.c.id == source_id)
                .values(allowed_origins=data["allowed_origins"])
            )
            row = _source(conn, source_id)
        state().sources.invalidate()
        return row._mapping


def _set_enabled(source_id: int, enabled: bool) -> Any:
    with state().engine.begin() as conn:
        _source(conn, source_id)
        conn.execute(
            update(sources)
            .where(sources.c.id == source_id)
            .values(enabled=enabled, disabled_at=None if enabled else datetime.now(UTC))
        )
        row = _source(conn, source_id)
    state().sources.invalidate()
    return row._mapping


@blp.route("/sources/<id:source_id>/disable")
class DisableView(MethodView):
    @require_role("admin")
    @blp.response(200, SourceOut)
    @audited("source.disable", target=lambda _r, source_id: f"source:{source_id}", before=_before)
    def post(self, source_id: int) -> Any:
        """Stop accepting events from this source (403); its key is kept."""
        return _set_enabled(source_id, False)


@blp.route("/sources/<id:source_id>/enable")
class EnableView(MethodView):
    @require_role("admin")
    @blp.response(200, SourceOut)
    @audited("source.enable", target=lambda _r, source_id: f"source:{source_id}", before=_before)
    def post(self, source_id: int) -> Any:
        """Accept events from this source again."""
        return _set_enabled(source_id, True)


@blp.route("/sources/<id:source_id>/rotate-key")
class RotateView(MethodView):
    @require_role("admin")
    @blp.response(200, SourceWithKey)
    @audited("source.rotate_key", target=lambda _r, source_id: f"source:{source_id}")
    def post(self, source_id: int) -> dict[str, Any]:
        """Issue a new write key; the old one stops working at once."""
        try:
            with state().engine.begin() as conn:
                issued = rotate_key(conn, source_id)
        except UnknownSource as exc:
            fail(404, str(exc))
        state().sources.invalidate()
        return _with_key(issued.row, issued.key)


@blp.route("/failed-events")
class FailedEventsView(MethodView):
    @require_role("admin")
    @blp.arguments(FailedEventQuery, location="query", unknown=RAISE)
    @blp.response(200, FailedEventPage)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Rejected events, newest first, with their typed reason and body."""
        stmt = select(failed_events)
        if "kind" in query:
            stmt = stmt.where(failed_events.c.kind == query["kind"])
        if query.get("pending"):
            stmt = stmt.where(failed_events.c.resubmitted_at.is_(None))
        page, size = query["page"], query["page_size"]
        with state().engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(stmt.subquery()))
            rows = conn.execute(
                stmt.order_by(failed_events.c.id.desc()).offset((page - 1) * size).limit(size)
            ).all()
        items = [{**r._mapping, "body": bytes(r.body).decode(errors="replace")} for r in rows]
        return {"items": items, "total": total, "page": page, "page_size": size}


@blp.route("/failed-events/<id:failed_id>/resubmit")
class ResubmitView(MethodView):
    @require_role("admin")
    @blp.arguments(ResubmitIn)
    @blp.response(200, ResubmitOut)
    @audited("failed_event.resubmit", target=lambda _r, failed_id, **_: f"failed_event:{failed_id}")
    def post(self, data: dict[str, Any], failed_id: int) -> dict[str, Any]:
        """Accept a failed event, as stored or as corrected in ``event``. Still invalid →
        422 naming the fields. Never publishes the same event twice."""
        try:
            with state().engine.begin() as conn:
                result = failed.resubmit(
                    conn,
                    failed_id,
                    data["event"],
                    received_at=datetime.now(UTC),
                    max_event_bytes=state().config.max_event_bytes,
                )
        except failed.NotFound:
            fail(404, f"no failed event {failed_id}")
        except ValidationError as exc:
            fail(422, "the event is still invalid", errors=exc.messages)
        return {"event_id": result.event_id, "accepted": result.accepted}
