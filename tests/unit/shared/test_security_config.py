"""Production mode: no service starts without its pages secret or with a weak credential;
role tokens can be turned off; development is left alone."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from services.lead_scoring.config import ScoringConfig
from services.member_retargeting.config import RetargetingConfig
from services.traffic_intake.config import IntakeConfig
from shared.config import ConfigError, Env, KafkaConfig, SecurityConfig, Tokens, secret_problem


def strong() -> str:
    return secrets.token_urlsafe(24)  # 32 characters, what `make run` generates


def production_env(**extra: str) -> dict[str, str]:
    env = {
        "FUNNEL_ENV": "production",
        "FUNNEL_WRITE_KEY": f"{strong()},{strong()}",
        "FUNNEL_SALES_TOKEN": strong(),
        "FUNNEL_MARKETING_TOKEN": strong(),
        "FUNNEL_ADMIN_TOKEN": strong(),
        "SCORING_SECRET_KEY": strong(),
        "RETARGETING_SECRET_KEY": strong(),
        "RETARGETING_PUBLIC_URL": "https://mail.example.com",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v != "<unset>"}


SERVICES: list[Any] = [IntakeConfig, ScoringConfig, RetargetingConfig]


@pytest.mark.parametrize(
    "value",
    [
        "short",
        "x" * 31,
        "a" * 64,
        "changeme" * 4,
        "Secret" * 6,
        "admin" * 7,
        "ab" * 16,
        "0123" * 8,
        "1234567890" * 4,
        "abababababababababababababababXY",
    ],
)
def test_weak_secrets_are_named_weak(value: str) -> None:
    assert secret_problem(value) is not None


def test_random_secrets_are_not_weak() -> None:
    for _ in range(200):
        assert secret_problem(secrets.token_urlsafe(24)) is None
        assert secret_problem(secrets.token_hex(16)) is None


@pytest.mark.parametrize("config", SERVICES)
def test_production_accepts_strong_credentials_and_makes_cookies_secure(config: Any) -> None:
    loaded = config.from_env(Env(production_env()))
    assert loaded.security.production and loaded.security.secure_cookies


@pytest.mark.parametrize(
    ("config", "variable"),
    [(ScoringConfig, "SCORING_SECRET_KEY"), (RetargetingConfig, "RETARGETING_SECRET_KEY")],
)
def test_production_refuses_pages_without_their_secret(config: Any, variable: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable} must be set"):
        config.from_env(Env(production_env(**{variable: "<unset>"})))
    with pytest.raises(ConfigError, match=f"{variable} is too weak"):
        config.from_env(Env(production_env(**{variable: "changeme"})))


@pytest.mark.parametrize("config", SERVICES)
@pytest.mark.parametrize(
    "variable", ["FUNNEL_SALES_TOKEN", "FUNNEL_MARKETING_TOKEN", "FUNNEL_ADMIN_TOKEN"]
)
@pytest.mark.parametrize("weak", ["changeme", "secret", "admin", "z" * 40, "short-token"])
def test_production_refuses_weak_role_tokens(config: Any, variable: str, weak: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable} is too weak for FUNNEL_ENV=production"):
        config.from_env(Env(production_env(**{variable: weak})))


def test_production_refuses_a_weak_write_key_among_strong_ones() -> None:
    env = production_env(FUNNEL_WRITE_KEY=f"{strong()},changeme")
    with pytest.raises(ConfigError, match="FUNNEL_WRITE_KEY is too weak"):
        IntakeConfig.from_env(Env(env))


def test_production_needs_https_links_and_tls_with_smtp_credentials() -> None:
    with pytest.raises(ConfigError, match="RETARGETING_PUBLIC_URL must be an https"):
        RetargetingConfig.from_env(
            Env(production_env(RETARGETING_PUBLIC_URL="http://mail.example.com"))
        )
    with pytest.raises(ConfigError, match="RETARGETING_SMTP_SECURITY must be starttls"):
        RetargetingConfig.from_env(Env(production_env(RETARGETING_SMTP_PASSWORD="pw-" + strong())))
    loaded = RetargetingConfig.from_env(
        Env(
            production_env(
                RETARGETING_SMTP_PASSWORD="pw-" + strong(), RETARGETING_SMTP_SECURITY="starttls"
            )
        )
    )
    assert loaded.delivery.smtp.security == "starttls"


def test_production_checks_configs_built_in_code_too() -> None:
    production = SecurityConfig(production=True)
    with pytest.raises(ConfigError, match="SCORING_SECRET_KEY"):
        ScoringConfig(database_url="sqlite://", security=production)
    with pytest.raises(ConfigError, match="FUNNEL_ADMIN_TOKEN"):
        IntakeConfig(
            database_url="sqlite://",
            write_keys=(),
            tokens=Tokens(admin="admin-t"),
            security=production,
        )


@pytest.mark.parametrize("config", SERVICES)
def test_production_without_role_tokens_needs_no_token_check(config: Any) -> None:
    env = production_env(FUNNEL_ROLE_TOKENS="off", FUNNEL_SALES_TOKEN="weak")
    loaded = config.from_env(Env(env))
    assert loaded.tokens == Tokens()


@pytest.mark.parametrize("config", SERVICES)
def test_development_takes_anything_as_before(config: Any) -> None:
    env = {"FUNNEL_WRITE_KEY": "wk", "FUNNEL_SALES_TOKEN": "s", "FUNNEL_ADMIN_TOKEN": "a"}
    loaded = config.from_env(Env(env))
    assert loaded.security == SecurityConfig()
    assert not loaded.security.secure_cookies
    assert loaded.tokens == Tokens(sales="s", admin="a")


def test_security_settings_from_the_environment() -> None:
    loaded = SecurityConfig.from_env(
        Env(
            {
                "FUNNEL_COOKIE_SECURE": "true",
                "FUNNEL_SIGN_IN_FAILURES": "3",
                "FUNNEL_SIGN_IN_WINDOW_SECONDS": "30",
                "FUNNEL_THROTTLE_MAX_ADDRESSES": "500",
            }
        )
    )
    assert loaded == SecurityConfig(
        cookie_secure=True,
        sign_in_failures=3,
        sign_in_window_seconds=30.0,
        throttle_max_addresses=500,
    )
    assert loaded.secure_cookies and not loaded.production
    with pytest.raises(ConfigError, match="FUNNEL_ENV"):
        SecurityConfig.from_env(Env({"FUNNEL_ENV": "prod"}))
    with pytest.raises(ConfigError, match="FUNNEL_COOKIE_SECURE"):
        SecurityConfig.from_env(Env({"FUNNEL_COOKIE_SECURE": "maybe"}))
    with pytest.raises(ConfigError, match="FUNNEL_THROTTLE_MAX_ADDRESSES"):
        SecurityConfig.from_env(Env({"FUNNEL_THROTTLE_MAX_ADDRESSES": "0"}))


def test_role_tokens_off() -> None:
    env = {"FUNNEL_SALES_TOKEN": "s", "FUNNEL_ROLE_TOKENS": "off"}
    assert Tokens.from_env(Env(env)) == Tokens()
    assert Tokens.from_env(Env({**env, "FUNNEL_ROLE_TOKENS": "on"})) == Tokens(sales="s")


def test_production_refuses_a_weak_metrics_token() -> None:
    with pytest.raises(ConfigError, match="FUNNEL_METRICS_TOKEN is too weak"):
        RetargetingConfig.from_env(Env(production_env(FUNNEL_METRICS_TOKEN="metrics")))
    loaded = IntakeConfig.from_env(Env(production_env(FUNNEL_METRICS_TOKEN=strong())))
    assert loaded.security.metrics_token


def test_the_fetch_wait_is_bounded() -> None:
    assert KafkaConfig.from_env(Env({})).fetch_max_wait_ms == 100
    assert KafkaConfig.from_env(Env({"KAFKA_FETCH_MAX_WAIT_MS": "250"})).fetch_max_wait_ms == 250
    for bad in ("0", "60000"):
        with pytest.raises(ConfigError, match="KAFKA_FETCH_MAX_WAIT_MS"):
            KafkaConfig.from_env(Env({"KAFKA_FETCH_MAX_WAIT_MS": bad}))


def test_trusted_proxies_is_one_setting_for_every_service_and_the_old_name_is_refused() -> None:
    env = {"FUNNEL_WRITE_KEY": "wk", "FUNNEL_TRUSTED_PROXIES": "2"}
    for config in (IntakeConfig, ScoringConfig, RetargetingConfig):
        assert config.from_env(Env(env)).security.trusted_proxies == 2  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="FUNNEL_TRUSTED_PROXIES"):
        IntakeConfig.from_env(Env({"FUNNEL_WRITE_KEY": "wk", "INTAKE_TRUSTED_PROXIES": "1"}))
    with pytest.raises(ConfigError, match="FUNNEL_TRUSTED_PROXIES must be 0 to 10"):
        SecurityConfig(trusted_proxies=-1)


def test_previous_secrets_are_read_checked_and_keep_the_current_one_signing() -> None:
    old, now = strong(), strong()
    env = production_env(RETARGETING_SECRET_KEY=now, RETARGETING_PREVIOUS_SECRET_KEYS=f"{old},")
    loaded = RetargetingConfig.from_env(Env(env))
    assert loaded.previous_secret_keys == (old,)
    newest = RetargetingConfig.from_env(Env(production_env(RETARGETING_SECRET_KEY=now)))
    assert loaded.link_keys[-1] == newest.link_keys[-1]  # the current secret signs
    assert len(set(loaded.link_keys)) == 2
    for config, variable in (
        (RetargetingConfig, "RETARGETING_PREVIOUS_SECRET_KEYS"),
        (ScoringConfig, "SCORING_PREVIOUS_SECRET_KEYS"),
    ):
        with pytest.raises(ConfigError, match=variable):
            config.from_env(Env(production_env(**{variable: f"{strong()},changeme"})))
        with pytest.raises(ConfigError, match="spaces around"):  # not trimmed into another
            config.from_env(Env(production_env(**{variable: f"{strong()}, {strong()}"})))
