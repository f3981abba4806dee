"""Stored form of client applications."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JsonDocument


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
    created_at: Mapped[int] = mapped_column(BigInteger)
    modified_at: Mapped[int] = mapped_column(BigInteger)
