"""Stored form of client applications."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JsonDocument
from app.kit.keys import LEGACY_KEY_ID


class ClientRow(Base):
    __tablename__ = "clients"
    __table_args__ = (UniqueConstraint("service_api_key", "client_id_alias"),)

    client_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    service_api_key: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("services.api_key", ondelete="CASCADE"), index=True
    )
    client_id_alias: Mapped[str | None] = mapped_column(String(255))
    client_name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    requestable_scopes_enabled: Mapped[bool] = mapped_column(Boolean)
    requestable_scopes: Mapped[list[str]] = mapped_column(JsonDocument)
    # Client authentication (RFC 6749 section 2.3, RFC 8705, RFC 7523) and durations that
    # win over the service's. NULL in rows written before migration 0004.
    client_type: Mapped[str | None] = mapped_column(String(20))
    token_auth_method: Mapped[str | None] = mapped_column(String(40))
    client_secret_digest: Mapped[str | None] = mapped_column(String(64))
    # The id of the hash secret the digest was made with (app.kit.keys).
    secret_key_id: Mapped[str] = mapped_column(String(16), server_default=LEGACY_KEY_ID)
    tls_client_auth_subject_dn: Mapped[str | None] = mapped_column(String(1024))
    jwks: Mapped[str | None] = mapped_column(Text)
    access_token_duration: Mapped[int | None] = mapped_column(BigInteger)
    refresh_token_duration: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    modified_at: Mapped[int] = mapped_column(BigInteger)
