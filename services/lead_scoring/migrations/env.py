"""Alembic's environment for this service's database (see :mod:`shared.migrations`):
runs on the engine the caller hands over, against this service's models."""

from __future__ import annotations

from alembic import context

from shared.migrations_env import run

run(context, "lead_scoring")
