"""The whole funnel as `make run` starts it: embedded broker, three gunicorn APIs, the
relay and two consumers as processes. One visitor's journey, asserted at every step
through the public APIs and the Kafka topics:

anonymous page views → identify → form → MQL → Order Completed → member → campaign →
dispatch on Kafka → the e-mail in the mail sink, delivered in the report. Then SIGTERM
stops everything cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.broker import free_port
from shared.config import KafkaConfig
from shared.topics import DISPATCH, LEADS, MEMBERS
from tests.conftest import wait_for
from tests.helpers import TopicReader

pytestmark = pytest.mark.e2e

CREDENTIALS = {
    "FUNNEL_WRITE_KEY": "e2e-write-key",
    "FUNNEL_SALES_TOKEN": "e2e-sales",
    "FUNNEL_MARKETING_TOKEN": "e2e-marketing",
    "FUNNEL_ADMIN_TOKEN": "e2e-admin",
}


@dataclass
class Funnel:
    process: subprocess.Popen[bytes]
    intake: str
    scoring: str
    retargeting: str
    kafka: KafkaConfig
    log: Path
    mail_page: str

    def track(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(
            f"{self.intake}/v1/{call}",
            json=body,
            auth=(CREDENTIALS["FUNNEL_WRITE_KEY"], ""),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def sales(self, path: str) -> Any:
        response = requests.get(
            f"{self.scoring}{path}",
            timeout=10,
            headers={"Authorization": f"Bearer {CREDENTIALS['FUNNEL_SALES_TOKEN']}"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    def marketing(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(
            method,
            f"{self.retargeting}{path}",
            timeout=10,
            headers={"Authorization": f"Bearer {CREDENTIALS['FUNNEL_MARKETING_TOKEN']}"},
            **kw,
        )


@pytest.fixture(scope="module")
def funnel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Funnel]:
    var = tmp_path_factory.mktemp("funnel-var")
    # Picked here, just before deploy.run binds them: a port picked at collection time can
    # be handed to an outgoing connection by the time the test runs.
    names = ("BROKER", "INTAKE", "SCORING", "RETARGETING", "MAIL_PAGE")
    ports = {name: free_port() for name in names}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_DATABASE_URL") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(CREDENTIALS)
    env.update({f"FUNNEL_{k}_PORT": str(v) for k, v in ports.items()})
    env.update({"FUNNEL_VAR_DIR": str(var), "GUNICORN_WORKERS": "1"})
    env.pop("RETARGETING_SMTP_HOST", None)  # the mail sink make run starts catches e-mail
    env.update({"RETARGETING_SMTP_PORT": str(free_port())})
    log = var / "run.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parents[2],
        )
    f = Funnel(
        process,
        f"http://127.0.0.1:{ports['INTAKE']}",
        f"http://127.0.0.1:{ports['SCORING']}",
        f"http://127.0.0.1:{ports['RETARGETING']}",
        KafkaConfig(bootstrap_servers=f"127.0.0.1:{ports['BROKER']}"),
        log,
        f"http://127.0.0.1:{ports['MAIL_PAGE']}",
    )

    def healthy() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return all(
                requests.get(f"{u}/healthz", timeout=3).ok
                for u in (f.intake, f.scoring, f.retargeting)
            )
        except requests.RequestException:  # still booting
            return False

    try:
        wait_for(healthy, timeout=60, message="all three APIs healthy")
        yield f
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                process.kill()
                raise


def test_make_run_prints_urls_and_the_configured_credentials(funnel: Funnel) -> None:
    text = wait_for(
        lambda: "Ctrl-C stops everything" in funnel.log.read_text() and funnel.log.read_text(),
        message="banner",
    )
    assert funnel.intake in str(text) and f"{funnel.scoring}/app/" in str(text)
    for value in CREDENTIALS.values():
        assert value in str(text)


def test_the_whole_journey(funnel: Funnel) -> None:
    leads_topic = TopicReader(funnel.kafka, LEADS)
    dispatch_topic = TopicReader(funnel.kafka, DISPATCH)
    members_topic = TopicReader(funnel.kafka, MEMBERS)
    anon, user, email = "visitor-1", "user-1", "grace@example.com"
    try:
        # 1. Anonymous page views: a subscriber lead with points.
        funnel.track("page", {"anonymousId": anon, "properties": {"path": "/"}})
        funnel.track("page", {"anonymousId": anon, "properties": {"path": "/pricing"}})
        [lead] = wait_for(
            lambda: [x for x in funnel.sales("/leads")["items"] if x["score"] == 12],
            message="anonymous lead scored 12",
        )
        assert lead["stage"] == "subscriber" and lead["email"] is None

        # 2. identify with an email ties the earlier activity to the known lead.
        funnel.track(
            "identify",
            {
                "anonymousId": anon,
                "userId": user,
                "traits": {"email": email, "name": "Grace"},
                # Messages yes, ads no: honoured at every send and export below.
                "context": {
                    "consent": {"categoryPreferences": {"marketing": True, "advertising": False}}
                },
            },
        )
        wait_for(
            lambda: funnel.sales(f"/leads/{lead['id']}")["stage"] == "lead", message="stage lead"
        )
        detail = funnel.sales(f"/leads/{lead['id']}")
        assert (detail["email"], detail["score"]) == (email, 17)
        assert detail["anonymous_ids"] == [anon]

        # 3. A form fill crosses the MQL threshold.
        funnel.track(
            "track", {"userId": user, "event": "Form Submitted", "properties": {"form": "demo"}}
        )
        wait_for(lambda: funnel.sales("/leads?stage=mql")["total"] == 1, message="MQL")
        detail = funnel.sales(f"/leads/{lead['id']}")
        assert detail["score"] == 67
        assert sum(p["points"] for p in detail["score_explained"]["points"]) == 67
        assert "form-submitted" in {p["rule_id"] for p in detail["score_explained"]["points"]}

        # Marketing sees the MQL who has not bought.
        created = funnel.marketing(
            "POST",
            "/campaigns",
            json={
                "name": "MQLs who did not buy",
                "segment": {"stages": ["mql"]},
                "message": {"subject": "Still thinking?", "body": "A demo is one click away"},
            },
        )
        assert created.status_code == 201
        nurture = created.json()
        wait_for(
            lambda: (
                funnel.marketing("GET", f"/campaigns/{nurture['id']}").json()["current_audience"]
                == 1
            ),
            message="MQL visible to retargeting",
        )

        # 4. The purchase: customer in scoring, member in retargeting.
        funnel.track(
            "track",
            {
                "userId": user,
                "event": "Order Completed",
                "properties": {"revenue": 499, "currency": "USD"},
            },
        )
        wait_for(
            lambda: funnel.sales(f"/leads/{lead['id']}")["stage"] == "customer", message="customer"
        )
        members = wait_for(
            lambda: funnel.marketing("GET", "/members").json()["items"], message="member"
        )
        # The shared marketing token sees e-mails masked (no PII grant).
        assert [(m["lead_id"], m["email"], m["orders"], m["revenue"]) for m in members] == [
            (lead["id"], "g***@e***.com", 1, "499.00")
        ]
        assert (
            funnel.marketing("GET", f"/campaigns/{nurture['id']}").json()["current_audience"] == 0
        )

        enrolled = members_topic.wait(
            lambda vs: any(v["payload"]["change"] == "enrolled" for v in vs)
        )
        assert [v["payload"]["member"]["contact_id"] for v in enrolled] == [lead["id"]]

        # 5. A campaign to members, triggered: the scheduler process sends, one dispatch
        # per recipient on Kafka.
        created = funnel.marketing(
            "POST",
            "/campaigns",
            json={
                "name": "Members come back",
                "segment": {"members": True},
                "message": {"subject": "Thank you", "body": "Members save 10%"},
            },
        )
        campaign = created.json()
        triggered = funnel.marketing(
            "POST", f"/campaigns/{campaign['id']}/runs", json={"idempotency_key": "journey"}
        )
        assert triggered.status_code == 202 and triggered.json()["audience_size"] == 1
        dispatches = dispatch_topic.wait(
            lambda vs: any(v["payload"]["campaign_id"] == campaign["id"] for v in vs)
        )
        mine = [v for v in dispatches if v["payload"]["campaign_id"] == campaign["id"]]
        assert [(v["payload"]["contact_id"], v["payload"]["email"]) for v in mine] == [
            (lead["id"], email)
        ]
        report = wait_for(
            lambda: (
                (r := funnel.marketing("GET", f"/campaigns/{campaign['id']}").json())[
                    "published_count"
                ]
                == 1
                and r
            ),
            message="dispatch published",
        )
        assert report["dispatched_count"] == 1  # type: ignore[index]

        # 6. The dispatcher sends it: the mail sink's page lists the e-mail, and the
        # delivery status comes back into the campaign report.
        def caught() -> str:
            try:
                page = requests.get(f"{funnel.mail_page}/", timeout=3).text
            except requests.RequestException:
                return ""
            return page if "Thank you" in page else ""

        page = str(wait_for(caught, timeout=60, message="the e-mail in the mail sink"))
        assert email in page
        wait_for(
            lambda: (
                funnel.marketing("GET", f"/campaigns/{campaign['id']}").json()["delivery"]["sent"]
                == 1
            ),
            timeout=60,
            message="delivered, in the report",
        )

        # The lead topic carried each stage change exactly once, in order.
        values = leads_topic.wait(
            lambda vs: any(
                v["type"] == "lead.stage_changed" and v["payload"]["to_stage"] == "customer"
                for v in vs
            )
        )
        stages = [
            v["payload"]["to_stage"]
            for v in values
            if v["type"] == "lead.stage_changed" and v["payload"]["lead"]["lead_id"] == lead["id"]
        ]
        assert stages == ["lead", "mql", "customer"]
    finally:
        leads_topic.close()
        dispatch_topic.close()
        members_topic.close()


def test_sigterm_stops_every_process(funnel: Funnel) -> None:
    funnel.process.send_signal(signal.SIGTERM)
    assert funnel.process.wait(timeout=45) == 0
    leftovers = subprocess.run(
        ["pgrep", "-f", f"127.0.0.1:{funnel.intake.rsplit(':', 1)[1]}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert leftovers == []
