"""lead-scoring application factory: the sales API, the admin API (reps, scoring rules)
and the sales pages. The consumer runs in a process of its own (:mod:`.consumer`)."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import Engine

from services.lead_scoring.config import SERVICE, ScoringConfig
from services.lead_scoring.handoff import rep_tokens
from services.lead_scoring.model.identity import DEFAULT_IDENTITY_RULES
from services.lead_scoring.models import accounts, audit_log, metadata, outbox
from services.lead_scoring.rulesets.active import IdentityRulesCache, RuleSetCache
from services.lead_scoring.state import STATE, ScoringState
from services.lead_scoring.web import identity, leads, pages, privacy, reps, rules
from shared import pages as pages_session
from shared.accounts import install as install_people
from shared.db import make_engine, make_sessionmaker
from shared.http import Principal, init_api, register_health
from shared.metrics import OutboxDepth, install_metrics
from shared.migrations import migrate
from shared.security import install_security


def init_db(engine: Engine) -> None:
    """Bring lead-scoring's database to the newest schema (:mod:`shared.migrations`;
    idempotent)."""
    migrate(engine, "lead_scoring", metadata)


def create_app(config: ScoringConfig | None = None) -> Flask:
    config = config or ScoringConfig.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.config["FUNNEL_TOKENS"] = config.tokens.by_role()
    pages_session.configure(
        app, config.secret_key, config.tokens.by_role(), config.previous_secret_keys
    )
    install_security(app, config.security)
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

    api = init_api(app, title="Funnel lead-scoring")
    for blueprint in (leads.blp, reps.blp, rules.blp, identity.blp, privacy.blp):
        api.register_blueprint(blueprint)
    install_people(app, api, engine, accounts, audit_log, others=rep_principal)
    app.register_blueprint(pages.bp)
    register_health(app, engine, config.kafka)
    install_metrics(app, config.security.metrics_token, [OutboxDepth(SERVICE, engine, [outbox])])
    return app
