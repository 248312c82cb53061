"""lead-scoring application factory."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from services.lead_scoring import api as leads_api
from services.lead_scoring import pages, rep_tokens
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.models import metadata
from services.lead_scoring.rulesets import ActiveSettings
from services.lead_scoring.settings import ScoringSettings
from shared.db import make_engine, make_sessionmaker
from shared.http import PERSON_TOKENS, Principal, init_api, register_health


@dataclass
class ScoringState:
    config: ScoringConfig
    engine: Engine
    sessions: sessionmaker
    settings: ScoringSettings
    active: ActiveSettings


def init_db(engine: Engine) -> None:
    """Create lead-scoring's tables if missing (idempotent)."""
    metadata.create_all(engine)


def create_app(config: ScoringConfig | None = None) -> Flask:
    config = config or ScoringConfig.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.config["FUNNEL_TOKENS"] = config.tokens.by_role()
    app.config["SECRET_KEY"] = (
        config.secret_key
        or hashlib.sha256(
            ("funnel-pages:" + "|".join(config.tokens.by_role().values())).encode()
        ).hexdigest()
    )
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    engine = make_engine(config.database_url)
    settings = ScoringSettings.from_config(config)
    app.extensions["lead_scoring"] = ScoringState(
        config, engine, make_sessionmaker(engine), settings, ActiveSettings(settings)
    )
    sessions = app.extensions["lead_scoring"].sessions

    def rep_principal(token: str) -> Principal | None:
        with sessions() as session:
            return rep_tokens.principal(session, token)

    app.extensions[PERSON_TOKENS] = rep_principal
    api = init_api(app, title="Funnel lead-scoring")
    api.register_blueprint(leads_api.blp)
    api.register_blueprint(leads_api.reps_blp)
    api.register_blueprint(leads_api.rules_blp)
    app.register_blueprint(pages.bp)
    register_health(app)
    return app
