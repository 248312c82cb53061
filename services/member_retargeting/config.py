"""member-retargeting configuration: the only place this service reads the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from services.member_retargeting.model.tiers import Tier, TierRules
from shared.config import (
    ConfigError,
    Env,
    KafkaConfig,
    SecurityConfig,
    Tokens,
    default_sqlite_url,
)

SERVICE = "member-retargeting"


def _tiers(text: str) -> tuple[Tier, ...]:
    """``member:0,silver:500,gold:2000`` → tiers."""
    tiers = []
    for part in text.split(","):
        name, _, spend = part.strip().partition(":")
        try:
            tiers.append(Tier(name.strip(), Decimal(spend.strip())))
        except InvalidOperation as exc:
            raise ConfigError(f"RETARGETING_TIERS: {part!r} is not name:spend") from exc
    return tuple(tiers)


@dataclass(frozen=True)
class RetargetingConfig:
    database_url: str
    tokens: Tokens = field(default_factory=Tokens)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    tiers: TierRules = field(default_factory=TierRules)
    # Messages per person across all marketing campaigns (transactional ones are exempt).
    cap_per_day: int = 1
    cap_per_week: int = 3
    # A purchase within this many days of a dispatch counts as its conversion.
    attribution_days: int = 7
    # Recipients a campaign run handles per transaction.
    run_chunk: int = 500
    # What people did is kept this long for segments (orders are kept for lifetime value).
    behaviour_days: int = 730
    schedule_poll_seconds: float = 1.0
    # Signs the marketing pages' session cookie; empty: derived from the tokens, so every
    # worker agrees without another secret to manage in development. Production needs it.
    secret_key: str = ""
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        self.security.check(
            required={"RETARGETING_SECRET_KEY": self.secret_key},
            secrets=self.tokens.by_variable().items(),
        )

    @classmethod
    def from_env(cls, env: Env | None = None) -> RetargetingConfig:
        env = env or Env()
        var_dir = Path(env.text("FUNNEL_VAR_DIR", "var"))
        default_tiers = TierRules()
        try:
            tiers = TierRules(
                tiers=_tiers(env.text("RETARGETING_TIERS", ""))
                if env.optional("RETARGETING_TIERS")
                else default_tiers.tiers,
                window=env.text("RETARGETING_TIER_WINDOW", default_tiers.window),
                retention_days=env.integer(
                    "RETARGETING_TIER_RETENTION_DAYS", default_tiers.retention_days
                ),
            )
        except ValueError as exc:
            raise ConfigError(f"RETARGETING_TIERS / _TIER_WINDOW: {exc}") from exc
        return cls(
            database_url=env.text(
                "MEMBER_RETARGETING_DATABASE_URL",
                default_sqlite_url(var_dir, "member_retargeting"),
            ),
            tokens=Tokens.from_env(env),
            kafka=KafkaConfig.from_env(env),
            security=SecurityConfig.from_env(env),
            tiers=tiers,
            cap_per_day=env.integer("RETARGETING_CAP_PER_DAY", cls.cap_per_day),
            cap_per_week=env.integer("RETARGETING_CAP_PER_WEEK", cls.cap_per_week),
            attribution_days=env.integer("RETARGETING_ATTRIBUTION_DAYS", cls.attribution_days),
            run_chunk=env.integer("RETARGETING_RUN_CHUNK", cls.run_chunk),
            behaviour_days=env.integer("RETARGETING_BEHAVIOUR_DAYS", cls.behaviour_days),
            schedule_poll_seconds=env.number(
                "RETARGETING_SCHEDULE_POLL_SECONDS", cls.schedule_poll_seconds
            ),
            secret_key=env.text("RETARGETING_SECRET_KEY", ""),
            log_level=env.text("FUNNEL_LOG_LEVEL", cls.log_level),
        )
