"""The baselines served by the same gunicorn config as intake.

* ``POST /v1/track``: the barest Flask JSON POST (``bare_flask_post``).
* ``POST /durable/track`` and ``/durable/batch``: the barest *durable* intake this stack
  allows: parse the JSON, then one SQLAlchemy Core INSERT per event (one row per event:
  the id, the body) into a SQLite table with intake's own pragmas, committed before the
  200, each request in its own transaction; no write key, validation, dedupe,
  enrichment or grouping. What intake's validation, dedupe and envelope add is intake's
  figure against these (``intake_*_vs_durable_*``); what durability alone costs on this
  stack is these against the bare POST and raw Kafka produce.

* ``POST /validated/track`` and ``/validated/batch``: the same, after loading each event
  with intake's own call schemas (:mod:`services.traffic_intake.schemas`, their fast path
  included), as intake must: the least a durable intake that validates can do. A batch
  commits once, as intake's does, so ``validated_batch_vs_raw_produce`` bounds intake's
  batch figure; a single POST commits alone, which intake's grouping does not.

``BENCH_DURABLE_DATABASE_URL`` names the database (each worker opens its own engine).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from flask import Flask, request
from sqlalchemy import Column, MetaData, String, Table, Text, insert

from services.traffic_intake.schemas import CALL_SCHEMAS
from shared.db import make_engine

metadata = MetaData()
rows = Table("rows", metadata, Column("id", String(64), primary_key=True), Column("body", Text))


def create_app() -> Flask:
    app = Flask(__name__)
    url = os.environ.get("BENCH_DURABLE_DATABASE_URL")
    engine = make_engine(url, busy_timeout_ms=2000) if url else None  # as intake's
    if engine is not None:
        metadata.create_all(engine)

    @app.post("/v1/track")
    def track() -> Any:
        request.get_json()
        return {"success": True}

    def durable(events: list[Any]) -> Any:
        assert engine is not None, "set BENCH_DURABLE_DATABASE_URL"
        with engine.begin() as conn:
            conn.execute(
                insert(rows), [{"id": uuid.uuid4().hex, "body": json.dumps(e)} for e in events]
            )
        return {"success": True}

    @app.post("/durable/track")
    def durable_track() -> Any:
        return durable([request.get_json()])

    @app.post("/durable/batch")
    def durable_batch() -> Any:
        return durable(list(request.get_json()["batch"]))

    loaders = {name: schema() for name, schema in CALL_SCHEMAS.items()}

    @app.post("/validated/track")
    def validated_track() -> Any:
        event = request.get_json()
        loaders["track"].load(event)
        return durable([event])

    @app.post("/validated/batch")
    def validated_batch() -> Any:
        events = list(request.get_json()["batch"])
        for event in events:
            loaders[event["type"]].load(event)
        return durable(events)

    return app


app = create_app()
