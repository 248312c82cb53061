"""traffic-intake application factory."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import Engine, inspect, text

from services.traffic_intake import admin_api, browser
from services.traffic_intake import api as tracking_api
from services.traffic_intake.config import SERVICE, IntakeConfig
from services.traffic_intake.group_commit import GroupCommit
from services.traffic_intake.models import accounts, audit_log, metadata, outbox, privacy_outbox
from services.traffic_intake.sources import SourceDirectory
from services.traffic_intake.state import STATE, IntakeState
from shared.accounts import install as install_people
from shared.db import make_engine
from shared.http import DecompressRequest, init_api, register_health
from shared.metrics import OutboxDepth, install_metrics
from shared.migrations import migrate
from shared.ratelimit import TokenBuckets
from shared.security import install_security


def init_db(engine: Engine) -> None:
    """Bring intake's database to the newest schema (:mod:`shared.migrations`;
    idempotent). A ``sources`` table made before source kinds (and before migrations)
    gets its two columns first, so the baseline it is stamped with is true of it."""
    if "sources" not in inspect(engine).get_table_names():
        migrate(engine, "traffic_intake", metadata)
        return
    have = {column["name"] for column in inspect(engine).get_columns("sources")}
    with engine.begin() as conn:
        if "kind" not in have:
            conn.execute(
                text("ALTER TABLE sources ADD COLUMN kind VARCHAR(10) NOT NULL DEFAULT 'server'")
            )
        if "allowed_origins" not in have:
            conn.execute(text("ALTER TABLE sources ADD COLUMN allowed_origins JSON"))
    migrate(engine, "traffic_intake", metadata)


def create_app(config: IntakeConfig | None = None) -> Flask:
    config = config or IntakeConfig.from_env()
    app = Flask(__name__)
    # Flask enforces this while reading, chunked bodies included: memory stays bounded.
    app.config["MAX_CONTENT_LENGTH"] = config.max_batch_bytes
    app.config["FUNNEL_TOKENS"] = config.tokens.by_role()
    install_security(app, config.security)
    engine = make_engine(config.database_url, busy_timeout_ms=2000)
    api = init_api(app, title="Funnel traffic-intake")
    app.extensions[STATE] = IntakeState(
        config=config,
        engine=engine,
        outbox=outbox,
        sources=SourceDirectory(
            engine,
            config.write_keys,
            config.source_name,
            browser_keys=config.browser_write_keys,
            browser_origins=config.browser_origins,
            browser_name=config.browser_source_name,
            ttl=config.source_cache_seconds,
        ),
        buckets=TokenBuckets(),
        api=api,
        writes=GroupCommit(
            engine,
            max_rows=config.group_commit_max_rows,
            wait_ms=config.group_commit_wait_ms,
            queue_size=config.group_commit_queue,
            timeout_s=config.group_commit_timeout_s,
        ),
    )
    api.spec.components.security_scheme(
        "basicAuth", {"type": "http", "scheme": "basic", "description": "write key as user name"}
    )
    api.register_blueprint(tracking_api.blp)
    api.register_blueprint(admin_api.blp)
    app.register_blueprint(browser.bp)
    install_people(app, api, engine, accounts, audit_log)
    register_health(app, engine, config.kafka)
    install_metrics(
        app, config.security.metrics_token, [OutboxDepth(SERVICE, engine, [outbox, privacy_outbox])]
    )
    app.wsgi_app = DecompressRequest(  # type: ignore[method-assign]
        app.wsgi_app, config.max_batch_bytes
    )
    return app
