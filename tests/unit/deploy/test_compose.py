"""docker-compose.yml cannot run here (no Docker engine); it must at least be sound."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shared.topics import REGISTRY

ROOT = Path(__file__).parents[3]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_the_production_shape() -> None:
    services = compose()["services"]
    assert {
        "kafka",
        "postgres",
        "init",
        "traffic-intake",
        "traffic-intake-relay",
        "traffic-intake-consumer",
        "lead-scoring",
        "lead-scoring-consumer",
        "member-retargeting",
        "member-retargeting-consumer",
        "member-retargeting-scheduler",
        "member-retargeting-dispatcher",
    } <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "healthcheck" in services["kafka"] and "healthcheck" in services["postgres"]
    for name in ("traffic-intake", "lead-scoring", "member-retargeting"):
        assert services[name]["command"][0] == "gunicorn"
        # Healthy means ready: the database and Kafka reachable, not only the process up.
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    workers = [
        s
        for n, s in services.items()
        if n.endswith(("-consumer", "-relay", "-scheduler", "-dispatcher"))
    ]
    assert len(workers) == 6 and all(c["command"][0] == "python" for c in workers)


def test_compose_commands_name_real_modules_and_databases() -> None:
    services = compose()["services"]
    for service in services.values():
        for arg in service.get("command", []):
            module = re.fullmatch(r"([\w.]+)\.wsgi:app", arg)
            if module:
                assert (ROOT / module.group(1).replace(".", "/") / "wsgi.py").exists()
        if service.get("command", [None])[0] == "python":
            path = ROOT / service["command"][2].replace(".", "/")
            assert (path / "__main__.py").exists() or path.with_suffix(".py").exists()
    env = services["traffic-intake"]["environment"]
    init_sql = (ROOT / "deploy/postgres-init.sql").read_text()
    for key in ("TRAFFIC_INTAKE", "LEAD_SCORING", "MEMBER_RETARGETING"):
        database = env[f"{key}_DATABASE_URL"].rsplit("/", 1)[1]
        assert f"CREATE DATABASE {database} " in init_sql


def test_kafka_does_not_auto_create_topics_so_the_registry_is_the_truth() -> None:
    kafka_env = compose()["services"]["kafka"]["environment"]
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # So the one-shot init creates every registered topic (members and dispatch too).
    assert compose()["services"]["init"]["command"] == ["python", "-m", "deploy.init"]
    assert "ensure_topics" in (ROOT / "deploy/init.py").read_text()
    assert {"funnel.members", "funnel.dispatch"} <= set(REGISTRY)


def test_compose_runs_in_production_mode_with_its_secrets_required() -> None:
    env = compose()["services"]["lead-scoring"]["environment"]
    assert env["FUNNEL_ENV"] == "production"
    for name in ("SCORING_SECRET_KEY", "RETARGETING_SECRET_KEY", "FUNNEL_ADMIN_TOKEN"):
        assert env[name] == f"${{{name}:?set {name}}}"
