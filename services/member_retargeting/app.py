"""member-retargeting application factory: the marketing API, the marketing pages and the
public endpoints of message links (unsubscribe, clicks, opens) and of providers' delivery
receipts. The consumer, the campaign
scheduler and the dispatcher run in processes of their own."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import Engine, select

from services.member_retargeting.config import SERVICE, RetargetingConfig
from services.member_retargeting.models import (
    Segment,
    accounts,
    audit_log,
    dispatcher_outbox,
    metadata,
    outbox,
)
from services.member_retargeting.people.segments import BUILTINS
from services.member_retargeting.state import STATE, RetargetingState
from services.member_retargeting.web import (
    campaigns,
    funnel,
    members,
    pages,
    public,
    receipts,
    segments,
    sharing,
)
from shared import pages as pages_session
from shared.accounts import install as install_people
from shared.db import make_engine, make_sessionmaker
from shared.http import init_api, register_health
from shared.metrics import OutboxDepth, install_metrics
from shared.migrations import migrate
from shared.security import install_security


def init_db(engine: Engine) -> None:
    """Bring member-retargeting's database to the newest schema (:mod:`shared.migrations`)
    and seed the built-in segments (idempotent)."""
    migrate(engine, "member_retargeting", metadata)
    with make_sessionmaker(engine).begin() as session:
        have = set(session.scalars(select(Segment.name)))
        for name, (description, rule) in BUILTINS.items():
            if name not in have:
                session.add(Segment(name=name, rule=rule, builtin=True, description=description))


def create_app(config: RetargetingConfig | None = None) -> Flask:
    config = config or RetargetingConfig.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.config["FUNNEL_TOKENS"] = config.tokens.by_role()
    pages_session.configure(
        app, config.secret_key, config.tokens.by_role(), config.previous_secret_keys
    )
    install_security(app, config.security)
    engine = make_engine(config.database_url)
    app.extensions[STATE] = RetargetingState(config, engine, make_sessionmaker(engine))
    api = init_api(app, title="Funnel member-retargeting")
    api.spec.components.security_scheme(
        receipts.SIGNED,
        {
            "type": "apiKey",
            "in": "header",
            "name": "Funnel-Signature",
            "description": "t=<unix seconds>,v1=<HMAC-SHA256 of '<t>.<body>'>, webhook secret",
        },
    )
    for blueprint in (
        campaigns.blp,
        segments.blp,
        members.blp,
        sharing.blp,
        funnel.blp,
        receipts.blp,
    ):
        api.register_blueprint(blueprint)
    install_people(app, api, engine, accounts, audit_log)
    app.register_blueprint(pages.bp)
    app.register_blueprint(public.bp)
    register_health(app, engine, config.kafka)
    install_metrics(
        app,
        config.security.metrics_token,
        [OutboxDepth(SERVICE, engine, [outbox, dispatcher_outbox])],
    )
    return app
