"""Stored form of services and their scopes. The API secret is kept only as a digest."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, JsonDocument
from app.kit.keys import LEGACY_KEY_ID


class ServiceRow(Base):
    __tablename__ = "services"

    api_key: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    secret_digest: Mapped[str] = mapped_column(String(64))
    # The id of the hash secret the digest was made with (app.kit.keys).
    secret_key_id: Mapped[str] = mapped_column(String(16), server_default=LEGACY_KEY_ID)
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    access_token_duration: Mapped[int] = mapped_column(BigInteger)
    refresh_token_duration: Mapped[int] = mapped_column(BigInteger)
    # DPoP nonces (RFC 9449 section 9), the service's JWK set (its introspection signing
    # keys, RFC 9701). NULL in rows written before migration 0004.
    dpop_nonce_required: Mapped[bool | None] = mapped_column(Boolean)
    dpop_nonce_duration: Mapped[int | None] = mapped_column(BigInteger)
    jwks: Mapped[str | None] = mapped_column(Text)
    introspection_signature_key_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger)
    modified_at: Mapped[int] = mapped_column(BigInteger)

    scopes: Mapped[list[ScopeRow]] = relationship(
        lazy="raise",
        order_by="ScopeRow.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class ServiceAccessTokenRow(Base):
    """A credential for Authlete API v3 paths (`Authorization: Bearer`), created by the
    operator. Stored as a keyed digest only, like token values."""

    __tablename__ = "service_access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[str] = mapped_column(String(64), unique=True)
    service_api_key: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("services.api_key", ondelete="CASCADE"), index=True
    )
    token_key: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str] = mapped_column(String(16), server_default=LEGACY_KEY_ID)
    description: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger)


class ScopeRow(Base):
    __tablename__ = "scopes"
    __table_args__ = (UniqueConstraint("service_api_key", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_api_key: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("services.api_key", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    # A list of {"key": ..., "value": ...} pairs, as on Authlete's wire.
    attributes: Mapped[list[dict[str, Any]]] = mapped_column(JsonDocument)
