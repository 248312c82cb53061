"""member-retargeting application factory."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import Engine

from services.member_retargeting import api as marketing_api
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.models import metadata
from services.member_retargeting.state import STATE, RetargetingState
from shared.db import make_engine, make_sessionmaker
from shared.http import init_api, register_health


def init_db(engine: Engine) -> None:
    """Create member-retargeting's tables if missing (idempotent)."""
    metadata.create_all(engine)


def create_app(config: RetargetingConfig | None = None) -> Flask:
    config = config or RetargetingConfig.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.config["FUNNEL_TOKENS"] = config.tokens.by_role()
    engine = make_engine(config.database_url)
    app.extensions[STATE] = RetargetingState(config, engine, make_sessionmaker(engine))
    api = init_api(app, title="Funnel member-retargeting")
    api.register_blueprint(marketing_api.blp)
    register_health(app)
    return app
