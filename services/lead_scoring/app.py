"""lead-scoring application factory: the sales API, the admin API (reps, scoring rules)
and the sales pages. The consumer runs in a process of its own (:mod:`.consumer`)."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import Engine

from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.handoff import rep_tokens
from services.lead_scoring.model.identity import DEFAULT_IDENTITY_RULES
from services.lead_scoring.models import metadata
from services.lead_scoring.rulesets.active import IdentityRulesCache, RuleSetCache
from services.lead_scoring.state import STATE, ScoringState
from services.lead_scoring.web import identity, leads, pages, reps, rules
from shared import pages as pages_session
from shared.db import make_engine, make_sessionmaker
from shared.http import PERSON_TOKENS, Principal, init_api, register_health


def init_db(engine: Engine) -> None:
    """Create lead-scoring's tables if missing (idempotent)."""
    metadata.create_all(engine)


def create_app(config: ScoringConfig | None = None) -> Flask:
    config = config or ScoringConfig.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.config["FUNNEL_TOKENS"] = config.tokens.by_role()
    pages_session.configure(app, config.secret_key, config.tokens.by_role())
    engine = make_engine(config.database_url)
    sessions = make_sessionmaker(engine)
    base_model = config.base_model()
    app.extensions[STATE] = ScoringState(
        config,
        engine,
        sessions,
        base_model,
        RuleSetCache(base_model),
        IdentityRulesCache(DEFAULT_IDENTITY_RULES),
    )

    def rep_principal(token: str) -> Principal | None:
        with sessions() as session:
            return rep_tokens.principal(session, token)

    app.extensions[PERSON_TOKENS] = rep_principal
    api = init_api(app, title="Funnel lead-scoring")
    for blueprint in (leads.blp, reps.blp, rules.blp, identity.blp):
        api.register_blueprint(blueprint)
    app.register_blueprint(pages.bp)
    register_health(app)
    return app
