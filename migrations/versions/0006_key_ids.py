"""Key ids beside every keyed value at rest, and room for sealed token hashes: the hash
secret's id of each token row (its lookup keys and sealed hashes), of each service secret
digest, service access token digest and client secret digest; `access_hash` and
`refresh_hash` widened for their AES-GCM sealed form (app.kit.keys). Rows written before
carry the id "default", the id of a single TOKENSTORE_HASH_SECRET.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

KEY_ID_COLUMNS = (
    ("tokens", "key_id"),
    ("services", "secret_key_id"),
    ("service_access_tokens", "key_id"),
    ("clients", "secret_key_id"),
)


def upgrade() -> None:
    for table, column in KEY_ID_COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column(column, sa.String(length=16), server_default="default", nullable=False)
            )
    with op.batch_alter_table("tokens") as batch:
        for column in ("access_hash", "refresh_hash"):
            batch.alter_column(
                column,
                existing_type=sa.String(length=43),
                type_=sa.String(length=128),
                existing_nullable=column == "refresh_hash",
            )


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        for column in ("access_hash", "refresh_hash"):
            batch.alter_column(
                column,
                existing_type=sa.String(length=128),
                type_=sa.String(length=43),
                existing_nullable=column == "refresh_hash",
            )
    for table, column in reversed(KEY_ID_COLUMNS):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)
