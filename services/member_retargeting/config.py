"""member-retargeting configuration: the only place this service reads the environment."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from email.utils import parseaddr
from pathlib import Path

from services.member_retargeting.delivery.smtp import SmtpSettings
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


def _rates(text: str) -> dict[str, float]:
    """``email=50,sms=5`` → messages a second per channel."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        channel, _, rate = part.partition("=")
        try:
            rates[channel.strip()] = float(rate)
        except ValueError as exc:
            raise ConfigError(f"RETARGETING_RATES: {part!r} is not channel=per-second") from exc
        if rates[channel.strip()] <= 0:
            raise ConfigError(f"RETARGETING_RATES: {part!r} must be above 0")
    return rates


@dataclass(frozen=True)
class DeliveryConfig:
    """The dispatcher (:mod:`.delivery`): where mail goes, where webhooks go, how fast,
    how it retries, and the public address its links point at."""

    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    sender_address: str = "marketing@funnel.localhost"
    sender_name: str = "Funnel"
    # Where the unsubscribe, click and open links land: this service, as the public sees it.
    public_url: str = "http://127.0.0.1:8003"
    # Webhook, SMS and WhatsApp dispatches: one JSON POST each, signed with the secret.
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_timeout_seconds: float = 10.0
    rates: dict[str, float] = field(default_factory=lambda: {"email": 50.0})
    default_rate: float = 20.0
    max_attempts: int = 10
    retry_base_seconds: float = 5.0
    retry_ceiling_seconds: float = 3600.0
    breaker_base_seconds: float = 1.0
    breaker_ceiling_seconds: float = 60.0
    # A claim not finished in this time (its dispatcher died) is taken up again.
    lease_seconds: float = 60.0
    batch: int = 100
    poll_seconds: float = 0.5
    # A dispatch not delivered within this time is given up (failed, with a dead letter).
    max_age_hours: float = 72.0
    # Finished deliveries (with their addresses and messages) are kept this long.
    retention_days: int = 30

    def rate(self, channel: str) -> float:
        return self.rates.get(channel, self.default_rate)

    @classmethod
    def from_env(cls, env: Env) -> DeliveryConfig:
        name, address = parseaddr(env.text("RETARGETING_MAIL_FROM", ""))
        security = env.text("RETARGETING_SMTP_SECURITY", "none")
        if security not in ("none", "starttls", "ssl"):
            raise ConfigError("RETARGETING_SMTP_SECURITY must be none, starttls or ssl")
        webhook_url = env.text("RETARGETING_WEBHOOK_URL", "")
        webhook_secret = env.text("RETARGETING_WEBHOOK_SECRET", "")
        if webhook_url and not webhook_secret:
            raise ConfigError("RETARGETING_WEBHOOK_SECRET must be set with RETARGETING_WEBHOOK_URL")
        return cls(
            smtp=SmtpSettings(
                host=env.text("RETARGETING_SMTP_HOST", "127.0.0.1"),
                port=env.integer("RETARGETING_SMTP_PORT", 1025),
                security=security,
                username=env.text("RETARGETING_SMTP_USERNAME", ""),
                password=env.text("RETARGETING_SMTP_PASSWORD", ""),
                timeout=env.number("RETARGETING_SMTP_TIMEOUT_SECONDS", 30.0),
            ),
            sender_address=address or cls.sender_address,
            sender_name=name or (cls.sender_name if not address else ""),
            public_url=env.text("RETARGETING_PUBLIC_URL", cls.public_url),
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            rates={"email": 50.0, **_rates(env.text("RETARGETING_RATES", ""))},
            max_attempts=env.integer("RETARGETING_DELIVERY_MAX_ATTEMPTS", cls.max_attempts),
            retry_base_seconds=env.number("RETARGETING_RETRY_BASE_SECONDS", cls.retry_base_seconds),
            retry_ceiling_seconds=env.number(
                "RETARGETING_RETRY_CEILING_SECONDS", cls.retry_ceiling_seconds
            ),
            breaker_ceiling_seconds=env.number(
                "RETARGETING_BREAKER_CEILING_SECONDS", cls.breaker_ceiling_seconds
            ),
            lease_seconds=env.number("RETARGETING_DELIVERY_LEASE_SECONDS", cls.lease_seconds),
            poll_seconds=env.number("RETARGETING_DELIVERY_POLL_SECONDS", cls.poll_seconds),
            retention_days=env.integer("RETARGETING_DELIVERY_RETENTION_DAYS", cls.retention_days),
            max_age_hours=env.number("RETARGETING_DELIVERY_MAX_AGE_HOURS", cls.max_age_hours),
        )


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
    # What people did is kept this long for segments (orders are kept for lifetime value),
    # and so are the funnel journeys of visitors who never became leads.
    behaviour_days: int = 730
    schedule_poll_seconds: float = 1.0
    # Signs the marketing pages' session cookie; empty: derived from the tokens, so every
    # worker agrees without another secret to manage in development. Production needs it.
    secret_key: str = ""
    # Secrets used before a rotation (RETARGETING_PREVIOUS_SECRET_KEYS, comma-separated):
    # links in messages signed with them keep working (an unsubscribe link must, for
    # years), and so do page sessions. Keep a secret here as long as its messages matter.
    previous_secret_keys: tuple[str, ...] = ()
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        self.security.check(
            required={"RETARGETING_SECRET_KEY": self.secret_key},
            secrets=[
                *self.tokens.by_variable().items(),
                ("RETARGETING_WEBHOOK_SECRET", self.delivery.webhook_secret),
                *(("RETARGETING_PREVIOUS_SECRET_KEYS", k) for k in self.previous_secret_keys),
            ],
        )
        if self.security.production:
            if not self.delivery.public_url.startswith("https://"):
                raise ConfigError(
                    "RETARGETING_PUBLIC_URL must be an https:// URL when FUNNEL_ENV=production "
                    "(one-click unsubscribe links must be HTTPS, RFC 8058)"
                )
            if self.delivery.smtp.password and self.delivery.smtp.security == "none":
                raise ConfigError(
                    "RETARGETING_SMTP_SECURITY must be starttls or ssl when "
                    "RETARGETING_SMTP_PASSWORD is set and FUNNEL_ENV=production"
                )

    @property
    def link_keys(self) -> tuple[str, ...]:
        """Sign the links in messages (unsubscribe, clicks, opens), oldest first: the last
        signs, every one verifies. Derived from the pages secret and the previous ones
        (production requires a secret), else — development — from the tokens, so the
        dispatcher and every web worker agree without another setting."""
        current = self.secret_key or "|".join(self.tokens.by_variable().values())
        return tuple(_link_key(base) for base in (*self.previous_secret_keys, current))

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
            previous_secret_keys=env.words("RETARGETING_PREVIOUS_SECRET_KEYS"),
            delivery=DeliveryConfig.from_env(env),
            log_level=env.text("FUNNEL_LOG_LEVEL", cls.log_level),
        )


def _link_key(base: str) -> str:
    return hashlib.sha256(f"funnel-links:{base}".encode()).hexdigest()
