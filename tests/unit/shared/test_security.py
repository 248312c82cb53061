"""Every service in a browser and against guessing: headers on every response, Swagger UI
under its own CSP, cookie flags, CSRF on sign-in, and failed attempts throttled per
address (with a 429 a valid token gets too while the address is throttled)."""

from __future__ import annotations

import gzip
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from shared.config import SecurityConfig, Tokens
from shared.http import PERSON_TOKENS, SIGN_IN_THROTTLE, Principal
from shared.ratelimit import FailureThrottle
from shared.security import API_CSP, DOCS_CSP, PAGE_CSP, csp_hash
from tests.helpers import form_csrf, login_csrf, page_login

TOKENS = Tokens(sales="sales-t", marketing="marketing-t", admin="admin-t")
WRITE_KEY = "wk-test"

# service → (a view behind a role token, that role's token, the role pages take or None)
SERVICES: dict[str, tuple[str, str, str | None]] = {
    "intake": ("/admin/sources", "admin-t", None),
    "scoring": ("/leads", "sales-t", "sales-t"),
    "retargeting": ("/segments", "marketing-t", "marketing-t"),
}
PAGE_SERVICES = [name for name, (_, _, page) in SERVICES.items() if page]


def build(service: str, tmp_path: Path, **config: Any) -> Flask:
    """A service's app on a SQLite file with its tables."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{tmp_path / f'{service}.db'}"
    config.setdefault("tokens", TOKENS)
    if service == "intake":
        from services.traffic_intake import app as intake
        from services.traffic_intake.config import IntakeConfig
        from services.traffic_intake.state import STATE as INTAKE

        app = intake.create_app(IntakeConfig(database_url=url, write_keys=(WRITE_KEY,), **config))
        intake.init_db(app.extensions[INTAKE].engine)
    elif service == "scoring":
        from services.lead_scoring import app as scoring
        from services.lead_scoring.config import ScoringConfig
        from services.lead_scoring.state import STATE

        app = scoring.create_app(ScoringConfig(database_url=url, **config))
        scoring.init_db(app.extensions[STATE].engine)
    else:
        from services.member_retargeting import app as retargeting
        from services.member_retargeting.config import RetargetingConfig
        from services.member_retargeting.state import STATE

        app = retargeting.create_app(RetargetingConfig(database_url=url, **config))
        retargeting.init_db(app.extensions[STATE].engine)
    return app


@pytest.fixture(params=list(SERVICES))
def service(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=PAGE_SERVICES)
def page_service(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def frozen_clock(app: Flask) -> Clock:
    """The app's throttle on a clock the test moves (no sleeping)."""
    clock = Clock()
    throttle = app.extensions[SIGN_IN_THROTTLE]
    assert isinstance(throttle, FailureThrottle)
    throttle.buckets.clock = clock
    return clock


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_baseline(response: Any, csp: str) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Content-Security-Policy"] == csp
    assert "frame-ancestors 'none'" in csp
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP here


# --------------------------------------------------------------------------- headers


def test_json_responses_carry_the_headers_and_credentials_are_not_cached(
    service: str, tmp_path: Path
) -> None:
    path, token, _ = SERVICES[service]
    client = build(service, tmp_path).test_client()
    for response in (
        client.get("/healthz"),
        client.get("/no-such-endpoint"),
        client.get("/openapi.json"),
    ):
        assert_baseline(response, API_CSP)
        assert "no-store" not in response.headers.get("Cache-Control", "")
    ok = client.get(path, headers=bearer(token))
    assert ok.status_code == 200 and ok.is_json
    assert_baseline(ok, API_CSP)
    assert ok.headers["Cache-Control"] == "no-store"
    refused = client.get(path, headers=bearer("nope"))
    assert refused.status_code == 401
    assert_baseline(refused, API_CSP)
    assert refused.headers["Cache-Control"] == "no-store"


