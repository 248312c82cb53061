"""Typed reading of the environment.

Each service has one ``config.py`` that calls these helpers once, in ``from_env()``;
nothing else in the code base reads ``os.environ``. Missing values take the documented
defaults; malformed values raise :class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


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

    def words(self, name: str) -> tuple[str, ...]:
        """A comma-separated list of exact values, empty ones dropped (unset: none). A
        value with spaces around it is refused, not trimmed: for secrets, a trimmed
        value would be another secret (and old links would silently stop working)."""
        items = [w for w in self._environ.get(name, "").split(",") if w]
        if any(w != w.strip() for w in items):
            raise ConfigError(f"{name}: a value has spaces around it; list them exactly")
        return tuple(items)


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
    # How long the broker may hold a consumer's fetch when it has nothing new. Apache Kafka
    # answers as soon as a record arrives, so this only paces idle polling; the embedded
    # broker was measured holding fetches with records waiting (250 ms stalls at the 500 ms
    # default: end-to-end p99 0.5 s → 0.2 s at 100 ms, ``python -m bench.e2e``).
    fetch_max_wait_ms: int = 100
    client_id_prefix: str = "funnel"
    # Processed event ids (and sent outbox rows) are kept this long: at least the
    # retention of every consumed topic, so no redelivery is applied twice.
    dedupe_horizon_days: float = 14.0

    def __post_init__(self) -> None:
        # Below the clients' 10 s request timeout (make_producer / make_consumer), or a
        # fetch the broker holds would time out as a failure.
        if not 1 <= self.fetch_max_wait_ms <= 5000:
            raise ConfigError("KAFKA_FETCH_MAX_WAIT_MS must be between 1 and 5000")

    @classmethod
    def from_env(cls, env: Env) -> KafkaConfig:
        return cls(
            bootstrap_servers=env.text("KAFKA_BOOTSTRAP_SERVERS", cls.bootstrap_servers),
            session_timeout_ms=env.integer("KAFKA_SESSION_TIMEOUT_MS", cls.session_timeout_ms),
            heartbeat_interval_ms=env.integer(
                "KAFKA_HEARTBEAT_INTERVAL_MS", cls.heartbeat_interval_ms
            ),
            fetch_max_wait_ms=env.integer("KAFKA_FETCH_MAX_WAIT_MS", cls.fetch_max_wait_ms),
            dedupe_horizon_days=env.number("FUNNEL_DEDUPE_HORIZON_DAYS", cls.dedupe_horizon_days),
        )


@dataclass(frozen=True)
class Tokens:
    """Bearer tokens per role, shared by everyone holding them (development, machines).
    A role whose token is empty cannot be used. ``FUNNEL_ROLE_TOKENS=off`` turns them all
    off, whatever is set: then only personal tokens work."""

    sales: str = ""
    marketing: str = ""
    admin: str = ""

    ENV: ClassVar[Mapping[str, str]] = {
        "sales": "FUNNEL_SALES_TOKEN",
        "marketing": "FUNNEL_MARKETING_TOKEN",
        "admin": "FUNNEL_ADMIN_TOKEN",
    }

    @classmethod
    def from_env(cls, env: Env) -> Tokens:
        if not env.boolean("FUNNEL_ROLE_TOKENS", True):
            return cls()
        return cls(**{role: env.text(name, "") for role, name in cls.ENV.items()})

    def by_role(self) -> dict[str, str]:
        return {"sales": self.sales, "marketing": self.marketing, "admin": self.admin}

    def by_variable(self) -> dict[str, str]:
        """``{"FUNNEL_SALES_TOKEN": token, …}``, for checks that name the variable."""
        return {self.ENV[role]: token for role, token in self.by_role().items()}


# --------------------------------------------------------------------------- security

MIN_SECRET_LENGTH = 32
WEAK_SECRETS = frozenset(
    {
        "admin",
        "changeme",
        "change-me",
        "change_me",
        "default",
        "dev",
        "development",
        "letmein",
        "password",
        "pass",
        "qwerty",
        "secret",
        "test",
        "token",
        "123456",
        "12345678",
        "1234567890",
    }
)
_MIN_DISTINCT_CHARACTERS = 6
_SHORT_PATTERN = re.compile(r"(.{1,8}?)\1+", re.DOTALL)


def secret_problem(value: str) -> str | None:
    """Why ``value`` is too weak to guard production (a token, a write key, a signing
    key), or None: shorter than :data:`MIN_SECRET_LENGTH`, a known weak value (or one
    repeated), a short pattern repeated, or fewer than six distinct characters."""
    if len(value) < MIN_SECRET_LENGTH:
        return f"shorter than {MIN_SECRET_LENGTH} characters"
    folded = value.strip().lower()
    if folded in WEAK_SECRETS or any(
        folded == weak * (len(folded) // len(weak)) for weak in WEAK_SECRETS
    ):
        return "a well-known value"
    if _SHORT_PATTERN.fullmatch(value):
        return "a short pattern repeated"
    if len(set(value)) < _MIN_DISTINCT_CHARACTERS:
        return f"fewer than {_MIN_DISTINCT_CHARACTERS} distinct characters"
    return None


# More proxies than this in one request's path is a misconfiguration, not a deployment.
MAX_TRUSTED_PROXIES = 10


@dataclass(frozen=True)
class SecurityConfig:
    """How a service guards itself; every service's config carries one.

    ``production`` (``FUNNEL_ENV=production``; default ``development``): the service
    refuses to start without its pages secret or with a weak token or write key (see
    :meth:`check`), and its cookies are ``Secure``. ``cookie_secure``
    (``FUNNEL_COOKIE_SECURE``): ``Secure`` cookies outside production too — set it when
    a TLS proxy serves plain-HTTP development or staging services over HTTPS.

    Failed sign-ins and bearer attempts are throttled per client address:
    ``sign_in_failures`` (``FUNNEL_SIGN_IN_FAILURES``, 0 turns it off) per
    ``sign_in_window_seconds`` (``FUNNEL_SIGN_IN_WINDOW_SECONDS``), remembering at most
    ``throttle_max_addresses`` addresses per worker (``FUNNEL_THROTTLE_MAX_ADDRESSES``).
    The client address is the connection's unless ``trusted_proxies``
    (``FUNNEL_TRUSTED_PROXIES``, default 0) says how many reverse proxies in front of the
    service append to ``X-Forwarded-For`` / ``X-Forwarded-Proto``: then it is the address
    (and scheme) the outermost trusted proxy saw — the same count for both headers, so
    every trusted proxy must append to both (one that overwrites the scheme instead makes
    the count wrong for it: HSTS is then not sent). Behind a proxy and left at 0, every
    client shares the proxy's address: one client's guessing throttles them all. Set it
    higher than the proxies really there and a client can choose its own address.
    """

    production: bool = False
    cookie_secure: bool = False
    sign_in_failures: int = 10
    sign_in_window_seconds: float = 60.0
    throttle_max_addresses: int = 10_000
    # Audit log entries are kept this long (``FUNNEL_AUDIT_RETENTION_DAYS``), then pruned.
    audit_retention_days: int = 365
    # A bearer token that may read /metrics and nothing else (``FUNNEL_METRICS_TOKEN``),
    # for the Prometheus scraper; admin tokens may read it too.
    metrics_token: str = ""
    trusted_proxies: int = 0

    ENVIRONMENTS: ClassVar[tuple[str, ...]] = ("development", "production")

    @property
    def secure_cookies(self) -> bool:
        return self.production or self.cookie_secure

    def __post_init__(self) -> None:
        if self.sign_in_failures < 0:
            raise ConfigError("FUNNEL_SIGN_IN_FAILURES must be 0 (off) or more")
        if self.sign_in_window_seconds <= 0:
            raise ConfigError("FUNNEL_SIGN_IN_WINDOW_SECONDS must be more than 0")
        if self.throttle_max_addresses < 1:
            raise ConfigError("FUNNEL_THROTTLE_MAX_ADDRESSES must be at least 1")
        if self.audit_retention_days < 1:
            raise ConfigError("FUNNEL_AUDIT_RETENTION_DAYS must be at least 1")
        if not 0 <= self.trusted_proxies <= MAX_TRUSTED_PROXIES:
            raise ConfigError(f"FUNNEL_TRUSTED_PROXIES must be 0 to {MAX_TRUSTED_PROXIES}")

    @classmethod
    def from_env(cls, env: Env) -> SecurityConfig:
        mode = env.text("FUNNEL_ENV", "development").strip().lower()
        if mode not in cls.ENVIRONMENTS:
            raise ConfigError(
                f"FUNNEL_ENV must be one of {', '.join(cls.ENVIRONMENTS)}, got {mode!r}"
            )
        return cls(
            production=mode == "production",
            cookie_secure=env.boolean("FUNNEL_COOKIE_SECURE", cls.cookie_secure),
            sign_in_failures=env.integer("FUNNEL_SIGN_IN_FAILURES", cls.sign_in_failures),
            sign_in_window_seconds=env.number(
                "FUNNEL_SIGN_IN_WINDOW_SECONDS", cls.sign_in_window_seconds
            ),
            throttle_max_addresses=env.integer(
                "FUNNEL_THROTTLE_MAX_ADDRESSES", cls.throttle_max_addresses
            ),
            audit_retention_days=env.integer(
                "FUNNEL_AUDIT_RETENTION_DAYS", cls.audit_retention_days
            ),
            metrics_token=env.text("FUNNEL_METRICS_TOKEN", ""),
            trusted_proxies=env.integer("FUNNEL_TRUSTED_PROXIES", cls.trusted_proxies),
        )

    def check(
        self,
        *,
        required: Mapping[str, str] | None = None,
        secrets: Iterable[tuple[str, str]] = (),
    ) -> None:
        """In production: every ``required`` variable (name → value) must be set and
        strong, every configured (non-empty) one of ``secrets`` (name, value) strong;
        otherwise :class:`ConfigError` naming the variable. Outside production: nothing."""
        if not self.production:
            return
        for name, value in (required or {}).items():
            if not value:
                raise ConfigError(f"{name} must be set when FUNNEL_ENV=production")
        metrics = [("FUNNEL_METRICS_TOKEN", self.metrics_token)]
        for name, value in [*(required or {}).items(), *secrets, *metrics]:
            problem = secret_problem(value) if value else None
            if problem is not None:
                raise ConfigError(f"{name} is too weak for FUNNEL_ENV=production: {problem}")


def default_sqlite_url(var_dir: Path, service: str) -> str:
    """The development database: a SQLite file under ``var/``."""
    return f"sqlite:///{(var_dir / f'{service}.db').resolve()}"
