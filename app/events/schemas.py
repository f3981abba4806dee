"""Wire models of the history API and the poll feed. Each event is its CloudEvents 1.0
JSON object (app.events.changes.cloudevent), the same as the NATS message body."""

from __future__ import annotations

from typing import Any

from app.wire import Envelope, WireResponse


class TokenHistoryOut(Envelope):
    """`GET /auth/token/history/{tokenIdentifier}`: a token's events, oldest first."""

    events: list[dict[str, Any]]
    total_count: int


class TokenEventFeedOut(WireResponse):
    """`GET /auth/token/events`: the service's events after a cursor, and the cursor to
    ask with next (the same one when nothing new has come)."""

    events: list[dict[str, Any]]
    cursor: str
