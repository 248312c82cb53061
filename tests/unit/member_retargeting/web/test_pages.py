"""The marketing pages through Flask's test client: sign-in bound to the marketing token,
CSRF, segments with counts and previews that name a bad rule's part, the campaign
builder, a run button that never starts two runs for one form, members, errors as pages.
(The same pages in a real browser: tests/e2e/test_marketing_pages.py.)"""

from __future__ import annotations

import json
import re

import pytest
from flask import Flask

from tests.helpers import login_csrf, page_login
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    create,
    did,
    feed,
    order,
    seed,
    stage,
    work_runs,
)


def signed_in(app: Flask) -> tuple[object, str]:
    client = app.test_client()
    return client, page_login(client, "marketing-t")


def test_sign_in_takes_the_marketing_token_only(app: Flask) -> None:
    client = app.test_client()
    redirect = client.get("/app/campaigns")
    assert redirect.status_code == 302 and "/app/login" in redirect.headers["Location"]
    csrf = login_csrf(client)
    assert client.post("/app/login", data={"token": "sales-t", "csrf": csrf}).status_code == 401
    assert client.post("/app/login", data={"token": "nope", "csrf": csrf}).status_code == 401
    away = client.post(
        "/app/login?next=https://evil.example/",
        data={"token": "marketing-t", "csrf": login_csrf(client)},
    )
    assert away.headers["Location"] == "/app/"  # never an open redirect
    back = client.post(
        "/app/login?next=/app/members", data={"token": "marketing-t", "csrf": login_csrf(client)}
    )
    assert back.headers["Location"] == "/app/members"
    assert client.post("/app/segments/preview", data={"rule": "{}"}).status_code == 400  # no CSRF


def test_segments_show_live_counts_and_previews_name_the_bad_part(app: Flask) -> None:
    seed(app)
    client, csrf = signed_in(app)
    page = client.get("/app/").text
    assert "Cart abandoners" in page and "Hot leads who did not buy" in page
    good = client.post(
        "/app/segments/preview",
        data={"csrf": csrf, "rule": json.dumps({"attribute": "stage", "op": "eq", "value": "mql"})},
    )
    assert good.status_code == 200
    assert re.search(r'id="preview-count">2<', good.text)
    assert "m***@x***.co" in good.text and "mql@x.co" not in good.text  # masked
    bad = client.post(
        "/app/segments/preview",
        data={"csrf": csrf, "rule": json.dumps({"all": [{"attribute": "tier", "op": "gt"}]})},
    )
    assert bad.status_code == 422 and "rule.all.0.op" in bad.text
    not_json = client.post("/app/segments/preview", data={"csrf": csrf, "rule": "{all"})
    assert not_json.status_code == 422 and "not JSON" in not_json.text


def test_a_segment_saved_from_the_page_is_listed_with_its_count(app: Flask) -> None:
    seed(app)
    client, csrf = signed_in(app)
    rule = json.dumps({"attribute": "is_member", "op": "eq", "value": True})
    saved = client.post("/app/segments", data={"csrf": csrf, "rule": rule, "name": "Buyers"})
    assert saved.status_code == 302
    listed = client.get("/segments", headers=MARKETING).json["items"]
    assert [(s["name"], s["count"]) for s in listed if not s["builtin"]] == [("Buyers", 1)]
    again = client.post(
        "/app/segments", data={"csrf": csrf, "rule": rule, "name": "Buyers"}, follow_redirects=True
    )
    assert "exists" in again.text
    nameless = client.post("/app/segments", data={"csrf": csrf, "rule": rule, "name": " "})
    assert nameless.status_code == 422 and "name" in nameless.text


def test_the_builder_creates_a_campaign_and_one_form_starts_one_run(app: Flask) -> None:
    seed(app)
    client, csrf = signed_in(app)
    created = client.post(
        "/app/campaigns",
        data={
            "csrf": csrf,
            "name": "Come back",
            "segment": json.dumps({"attribute": "stage", "op": "in", "value": ["mql", "lead"]}),
            "channel": "email",
            "kind": "marketing",
            "subject": "Hi {{ first_name | default('there') }}",
            "body": "We kept your {{ product }}",
        },
    )
    assert created.status_code == 302
    url = created.headers["Location"]
    page = client.get(url).text
    key = re.search(r'name="key" value="([^"]+)"', page)
    assert key is not None and "Not run yet" in page
    for _ in range(2):  # a double click, a resubmitted form
        client.post(f"{url}/run", data={"csrf": csrf, "key": key.group(1)})
    campaign_id = int(url.rsplit("/", 1)[1])
    detail = client.get(f"/campaigns/{campaign_id}", headers=MARKETING).json
    assert len(detail["runs"]) == 1
    assert 'http-equiv="refresh"' in client.get(url).text  # progress refreshes while it runs
    work_runs(app)
    done = client.get(url).text
    assert 'http-equiv="refresh"' not in done
    assert re.search(r'id="dispatched">2<', done)  # L1, L4 (L3 has no e-mail)
    assert "Skipped: no address" in done and "<svg" in done


