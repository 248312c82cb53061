"""lead-scoring configuration: the only place this service reads the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.lead_scoring.model.scoring import ScoringModel
from shared.config import (
    ConfigError,
    Env,
    KafkaConfig,
    SecurityConfig,
    Tokens,
    default_sqlite_url,
)

SERVICE = "lead-scoring"


@dataclass(frozen=True)
class ScoringConfig:
    database_url: str
    tokens: Tokens = field(default_factory=Tokens)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    mql_threshold: int = 50
    half_life_days: float = 30.0
    # An MQL neither accepted nor rejected within this many hours is overdue.
    sla_hours: float = 24.0
    sla_check_seconds: float = 30.0
    # Signs the sales pages' session cookie; derived from the tokens when unset so every
    # worker agrees without another secret to manage in development. Production needs it.
    secret_key: str = ""
    # Secrets the pages were signed with before a rotation (SCORING_PREVIOUS_SECRET_KEYS,
    # comma-separated): their sessions stay valid until dropped from here.
    previous_secret_keys: tuple[str, ...] = ()
    log_level: str = "INFO"
    # False: the consumer leaves its outbox to ``python -m services.lead_scoring relay``
    # (its own process, as intake's relay is): the consumer then never waits on Kafka acks.
    relay_in_consumer: bool = True

    def base_model(self) -> ScoringModel:
        """The built-in scoring model with this deployment's threshold and half-life
        (rule-set version 0)."""
        return ScoringModel(mql_threshold=self.mql_threshold, half_life_days=self.half_life_days)

    def __post_init__(self) -> None:
        if not 1 <= self.half_life_days <= 3650:
            raise ConfigError("SCORING_HALF_LIFE_DAYS must be between 1 and 3650 days")
        self.security.check(
            required={"SCORING_SECRET_KEY": self.secret_key},
            secrets=[
                *self.tokens.by_variable().items(),
                *(("SCORING_PREVIOUS_SECRET_KEYS", k) for k in self.previous_secret_keys),
            ],
        )

    @classmethod
    def from_env(cls, env: Env | None = None) -> ScoringConfig:
        env = env or Env()
        var_dir = Path(env.text("FUNNEL_VAR_DIR", "var"))
        return cls(
            database_url=env.text(
                "LEAD_SCORING_DATABASE_URL", default_sqlite_url(var_dir, "lead_scoring")
            ),
            tokens=Tokens.from_env(env),
            kafka=KafkaConfig.from_env(env),
            security=SecurityConfig.from_env(env),
            mql_threshold=env.integer("SCORING_MQL_THRESHOLD", cls.mql_threshold),
            half_life_days=env.number("SCORING_HALF_LIFE_DAYS", cls.half_life_days),
            sla_hours=env.number("SCORING_SLA_HOURS", cls.sla_hours),
            sla_check_seconds=env.number("SCORING_SLA_CHECK_SECONDS", cls.sla_check_seconds),
            secret_key=env.text("SCORING_SECRET_KEY", ""),
            previous_secret_keys=env.words("SCORING_PREVIOUS_SECRET_KEYS"),
            log_level=env.text("FUNNEL_LOG_LEVEL", cls.log_level),
            relay_in_consumer=env.boolean("SCORING_RELAY_IN_CONSUMER", cls.relay_in_consumer),
        )
