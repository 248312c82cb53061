"""traffic-intake configuration: the only place this service reads the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.config import Env, KafkaConfig, default_sqlite_url

SERVICE = "traffic-intake"


@dataclass(frozen=True)
class IntakeConfig:
    database_url: str
    write_keys: tuple[str, ...]
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    source_name: str = "web"
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    max_batch_events: int = 2500
    dedupe_window_days: int = 7
    # How many reverse proxies in front of intake set X-Forwarded-For; 0 trusts none.
    trusted_proxies: int = 0
    relay_batch_size: int = 1000
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Env | None = None) -> IntakeConfig:
        env = env or Env()
        var_dir = Path(env.text("FUNNEL_VAR_DIR", "var"))
        keys = tuple(k.strip() for k in env.text("FUNNEL_WRITE_KEY", "").split(",") if k.strip())
        return cls(
            database_url=env.text(
                "TRAFFIC_INTAKE_DATABASE_URL", default_sqlite_url(var_dir, "traffic_intake")
            ),
            write_keys=keys,
            kafka=KafkaConfig.from_env(env),
            source_name=env.text("FUNNEL_SOURCE_NAME", cls.source_name),
            max_event_bytes=env.integer("INTAKE_MAX_EVENT_BYTES", cls.max_event_bytes),
            max_batch_bytes=env.integer("INTAKE_MAX_BATCH_BYTES", cls.max_batch_bytes),
            max_batch_events=env.integer("INTAKE_MAX_BATCH_EVENTS", cls.max_batch_events),
            dedupe_window_days=env.integer("INTAKE_DEDUPE_WINDOW_DAYS", cls.dedupe_window_days),
            trusted_proxies=env.integer("INTAKE_TRUSTED_PROXIES", cls.trusted_proxies),
            log_level=env.text("FUNNEL_LOG_LEVEL", cls.log_level),
        )