def test_the_builder_shows_what_is_wrong_and_keeps_what_was_typed(app: Flask) -> None:
    client, csrf = signed_in(app)
    response = client.post(
        "/app/campaigns",
        data={
            "csrf": csrf,
            "name": "Typed name",
            "segment": "{}",
            "channel": "email",
            "subject": "{% for x in y %}",
            "body": "b",
        },
    )
    assert response.status_code == 422
    assert "message.subject" in response.text and 'value="Typed name"' in response.text


def test_members_page_shows_tier_rfm_and_affinity(app: Flask) -> None:
    feed(
        app,
        stage("G", "lead", email="g@x.co", user="g"),
        did("g", "Product Added", product_id="p9", name="Espresso machine", category="kitchen"),
        order("g", 2400),
    )
    work_runs(app)
    client, _ = signed_in(app)
    page = client.get("/app/members").text
    assert "g***@x***.co" in page and "g@x.co" not in page and 'class="tag gold"' in page
    assert "Espresso machine" in page and "kitchen" in page
    assert client.get("/app/members?tier=silver").text.count("data-member=") == 0


def test_errors_under_app_are_pages(app: Flask) -> None:
    seed(app)
    create(app.test_client(), {"all": []})
    client, _ = signed_in(app)
    missing = client.get("/app/campaigns/999")
    assert missing.status_code == 404 and missing.content_type.startswith("text/html")
    assert "no campaign 999" in missing.text


# Regression (review finding 7): hostile but valid values were 500s in the pages too, and a
# rule saved through them then broke every list that shows counts.
POISON = {"attribute": "days_since_last_order", "op": "gte", "value": 10**7}


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/app/segments/preview", {"rule": json.dumps(POISON)}),
        ("/app/segments", {"name": "old", "rule": json.dumps(POISON)}),
        ("/app/segments", {"name": "n\u0000", "rule": '{"all": []}'}),
        (
            "/app/campaigns",
            {
                "name": "x",
                "segment": json.dumps({"attribute": "score", "op": "gt", "value": 10**30}),
                "channel": "email",
                "kind": "marketing",
                "subject": "s",
                "body": "b",
            },
        ),
        (
            "/app/campaigns",
            {
                "name": "x\u0000",
                "segment": '{"all": []}',
                "channel": "email",
                "kind": "marketing",
                "subject": "s",
                "body": "b",
            },
        ),
    ],
)
def test_hostile_values_in_the_pages_are_a_422_page(app: Flask, path: str, data: dict) -> None:
    client, csrf = signed_in(app)
    response = client.post(path, data={"csrf": csrf, **data})
    assert response.status_code == 422
    for listed in ("/app/", "/app/campaigns"):
        assert client.get(listed).status_code == 200


def test_a_run_form_with_an_unusable_key_is_a_422_page(app: Flask) -> None:
    from services.member_retargeting.web.schemas import MAX_KEY_LENGTH

    client, csrf = signed_in(app)
    campaign = create(client, {"all": []})
    response = client.post(
        f"/app/campaigns/{campaign['id']}/run", data={"csrf": csrf, "key": "k\u0000"}
    )
    assert response.status_code == 422 and b"<html" in response.data.lower()
    longest = {"csrf": csrf, "key": "k" * MAX_KEY_LENGTH}  # "page:<key>" fits its column
    assert client.post(f"/app/campaigns/{campaign['id']}/run", data=longest).status_code == 302


def test_pages_list_a_stored_rule_that_no_longer_holds(app: Flask) -> None:
    from services.member_retargeting.models import Campaign, Segment
    from tests.unit.member_retargeting.conftest import state_of

    with state_of(app).sessions.begin() as session:
        session.add(Segment(name="old", rule=POISON))
        session.add(
            Campaign(
                name="old", segment=POISON, channel="email", message={"subject": "s", "body": "b"}
            )
        )
    client, _ = signed_in(app)
    for path in ("/app/", "/app/campaigns", "/app/campaigns/1"):
        assert client.get(path).status_code == 200, path
    for path in ("/segments", "/campaigns", "/campaigns/1"):
        assert client.get(path, headers=MARKETING).status_code == 200, path
