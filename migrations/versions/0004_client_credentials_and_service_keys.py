"""Client credentials and the service settings of the rest of Authlete's token surface:
client type, token endpoint authentication method, secret digest, TLS subject DN, inline
JWK set and token durations of a client; the DPoP nonce settings, the JWK set and the
introspection signing key of a service. All nullable: rows written before have none.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

CLIENT_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = (
    ("client_type", sa.String(length=20)),
    ("token_auth_method", sa.String(length=40)),
    ("client_secret_digest", sa.String(length=64)),
    ("tls_client_auth_subject_dn", sa.String(length=1024)),
    ("jwks", sa.Text()),
    ("access_token_duration", sa.BigInteger()),
    ("refresh_token_duration", sa.BigInteger()),
)
SERVICE_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = (
    ("dpop_nonce_required", sa.Boolean()),
    ("dpop_nonce_duration", sa.BigInteger()),
    ("jwks", sa.Text()),
    ("introspection_signature_key_id", sa.String(length=255)),
)


def upgrade() -> None:
    for name, type_ in CLIENT_COLUMNS:
        op.add_column("clients", sa.Column(name, type_, nullable=True))
    for name, type_ in SERVICE_COLUMNS:
        op.add_column("services", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        for name, _ in reversed(SERVICE_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("clients") as batch:
        for name, _ in reversed(CLIENT_COLUMNS):
            batch.drop_column(name)
