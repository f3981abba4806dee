"""The DPoP replay cache, service access tokens (API v3), and an index for the purge.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Reviewed by hand from autogenerate.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "dpop_proofs",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_dpop_proofs")),
    )
    op.create_index(op.f("ix_dpop_proofs_expires_at"), "dpop_proofs", ["expires_at"])
    op.create_table(
        "service_access_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("service_api_key", sa.BigInteger(), nullable=False),
        sa.Column("token_key", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_api_key"],
            ["services.api_key"],
            name=op.f("fk_service_access_tokens_service_api_key_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_access_tokens")),
        sa.UniqueConstraint("token_id", name=op.f("uq_service_access_tokens_token_id")),
        sa.UniqueConstraint("token_key", name=op.f("uq_service_access_tokens_token_key")),
    )
    op.create_index(
        op.f("ix_service_access_tokens_service_api_key"),
        "service_access_tokens",
        ["service_api_key"],
    )
    op.create_index("ix_tokens_access_expires_at", "tokens", ["access_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_tokens_access_expires_at", table_name="tokens")
    op.drop_table("service_access_tokens")
    op.drop_table("dpop_proofs")
