from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.traffic_intake.app import create_app, init_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.state import STATE as INTAKE_STATE

WRITE_KEY = "wk-test"


def basic(key: str = WRITE_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
def intake_config(sqlite_url: str) -> IntakeConfig:
    return IntakeConfig(database_url=sqlite_url, write_keys=(WRITE_KEY,))


@pytest.fixture
def intake_app(intake_config: IntakeConfig) -> Flask:
    app = create_app(intake_config)
    init_db(app.extensions[INTAKE_STATE].engine)
    return app


@pytest.fixture
def client(intake_app: Flask) -> FlaskClient:
    return intake_app.test_client()


def outbox_rows(app: Flask, topic: str = "funnel.traffic") -> list[Any]:
    """The outbox rows bound for ``topic`` (rejected events go to the dead-letter topic)."""
    from sqlalchemy import select

    state = app.extensions[INTAKE_STATE]
    with state.engine.connect() as conn:
        return list(
            conn.execute(select(state.outbox).where(state.outbox.c.topic == topic).order_by("id"))
        )
