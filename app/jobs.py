"""Background jobs. Like the request session for a request, a job owns its transactions:
here one transaction per batch, so a purge never holds locks for long and never loads all
candidate rows at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio.to_thread
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock
from app.tokens import repository as tokens

log = logging.getLogger("tokenstore.jobs")


class Turn(Protocol):
    """Who runs the periodic purge: `acquire(wait=False)` is True for one process only."""

    def acquire(self, *, wait: bool = True) -> bool: ...

    def close(self) -> None: ...


# The advisory lock's key: "tokenstore purge", any fixed 64-bit number will do.
PURGE_LOCK_KEY = 0x746F6B656E707267


class AdvisoryTurn:
    """PostgreSQL: a session-level advisory lock, held on a connection of its own for as
    long as the process lives, so one process among all those on every host that share the
    database purges. When that process dies, its connection ends and the lock with it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
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
            text("SELECT pg_try_advisory_lock(:key)"), {"key": PURGE_LOCK_KEY}
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


def purge_expired(sessions: sessionmaker[Session], *, now: int, batch_size: int) -> PurgeReport:
    """Deletes tokens whose access and refresh tokens have both expired (persistent tokens
    never), and DPoP replay records past their window, `batch_size` rows per transaction."""
    removed_tokens = _in_batches(sessions, tokens.delete_dead_batch, now=now, limit=batch_size)
    removed_proofs = _in_batches(sessions, tokens.forget_proofs_batch, now=now, limit=batch_size)
    log.info("purge removed tokens=%d dpop_proofs=%d", removed_tokens, removed_proofs)
    return PurgeReport(removed_tokens, removed_proofs)


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
) -> None:
    """Runs the purge every `interval_seconds` inside `serve`, off the event loop. Every
    worker process runs this loop; `turn`, a lock file all of them share, makes one of
    them the purger (see `purge_in_turn`) and the others skip their rounds."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await anyio.to_thread.run_sync(
                lambda: purge_in_turn(sessions, turn, now=clock(), batch_size=batch_size)
            )
        except Exception:  # a failed run is logged and retried next time; serving goes on
            log.exception("periodic purge failed")


def purge_in_turn(
    sessions: sessionmaker[Session], turn: Turn, *, now: int, batch_size: int
) -> PurgeReport | None:
    """The purge, if this process holds `turn`, or can take it; else None. The first to
    take it keeps it for as long as it lives (taking it again is a no-op), so one worker
    purges each round; when that one exits or dies, the kernel frees the lock and another
    worker takes it at its next round."""
    if not turn.acquire(wait=False):
        log.debug("purge skipped: another worker purges")
        return None
    return purge_expired(sessions, now=now, batch_size=batch_size)
