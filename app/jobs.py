"""Background jobs. Like the request session for a request, a job owns its transactions:
here one transaction per batch, so a purge never holds locks for long and never loads all
candidate rows at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock
from app.filelock import FileLock
from app.tokens import repository as tokens

log = logging.getLogger("tokenstore.jobs")


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
    turn: FileLock,
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
    sessions: sessionmaker[Session], turn: FileLock, *, now: int, batch_size: int
) -> PurgeReport | None:
    """The purge, if this process holds `turn`, or can take it; else None. The first to
    take it keeps it for as long as it lives (taking it again is a no-op), so one worker
    purges each round; when that one exits or dies, the kernel frees the lock and another
    worker takes it at its next round."""
    if not turn.acquire(wait=False):
        log.debug("purge skipped: another worker purges")
        return None
    return purge_expired(sessions, now=now, batch_size=batch_size)
