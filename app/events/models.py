"""Stored form of the event log: one row per change of one token, never updated but for
its relay marks (`position`, `published_at`), removed only by retention.

- `seq` is the insertion order. On PostgreSQL concurrent transactions commit in another
  order than they drew their `seq`, so a cursor over it could skip an event that commits
  late. The relay (app.events.relay), one at a time across every process, gives each
  committed event its `position` in the order it finds them committed: that is the
  database-wide sequence number of cursors (the poll feed's `cursor`). Events of one token
  are written under its row lock, so their `seq` and `position` follow their commit order.
- `published_at` is set once JetStream has stored the event (NULL: still waiting).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JsonDocument

RowId = BigInteger().with_variant(Integer(), "sqlite")


class TokenEventRow(Base):
    __tablename__ = "token_events"
    __table_args__ = (
        Index("ix_token_events_token", "service_api_key", "token_id", "seq"),
        Index("ix_token_events_time", "time"),
        # The relay's queues: what has no position yet, and what is not yet published.
        Index(
            "ix_token_events_unsequenced",
            "seq",
            postgresql_where=text("position IS NULL"),
            sqlite_where=text("position IS NULL"),
        ),
        Index(
            "ix_token_events_unpublished",
            "position",
            postgresql_where=text("position IS NOT NULL AND published_at IS NULL"),
            sqlite_where=text("position IS NOT NULL AND published_at IS NULL"),
        ),
        # The poll feed: a service's events after a cursor.
        Index(
            "ix_token_events_feed",
            "service_api_key",
            "position",
            postgresql_where=text("position IS NOT NULL"),
            sqlite_where=text("position IS NOT NULL"),
        ),
        Index(
            "uq_token_events_position",
            "position",
            unique=True,
            postgresql_where=text("position IS NOT NULL"),
            sqlite_where=text("position IS NOT NULL"),
        ),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(RowId, primary_key=True)
    id: Mapped[str] = mapped_column(String(26), unique=True)
    service_api_key: Mapped[int] = mapped_column(BigInteger)
    token_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[int] = mapped_column(BigInteger)
    subject: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(80))
    request_id: Mapped[str | None] = mapped_column(String(64))
    time: Mapped[int] = mapped_column(BigInteger)
    changes: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    position: Mapped[int | None] = mapped_column(BigInteger)
    published_at: Mapped[int | None] = mapped_column(BigInteger)
