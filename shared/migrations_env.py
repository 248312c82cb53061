"""What every service's Alembic ``env.py`` does (:mod:`shared.migrations`): online
migrations on the engine in the config's attributes (a scratch SQLite one when run
without), comparing against the service's models; SQLite alters tables in batch mode."""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy import create_engine


def run(context: Any, service: str) -> None:
    metadata = importlib.import_module(f"services.{service}.models").metadata
    config = context.config
    engine = config.attributes.get("engine") or create_engine(
        config.get_main_option("sqlalchemy.url")
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
