"""A partial index for the daily journeys prune: journeys that are no lead's, by first
seen (``processing.journeys.prune``), so its scan does not walk past every lead's
journey first.

Revision ID: 0004
Revises: 0003
Created: 2026-12-04 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # PostgreSQL builds it CONCURRENTLY (outside a transaction): the consumer writes
    # journeys on every traffic event and must not wait for the build.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_journeys_anonymous_first_seen",
            "journeys",
            ["first_seen_at"],
            unique=False,
            postgresql_where=sa.text("lead_id IS NULL"),
            postgresql_concurrently=True,
            sqlite_where=sa.text("lead_id IS NULL"),
        )


def downgrade() -> None:
    op.drop_index("ix_journeys_anonymous_first_seen", table_name="journeys")
