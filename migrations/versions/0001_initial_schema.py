"""Initial schema: services, scopes, clients, tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Reviewed by hand from autogenerate. Token values are never stored: `access_key` and
`refresh_key` are keyed digests of the hashes and are the only lookup columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def json_document() -> sa.JSON:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("api_key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("secret_digest", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("access_token_duration", sa.BigInteger(), nullable=False),
        sa.Column("refresh_token_duration", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("modified_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("api_key", name=op.f("pk_services")),
    )
    op.create_table(
        "clients",
        sa.Column("client_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("service_api_key", sa.BigInteger(), nullable=False),
        sa.Column("client_id_alias", sa.String(length=255), nullable=True),
        sa.Column("client_name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("requestable_scopes_enabled", sa.Boolean(), nullable=False),
        sa.Column("requestable_scopes", json_document(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("modified_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_api_key"],
            ["services.api_key"],
            name=op.f("fk_clients_service_api_key_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_clients")),
        sa.UniqueConstraint(
            "service_api_key",
            "client_id_alias",
            name=op.f("uq_clients_service_api_key_client_id_alias"),
        ),
    )
    op.create_index(op.f("ix_clients_service_api_key"), "clients", ["service_api_key"])
    op.create_table(
        "scopes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_api_key", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("attributes", json_document(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_api_key"],
            ["services.api_key"],
            name=op.f("fk_scopes_service_api_key_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scopes")),
        sa.UniqueConstraint("service_api_key", "name", name=op.f("uq_scopes_service_api_key_name")),
    )
    op.create_index(op.f("ix_scopes_service_api_key"), "scopes", ["service_api_key"])
    op.create_table(
        "tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("service_api_key", sa.BigInteger(), nullable=False),
        sa.Column("client_id", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("grant_type", sa.String(length=40), nullable=True),
        sa.Column("access_key", sa.String(length=64), nullable=False),
        sa.Column("access_hash", sa.String(length=43), nullable=False),
        sa.Column("refresh_key", sa.String(length=64), nullable=True),
        sa.Column("refresh_hash", sa.String(length=43), nullable=True),
        sa.Column("scopes", json_document(), nullable=False),
        sa.Column("access_expires_at", sa.BigInteger(), nullable=False),
        sa.Column("refresh_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("persistent", sa.Boolean(), nullable=False),
        sa.Column("properties", json_document(), nullable=False),
        sa.Column("authorization_details", json_document(), nullable=True),
        sa.Column("certificate_thumbprint", sa.String(length=43), nullable=True),
        sa.Column("dpop_key_thumbprint", sa.String(length=43), nullable=True),
        sa.Column("for_external_attachment", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name=op.f("fk_tokens_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["service_api_key"],
            ["services.api_key"],
            name=op.f("fk_tokens_service_api_key_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("access_key", name=op.f("uq_tokens_access_key")),
        sa.UniqueConstraint("refresh_key", name=op.f("uq_tokens_refresh_key")),
        sa.UniqueConstraint("token_id", name=op.f("uq_tokens_token_id")),
    )
    op.create_index("ix_tokens_client_created", "tokens", ["client_id", "created_at", "id"])
    op.create_index("ix_tokens_service_created", "tokens", ["service_api_key", "created_at", "id"])
    op.create_index(
        "ix_tokens_service_subject", "tokens", ["service_api_key", "subject", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("tokens")
    op.drop_table("scopes")
    op.drop_table("clients")
    op.drop_table("services")
