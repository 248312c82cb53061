"""The baseline: the barest Flask JSON POST, served by the same gunicorn config."""

from __future__ import annotations

from typing import Any

from flask import Flask, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/v1/track")
    def track() -> Any:
        request.get_json()
        return {"success": True}

    return app


app = create_app()
