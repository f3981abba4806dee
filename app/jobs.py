"""Background jobs. Like the request session for a request, a job owns its transactions:
here one transaction per batch, so a purge never holds locks for long and never loads all
candidate rows at once."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio.to_thread
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock
from app.events import repository as event_log
from app.events import service as events
from app.events.changes import PURGE, EventType
from app.tokens import repository as tokens

log = logging.getLogger("tokenstore.jobs")


class Turn(Protocol):
    """Who runs the periodic purge: `acquire(wait=False)` is True for one process only."""

    def acquire(self, *, wait: bool = True) -> bool: ...

    def close(self) -> None: ...


# The advisory locks' keys: "tokenstore purge" and "tokenstore relay"; any fixed 64-bit
# numbers will do.
PURGE_LOCK_KEY = 0x746F6B656E707267
RELAY_LOCK_KEY = 0x746F6B6E72656C79
DEFAULT_RETENTION_DAYS = 90
MS_PER_DAY = 86_400_000


class AdvisoryTurn:
    """PostgreSQL: a session-level advisory lock, held on a connection of its own for as
    long as the process lives, so one process among all those on every host that share the
    database purges (or relays events). When that process dies, its connection ends and
    the lock with it."""

    def __init__(self, engine: Engine, key: int = PURGE_LOCK_KEY) -> None:
        self._engine = engine
        self._key = key
        self._connection: Connection | None = None

    def acquire(self, *, wait: bool = True) -> bool:
        del wait  # never waits: another process purges meanwhile
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
            except DBAPIError:
                self.close()
            else:
                return True  # still held: the connection that holds it is alive
        connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        taken = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
        ).scalar()
        if taken:
            self._connection = connection
            return True
        connection.close()
        return False

    def close(self) -> None:
        if self._connection is not None:
            self._connection.invalidate()  # ends the session, and the lock with it
            self._connection.close()
            self._connection = None


@dataclass(frozen=True, slots=True)
class PurgeReport:
    tokens: int
    proofs: int
    events: int = 0


def purge_expired(
    sessions: sessionmaker[Session],
    *,
    now: int,
    batch_size: int,
    events_retention_days: int = DEFAULT_RETENTION_DAYS,
    events_publishing: bool = True,
) -> PurgeReport:
    """Deletes tokens whose access and refresh tokens have both expired (persistent tokens
    never), each with its `purged` event, DPoP replay records past their window, and events
    older than the retention period that the relay is done with (`events_publishing`: a
    broker is configured, so an event waits until it is published), `batch_size` rows per
    transaction."""
    removed_tokens = _in_batches(sessions, _purge_tokens_batch, now=now, limit=batch_size)
    removed_proofs = _in_batches(sessions, tokens.forget_proofs_batch, now=now, limit=batch_size)
    removed_events = _in_batches(
        sessions,
        functools.partial(
            _forget_events_batch,
            before=now - events_retention_days * MS_PER_DAY,
            publishing=events_publishing,
        ),
        now=now,
        limit=batch_size,
    )
    log.info(
        "purge removed tokens=%d dpop_proofs=%d events=%d",
        removed_tokens, removed_proofs, removed_events,
    )  # fmt: skip
    return PurgeReport(removed_tokens, removed_proofs, removed_events)


def _forget_events_batch(
    session: Session, *, now: int, limit: int, before: int, publishing: bool
) -> int:
    del now  # the cutoff is `before`
    return event_log.delete_old_batch(session, before=before, limit=limit, publishing=publishing)


def _purge_tokens_batch(session: Session, *, now: int, limit: int) -> int:
    """One batch of dead tokens, each with its `purged` event in the same transaction."""
    gone = tokens.delete_dead_batch(session, now=now, limit=limit)
    events.record_all(session, EventType.PURGED, gone, PURGE, now=now)
    return len(gone)


def _in_batches(
    sessions: sessionmaker[Session],
    delete_batch: Callable[..., int],
    *,
    now: int,
    limit: int,
) -> int:
    """Runs one batch deletion per transaction until a batch comes back short."""
    removed = 0
    while True:
        with sessions.begin() as session:
            batch = delete_batch(session, now=now, limit=limit)
        removed += batch
        if batch < limit:
            return removed


async def purge_periodically(
    sessions: sessionmaker[Session],
    *,
    clock: Clock,
    interval_seconds: int,
    batch_size: int,
    turn: Turn,
    events_retention_days: int = DEFAULT_RETENTION_DAYS,
    events_publishing: bool = True,
) -> None:
    """Runs the purge every `interval_seconds` inside `serve`, off the event loop. Every
    worker process runs this loop; `turn`, a lock file all of them share, makes one of
    them the purger (see `purge_in_turn`) and the others skip their rounds."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await anyio.to_thread.run_sync(
                lambda: purge_in_turn(
                    sessions,
                    turn,
                    now=clock(),
                    batch_size=batch_size,
                    events_retention_days=events_retention_days,
                    events_publishing=events_publishing,
                )
            )
        except Exception:  # a failed run is logged and retried next time; serving goes on
            log.exception("periodic purge failed")


def purge_in_turn(
    sessions: sessionmaker[Session],
    turn: Turn,
    *,
    now: int,
    batch_size: int,
    events_retention_days: int = DEFAULT_RETENTION_DAYS,
    events_publishing: bool = True,
) -> PurgeReport | None:
    """The purge, if this process holds `turn`, or can take it; else None. The first to
    take it keeps it for as long as it lives (taking it again is a no-op), so one worker
    purges each round; when that one exits or dies, the kernel frees the lock and another
    worker takes it at its next round."""
    if not turn.acquire(wait=False):
        log.debug("purge skipped: another worker purges")
        return None
    return purge_expired(
        sessions, now=now, batch_size=batch_size, events_retention_days=events_retention_days,
        events_publishing=events_publishing,
    )  # fmt: skip
