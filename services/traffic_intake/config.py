"""traffic-intake configuration: the only place this service reads the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.traffic_intake.origins import normal_origin
from shared.config import (
    ConfigError,
    Env,
    KafkaConfig,
    SecurityConfig,
    Tokens,
    default_sqlite_url,
)
from shared.limits import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES

SERVICE = "traffic-intake"


@dataclass(frozen=True)
class IntakeConfig:
    database_url: str
    write_keys: tuple[str, ...]
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    tokens: Tokens = field(default_factory=Tokens)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    source_name: str = "web"
    # A browser source from configuration (development, demos): its public key(s) and the
    # web origins allowed to use them. Sources made through the admin API live in the DB.
    browser_write_keys: tuple[str, ...] = ()
    browser_origins: tuple[str, ...] = ()
    browser_source_name: str = "browser"
    max_event_bytes: int = MAX_EVENT_BYTES
    max_batch_bytes: int = MAX_BATCH_BYTES
    max_batch_events: int = MAX_BATCH_EVENTS
    dedupe_window_days: int = 7
    # Rejected events (raw client payloads: person data) are kept this long.
    failed_retention_days: int = 30
    # Per write key, per worker process; 0 turns the limit off. Sources may override.
    rate_limit_per_second: float = 1000.0
    rate_limit_burst_seconds: float = 2.0  # a burst may spend this many seconds' worth
    source_cache_seconds: float = 5.0
    relay_batch_size: int = 1000
    # Group commit (:mod:`.group_commit`): concurrent requests' writes in one transaction
    # of at most this many rows (0: each request commits its own); the writer lingers up
    # to the wait only while more requests are on their way; at most this many writes
    # queue per process (beyond: 503), each waiting at most the timeout (then 503).
    group_commit_max_rows: int = 2000
    group_commit_wait_ms: float = 2.0
    group_commit_queue: int = 256
    group_commit_timeout_s: float = 10.0
    resubmit_limit: int = 10_000
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        self.security.check(
            secrets=[
                *self.tokens.by_variable().items(),
                *(("FUNNEL_WRITE_KEY", key) for key in self.write_keys),
            ]
        )

    @classmethod
    def from_env(cls, env: Env | None = None) -> IntakeConfig:
        env = env or Env()
        if env.optional("INTAKE_TRUSTED_PROXIES"):
            # Renamed when every service came to need it: a silent fallback to 0 would
            # stamp every event with the proxy's address.
            raise ConfigError(
                "INTAKE_TRUSTED_PROXIES is now FUNNEL_TRUSTED_PROXIES (read by every service)"
            )
        var_dir = Path(env.text("FUNNEL_VAR_DIR", "var"))
        keys = tuple(k.strip() for k in env.text("FUNNEL_WRITE_KEY", "").split(",") if k.strip())
        browser_keys = tuple(
            k.strip() for k in env.text("FUNNEL_BROWSER_WRITE_KEY", "").split(",") if k.strip()
        )
        origins = []
        for text in env.text("FUNNEL_BROWSER_ORIGINS", "").split(","):
            if not text.strip():
                continue
            origin = normal_origin(text)
            if origin is None:
                raise ConfigError(f"FUNNEL_BROWSER_ORIGINS: {text.strip()!r} is not an origin")
            origins.append(origin)
        return cls(
            database_url=env.text(
                "TRAFFIC_INTAKE_DATABASE_URL", default_sqlite_url(var_dir, "traffic_intake")
            ),
            write_keys=keys,
            browser_write_keys=browser_keys,
            browser_origins=tuple(origins),
            browser_source_name=env.text("FUNNEL_BROWSER_SOURCE_NAME", cls.browser_source_name),
            kafka=KafkaConfig.from_env(env),
            tokens=Tokens.from_env(env),
            security=SecurityConfig.from_env(env),
            source_name=env.text("FUNNEL_SOURCE_NAME", cls.source_name),
            max_event_bytes=env.integer("INTAKE_MAX_EVENT_BYTES", cls.max_event_bytes),
            max_batch_bytes=env.integer("INTAKE_MAX_BATCH_BYTES", cls.max_batch_bytes),
            max_batch_events=env.integer("INTAKE_MAX_BATCH_EVENTS", cls.max_batch_events),
            dedupe_window_days=env.integer("INTAKE_DEDUPE_WINDOW_DAYS", cls.dedupe_window_days),
            failed_retention_days=env.integer(
                "INTAKE_FAILED_RETENTION_DAYS", cls.failed_retention_days
            ),
            rate_limit_per_second=env.number(
                "INTAKE_RATE_LIMIT_PER_SECOND", cls.rate_limit_per_second
            ),
            rate_limit_burst_seconds=env.number(
                "INTAKE_RATE_LIMIT_BURST_SECONDS", cls.rate_limit_burst_seconds
            ),
            source_cache_seconds=env.number(
                "INTAKE_SOURCE_CACHE_SECONDS", cls.source_cache_seconds
            ),
            group_commit_max_rows=env.integer(
                "INTAKE_GROUP_COMMIT_MAX_ROWS", cls.group_commit_max_rows
            ),
            group_commit_wait_ms=env.number(
                "INTAKE_GROUP_COMMIT_WAIT_MS", cls.group_commit_wait_ms
            ),
            group_commit_queue=env.integer("INTAKE_GROUP_COMMIT_QUEUE", cls.group_commit_queue),
            group_commit_timeout_s=env.number(
                "INTAKE_GROUP_COMMIT_TIMEOUT_S", cls.group_commit_timeout_s
            ),
            resubmit_limit=env.integer("INTAKE_RESUBMIT_LIMIT", cls.resubmit_limit),
            log_level=env.text("FUNNEL_LOG_LEVEL", cls.log_level),
        )
