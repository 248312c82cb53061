"""``/metrics`` on every service: the admin role and the scrape-only metrics token read
it; nobody else does, and the metrics token opens nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import SecurityConfig
from tests.unit.shared.test_security import SERVICES, TOKENS, build

SCRAPER = "a-scrape-only-token"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_metrics_need_the_admin_role_or_the_metrics_token(service: str, tmp_path: Path) -> None:
    client = build(service, tmp_path, security=SecurityConfig(metrics_token=SCRAPER)).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    other = TOKENS.sales if service != "scoring" else TOKENS.marketing
    assert client.get("/metrics", headers={"Authorization": f"Bearer {other}"}).status_code == 403
    for token in (TOKENS.admin, SCRAPER):
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and b"funnel_outbox_depth" in answer.data
    view, _, _ = SERVICES[service]  # a view of another role: the scraper gets 403
    assert client.get(view, headers={"Authorization": f"Bearer {SCRAPER}"}).status_code == 403
