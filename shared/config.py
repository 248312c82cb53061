"""Typed reading of the environment.

Each service has one ``config.py`` that calls these helpers once, in ``from_env()``;
nothing else in the code base reads ``os.environ``. Missing values take the documented
defaults; malformed values raise :class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """An environment variable holds a value of the wrong type."""


class Env:
    """A read-only view of an environment mapping with typed getters."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)

    def as_dict(self) -> dict[str, str]:
        """A copy of the whole environment, for a process that starts children."""
        return dict(self._environ)

    def text(self, name: str, default: str) -> str:
        value = self._environ.get(name, "")
        return value if value != "" else default

    def optional(self, name: str) -> str | None:
        value = self._environ.get(name, "")
        return value or None

    def integer(self, name: str, default: int) -> int:
        raw = self._environ.get(name, "")
        if raw == "":
            return default
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc

    def number(self, name: str, default: float) -> float:
        raw = self._environ.get(name, "")
        if raw == "":
            return default
        try:
            return float(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from exc

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name, "").strip().lower()
        if raw == "":
            return default
        if raw in {"1", "true", "yes", "on"}:
            return True
        if raw in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name} must be a boolean, got {raw!r}")


@dataclass(frozen=True)
class KafkaConfig:
    """Where the broker is and how clients talk to it.

    ``bootstrap_servers`` unset means "development": ``deploy.run`` starts the embedded
    broker on 127.0.0.1:9092 and exports the address to every process it starts.
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    # Tansu joins a group after ~session_timeout/2; these values keep dev joins ~3 s and
    # are valid for Apache Kafka too.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    client_id_prefix: str = "funnel"
    # Processed event ids (and sent outbox rows) are kept this long: at least the
    # retention of every consumed topic, so no redelivery is applied twice.
    dedupe_horizon_days: float = 14.0

    @classmethod
    def from_env(cls, env: Env) -> KafkaConfig:
        return cls(
            bootstrap_servers=env.text("KAFKA_BOOTSTRAP_SERVERS", cls.bootstrap_servers),
            session_timeout_ms=env.integer("KAFKA_SESSION_TIMEOUT_MS", cls.session_timeout_ms),
            heartbeat_interval_ms=env.integer(
                "KAFKA_HEARTBEAT_INTERVAL_MS", cls.heartbeat_interval_ms
            ),
            dedupe_horizon_days=env.number("FUNNEL_DEDUPE_HORIZON_DAYS", cls.dedupe_horizon_days),
        )


@dataclass(frozen=True)
class Tokens:
    """Bearer tokens per role. A role whose token is empty cannot be used."""

    sales: str = ""
    marketing: str = ""
    admin: str = ""

    @classmethod
    def from_env(cls, env: Env) -> Tokens:
        return cls(
            sales=env.text("FUNNEL_SALES_TOKEN", ""),
            marketing=env.text("FUNNEL_MARKETING_TOKEN", ""),
            admin=env.text("FUNNEL_ADMIN_TOKEN", ""),
        )

    def by_role(self) -> dict[str, str]:
        return {"sales": self.sales, "marketing": self.marketing, "admin": self.admin}


def default_sqlite_url(var_dir: Path, service: str) -> str:
    """The development database: a SQLite file under ``var/``."""
    return f"sqlite:///{(var_dir / f'{service}.db').resolve()}"
