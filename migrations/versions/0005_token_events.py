"""The token event log: one row per change of one token (app.events.models), written in
the transaction of the change, relayed to NATS JetStream and kept for the retention period.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JsonDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _partial(condition: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


def upgrade() -> None:
    op.create_table(
        "token_events",
        sa.Column("seq", RowId, nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("service_api_key", sa.BigInteger(), nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("changes", JsonDocument, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("published_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_token_events")),
        sa.UniqueConstraint("id", name=op.f("uq_token_events_id")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_token_events_token", "token_events", ["service_api_key", "token_id", "seq"])
    op.create_index("ix_token_events_time", "token_events", ["time"])
    op.create_index(
        "ix_token_events_unsequenced", "token_events", ["seq"], **_partial("position IS NULL")
    )
    op.create_index(
        "ix_token_events_unpublished",
        "token_events",
        ["position"],
        **_partial("position IS NOT NULL AND published_at IS NULL"),
    )
    op.create_index(
        "ix_token_events_feed",
        "token_events",
        ["service_api_key", "position"],
        **_partial("position IS NOT NULL"),
    )
    op.create_index(
        "uq_token_events_position",
        "token_events",
        ["position"],
        unique=True,
        **_partial("position IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("token_events")