def test_hsts_only_over_https(service: str, tmp_path: Path) -> None:
    client = build(service, tmp_path).test_client()
    assert "Strict-Transport-Security" not in client.get("/healthz").headers
    secure = client.get("/healthz", base_url="https://funnel.example")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")
    assert secure.headers["X-Frame-Options"] == "DENY"


def test_pages_carry_the_page_policy_and_are_never_cached(
    page_service: str, tmp_path: Path
) -> None:
    client = build(page_service, tmp_path).test_client()
    for response in (client.get("/app/login"), client.get("/app/"), client.get("/app/nope")):
        assert response.status_code in {200, 302, 404}
        assert_baseline(response, PAGE_CSP)
        assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/app/nope").mimetype == "text/html"


def test_page_policy_allows_no_script_but_the_one_handler_the_pages_use() -> None:
    directives = dict(d.strip().split(" ", 1) for d in PAGE_CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == f"'unsafe-hashes' {csp_hash('this.form.submit()')}"
    assert directives["form-action"] == "'self'"
    assert directives["base-uri"] == "'none'"
    templates = Path(__file__).parents[3] / "services"
    handlers = set()
    for template in templates.glob("*/web/templates/*.html"):
        text = template.read_text()
        assert "<script" not in text, template
        handlers |= set(re.findall(r'\son[a-z]+="([^"]*)"', text))
    # Every inline handler a page uses is allowed, and only those.
    assert handlers == {"this.form.submit()"}


def test_docs_render_with_only_their_own_assets_and_a_policy_allowing_them(
    service: str, tmp_path: Path
) -> None:
    client = build(service, tmp_path).test_client()
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.mimetype == "text/html"
    assert_baseline(docs, DOCS_CSP)
    page = docs.text
    assert 'id="swagger-ui"' in page
    # No inline script (the policy allows none): every <script> loads a file.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/_static/swagger-ui/swagger-ui-bundle.js" in sources
    assert "/_static/swagger-ui/swagger-ui.css" in sources
    for source in sources:  # script-src 'self', style-src 'self': same origin only
        assert source.startswith("/") and not source.startswith("//"), source
        asset = client.get(source)
        assert asset.status_code == 200, source
        assert asset.mimetype in {"text/javascript", "application/javascript", "text/css"}
    assert "validatorUrl: null" in client.get("/_static/funnel-docs.js").text  # no swagger.io
    spec_url = re.search(r'data-spec-url="([^"]+)"', page)
    assert spec_url is not None
    assert client.get(spec_url.group(1)).json["openapi"].startswith("3.")  # connect-src 'self'
    css = client.get("/_static/swagger-ui/swagger-ui.css").text
    # What the stylesheet loads: data: images only (img-src 'self' data:), nothing remote.
    loads = re.findall(r"url\(\s*['\"]?([a-z]+:|//)", css)
    assert loads and set(loads) == {"data:"}
    assert "script-src 'self';" in DOCS_CSP and "unsafe" not in DOCS_CSP.split("style-src")[0]


def test_middleware_errors_carry_the_headers_too(tmp_path: Path) -> None:
    client = build("intake", tmp_path).test_client()
    corrupt = client.post(
        "/v1/track",
        data=gzip.compress(b"{}")[:-4] + b"oops",
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert corrupt.status_code == 400
    assert_baseline(corrupt, API_CSP)


# --------------------------------------------------------------------------- cookies


@pytest.mark.parametrize(
    ("security", "secure"),
    [
        (SecurityConfig(), False),
        (SecurityConfig(cookie_secure=True), True),
    ],
)
def test_session_cookie_flags(
    page_service: str, tmp_path: Path, security: SecurityConfig, secure: bool
) -> None:
    client = build(page_service, tmp_path, security=security).test_client()
    response = client.get("/app/login")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert ("Secure" in cookie) is secure


def test_production_cookies_are_secure(page_service: str, tmp_path: Path) -> None:
    strong = {
        "tokens": Tokens(sales=secrets.token_urlsafe(24), marketing=secrets.token_urlsafe(24)),
        "secret_key": secrets.token_urlsafe(32),
        "security": SecurityConfig(production=True),
    }
    if page_service == "retargeting":
        from services.member_retargeting.config import DeliveryConfig

        strong["delivery"] = DeliveryConfig(public_url="https://mail.example.com")
    client = build(page_service, tmp_path, **strong).test_client()
    assert "Secure" in client.get("/app/login").headers["Set-Cookie"]


# --------------------------------------------------------------------------- sign-in CSRF


def test_a_rotated_pages_secret_keeps_sessions_while_it_is_listed_as_previous(
    page_service: str, tmp_path: Path
) -> None:
    _, token, _ = SERVICES[page_service]
    old, new = "old-pages-secret-" * 2, "new-pages-secret-" * 2
    before = build(page_service, tmp_path / "a", secret_key=old).test_client()
    page_login(before, token)
    cookie = before.get_cookie("session")
    assert cookie is not None

    def home(**config: Any) -> int:
        client = build(page_service, tmp_path / str(len(config)), **config).test_client()
        client.set_cookie("session", cookie.value)
        return client.get("/app/").status_code

    assert home(secret_key=new, previous_secret_keys=(old,)) == 200
    assert home(secret_key=new) == 302  # the old secret dropped: signed out, to the login


def test_sign_in_needs_the_forms_csrf_token(page_service: str, tmp_path: Path) -> None:
    _, _, token = SERVICES[page_service]
    app = build(page_service, tmp_path)
    client = app.test_client()
    form = client.get("/app/login")
    assert form.status_code == 200
    csrf = form_csrf(form.text)
    for data in (
        {"token": token},
        {"token": token, "csrf": "forged"},
        {"token": token, "csrf": ""},
        {"token": token, "csrf": "jöö"},  # not ASCII: still a plain 400
    ):
        refused = client.post("/app/login", data=data)
        assert refused.status_code == 400
        assert refused.mimetype == "text/html" and "invalid form token" in refused.text
    other = app.test_client()  # a token from another visitor's session does not do either
    assert login_csrf(other) != csrf
    assert other.post("/app/login", data={"token": token, "csrf": csrf}).status_code == 400
    fresh = app.test_client()  # nor does a form posted without ever loading it
    assert fresh.post("/app/login", data={"token": token, "csrf": csrf}).status_code == 400
    done = client.post("/app/login", data={"token": token, "csrf": csrf})
    assert done.status_code == 302
    assert form_csrf(client.get("/app/login").text) != csrf  # signing in made a new one


# --------------------------------------------------------------------------- throttling


def test_the_eleventh_unknown_bearer_token_from_an_address_gets_429(
    service: str, tmp_path: Path
) -> None:
    path, token, _ = SERVICES[service]
    app = build(service, tmp_path)
    clock = frozen_clock(app)
    client = app.test_client()
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.9.9.9"

    for _ in range(25):  # successes take nothing from the bucket
        assert client.get(path, headers=bearer(token)).status_code == 200
    for _ in range(5):  # nor does a request without a token
        assert client.get(path).status_code == 401
    for _ in range(10):
        assert client.get(path, headers=bearer("guess")).status_code == 401
    throttled = client.get(path, headers=bearer("guess"))
    assert throttled.status_code == 429
    assert throttled.json["error"]["code"] == "rate_limited"
    assert throttled.headers["Retry-After"] == "6"  # one failure's worth of 10 a minute
    assert_baseline(throttled, API_CSP)
    # The decision: while throttled, a valid token from that address is refused alike,
    # or a right guess would stand out; other addresses are unaffected.
    assert client.get(path, headers=bearer(token)).status_code == 429
    assert other.get(path, headers=bearer("guess")).status_code == 401
    assert other.get(path, headers=bearer(token)).status_code == 200
    clock.now += 6  # one failure's worth refilled: the valid token works again
    assert client.get(path, headers=bearer(token)).status_code == 200
    assert client.get(path, headers=bearer("guess")).status_code == 401
    assert client.get(path, headers=bearer("guess")).status_code == 429


def test_failed_sign_ins_are_throttled_as_pages(page_service: str, tmp_path: Path) -> None:
    _, token, _ = SERVICES[page_service]
    app = build(page_service, tmp_path)
    clock = frozen_clock(app)
    client = app.test_client()
    csrf = login_csrf(client)
    for _ in range(10):
        assert client.post("/app/login", data={"token": "guess", "csrf": csrf}).status_code == 401
    throttled = client.post("/app/login", data={"token": token, "csrf": csrf})
    assert throttled.status_code == 429
    assert throttled.mimetype == "text/html" and "<h1>429" in throttled.text
    assert throttled.headers["Retry-After"] == "6"
    assert throttled.headers["Content-Security-Policy"] == PAGE_CSP
    # The API shares the address's bucket: guessing there is refused too.
    assert client.get(SERVICES[page_service][0], headers=bearer("guess")).status_code == 429
    clock.now += 6
    assert client.post("/app/login", data={"token": token, "csrf": csrf}).status_code == 302


def test_behind_a_trusted_proxy_each_client_has_its_own_bucket_and_scheme(
    service: str, tmp_path: Path
) -> None:
    path, token, _ = SERVICES[service]

    def client_of(app: Flask, address: str) -> Any:
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = "10.0.0.1"  # the proxy, for every client
        client.environ_base["HTTP_X_FORWARDED_FOR"] = address
        client.environ_base["HTTP_X_FORWARDED_PROTO"] = "https"
        return client

    trusting = build(service, tmp_path / "a", security=SecurityConfig(trusted_proxies=1))
    frozen_clock(trusting)
    guesser, bystander = client_of(trusting, "198.51.100.7"), client_of(trusting, "203.0.113.9")
    assert [guesser.get(path, headers=bearer("guess")).status_code for _ in range(11)][-1] == 429
    answer = bystander.get(path, headers=bearer(token))
    assert answer.status_code == 200
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")  # TLS at the proxy
    # Trusting none (the default), every client is the proxy: one guesser locks all out,
    # and a client's own X-Forwarded-For names nobody.
    default = build(service, tmp_path / "b")
    frozen_clock(default)
    guesser, bystander = client_of(default, "198.51.100.7"), client_of(default, "203.0.113.9")
    assert [guesser.get(path, headers=bearer("guess")).status_code for _ in range(11)][-1] == 429
    answer = bystander.get(path, headers=bearer(token))
    assert answer.status_code == 429 and "Strict-Transport-Security" not in answer.headers


def test_throttle_can_be_set_and_turned_off(tmp_path: Path) -> None:
    path = SERVICES["scoring"][0]
    strict = build("scoring", tmp_path / "a", security=SecurityConfig(sign_in_failures=2))
    frozen_clock(strict)
    client = strict.test_client()
    statuses = [client.get(path, headers=bearer("guess")).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    off = build("scoring", tmp_path / "b", security=SecurityConfig(sign_in_failures=0))
    client = off.test_client()
    assert {client.get(path, headers=bearer("guess")).status_code for _ in range(30)} == {401}


# --------------------------------------------------------------------------- role tokens off


def person(token: str, role: str) -> Callable[[str], Principal | None]:
    def resolve(given: str) -> Principal | None:
        return Principal(role=role, person_id=7, name="Ada") if given == token else None

    return resolve


def test_role_tokens_off_leaves_only_personal_tokens(service: str, tmp_path: Path) -> None:
    path, token, _ = SERVICES[service]
    app = build(service, tmp_path, tokens=Tokens())  # what FUNNEL_ROLE_TOKENS=off gives
    role = next(role for role, value in TOKENS.by_role().items() if value == token)
    app.extensions[PERSON_TOKENS] = person("ada-personal-token", role)
    client = app.test_client()
    assert client.get(path, headers=bearer(token)).status_code == 401
    assert client.get(path, headers=bearer("ada-personal-token")).status_code == 200


def test_principals_are_not_granted_pii_by_default() -> None:
    assert Principal(role="marketing").pii is False
