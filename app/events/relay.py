"""The event relay: gives committed events their cursor positions and publishes them to
NATS JetStream, one relay at a time across every process and host.

- **One at a time.** Every `serve` process runs a `Relay`; the one holding the relay lock
  works, the others wait for it: on PostgreSQL a session advisory lock on the relay's own
  connection (it ends with the process, on any host); on SQLite an exclusive `flock` on
  `<database>.relay.lock` (the kernel releases it when its process dies).
- **Woken after commits, polling as a fallback.** A unit of work that appended events
  calls `Relay.wake` once it has committed (app.transactions). In the leader's own
  process that wakes it directly; another process on PostgreSQL sends a `NOTIFY` on a
  connection of its own (outside the request's transaction, at most one every
  `NOTIFY_INTERVAL_S`: a NOTIFY inside each update's transaction would serialize their
  commits on PostgreSQL's notification queue lock), which the leader `LISTEN`s for. Every
  `poll_seconds` it looks anyway (another SQLite process, a lost notification).
- **Order and cursors.** Events are taken in `seq` order among those committed, and given
  their `position` in that order (app.events.models): events of one token keep their
  commit order. With a broker, a batch is published first, in order, stopping at the
  first failure, and what JetStream acknowledged gets its position and `published_at` in
  one statement; the rest get their positions only (so the poll feed goes on while the
  broker is down) and are published, in position order, once it is back.
- **At least once.** An event is marked only after JetStream acknowledged it, and carries
  its id as `Nats-Msg-Id`: a relay killed between the acknowledgement and the mark
  publishes it again after its restart, and JetStream drops the duplicate (within its
  duplicate window, two minutes by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio.to_thread
import psycopg
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from app import metrics
from app.clock import Clock
from app.db import libpq_url, sqlite_file
from app.events import repository
from app.events.changes import cloudevent, nats_subject
from app.filelock import FileLock
from app.jobs import RELAY_LOCK_KEY
from app.transactions import AsyncDatabase, ThreadedDatabase

log = logging.getLogger("tokenstore.events")

STREAM = "TOKENSTORE_EVENTS"
SUBJECTS = "tokenstore.events.>"
CHANNEL = "tokenstore_events"
BATCH = 500
PUBLISH_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0
# How long a waiting relay takes to try the lock again, and the longest pause after
# failures (broker or database down).
LEADER_RETRY_S = 2.0
MAX_BACKOFF_S = 5.0
# After a wake-up, how long the leader lets more commits gather before it reads them.
LINGER_S = 0.005
NOTIFY_INTERVAL_S = 0.02
COUNT_EVERY_S = 2.0
FAILURE_LOG_EVERY_S = 30.0


class PartlyPublished(Exception):
    """Publishing stopped at a failure; `done` events, from the first, were acknowledged."""

    def __init__(self, done: int) -> None:
        super().__init__(f"{done} published before a failure")
        self.done = done


class Publisher(Protocol):
    async def publish(self, pending: list[repository.Pending]) -> int:
        """Publishes the events in order; answers how many of them, from the first, the
        broker acknowledged (it stops at the first failure)."""

    async def close(self) -> None: ...


def message_of(event: Any) -> bytes:
    return json.dumps(cloudevent(event), separators=(",", ":")).encode()


class JetStreamPublisher:
    """nats-py over one connection, which reconnects by itself; the stream is created
    when it is missing."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Nats | None = None
        self._stream: JetStreamContext | None = None
        self._closing = False

    async def _jetstream(self) -> JetStreamContext:
        if self._stream is not None and self._client is not None and self._client.is_connected:
            return self._stream
        if self._client is None or self._client.is_closed:
            self._client = await _connect(self._url, self._disconnected, self._reconnected)
            log.info("NATS connected: publishing token events")
        if not self._client.is_connected:
            raise ConnectionError("the NATS server is not reachable (reconnecting)")
        stream = self._client.jetstream(timeout=PUBLISH_TIMEOUT_S)
        try:
            await stream.stream_info(STREAM)
        except NotFoundError:
            await stream.add_stream(name=STREAM, subjects=[SUBJECTS])
            log.info("created the JetStream stream %s (%s)", STREAM, SUBJECTS)
        self._stream = stream
        return stream

    async def publish(self, pending: list[repository.Pending]) -> int:
        stream = await self._jetstream()
        done = 0
        try:
            for item in pending:
                await stream.publish(
                    nats_subject(item.event),
                    message_of(item.event),
                    timeout=PUBLISH_TIMEOUT_S,
                    headers={"Nats-Msg-Id": item.event.id},
                )
                done += 1
        except Exception as error:
            raise PartlyPublished(done) from error
        return done

    async def _disconnected(self) -> None:
        # Also called when a client is closed (ours at shutdown, or one whose first
        # connection failed): only a connection that was up and is not being closed is lost.
        if not self._closing and self._client is not None and not self._client.is_closed:
            log.warning("NATS connection lost: events wait in the log until it is back")

    async def _reconnected(self) -> None:
        log.info("NATS connection back")

    async def close(self) -> None:
        self._closing = True
        if self._client is not None and not self._client.is_closed:
            with contextlib.suppress(Exception):
                await self._client.close()


async def _connect(
    url: str,
    disconnected: Callable[[], Awaitable[None]],
    reconnected: Callable[[], Awaitable[None]],
) -> Nats:
    """A connection that, once made, reconnects by itself for as long as it takes.

    The first connection is bounded: with unlimited reconnection, nats-py's `connect` keeps
    trying a broker that is down and never returns, which would hold the relay inside
    `publish`, and events would get no positions (the poll feed would stop) until the
    broker came back."""
    client = Nats()
    try:
        await asyncio.wait_for(
            client.connect(
                servers=[url],
                name="tokenstore-relay",
                # nats-py annotates these seconds as int; it takes fractions as well.
                connect_timeout=CONNECT_TIMEOUT_S,  # type: ignore[arg-type]
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,  # type: ignore[arg-type]
                error_cb=_quiet,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
            ),
            CONNECT_TIMEOUT_S,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await client.close()
        raise
    return client


async def _quiet(error: Exception) -> None:
    log.debug("NATS: %s", type(error).__name__)


class Leadership(Protocol):
    async def acquire(self) -> bool: ...

    async def wait_for_news(self, seconds: float, woken: asyncio.Event) -> None: ...

    async def close(self) -> None: ...


class PostgresLeadership:
    """The advisory lock on a connection of the relay's own, which also LISTENs."""

    def __init__(self, url: str) -> None:
        self._conninfo = libpq_url(url)
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def acquire(self) -> bool:
        if self._connection is not None and not self._connection.broken:
            return True
        await self.close()
        connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        cursor = await connection.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,))
        row = await cursor.fetchone()
        if not (row and row[0]):
            await connection.close()
            return False
        await connection.execute(f"LISTEN {CHANNEL}")
        self._connection = connection
        return True

    async def wait_for_news(self, seconds: float, woken: asyncio.Event) -> None:
        connection = self._connection
        if connection is None:
            await _wait(woken, seconds)
            return
        listening = asyncio.ensure_future(_first_notification(connection, seconds))
        local = asyncio.ensure_future(woken.wait())
        try:
            await asyncio.wait({listening, local}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listening, local):
                task.cancel()
            with contextlib.suppress(BaseException):
                await listening
        woken.clear()

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None


async def _first_notification(connection: psycopg.AsyncConnection[Any], seconds: float) -> None:
    with contextlib.suppress(psycopg.Error):
        async for _ in connection.notifies(timeout=seconds, stop_after=1):
            return


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    event.clear()


class FileLeadership:
    """SQLite: `<database>.relay.lock`, held for as long as the process lives."""

    def __init__(self, url: str) -> None:
        database = sqlite_file(url)
        self._lock = None if database is None else FileLock(f"{database}.relay.lock")
        self._held = False

    async def acquire(self) -> bool:
        if self._held or self._lock is None:
            return True
        self._held = await anyio.to_thread.run_sync(lambda: self._lock.acquire(wait=False))  # type: ignore[union-attr]
        return self._held

    async def wait_for_news(self, seconds: float, woken: asyncio.Event) -> None:
        await _wait(woken, seconds)

    async def close(self) -> None:
        if self._lock is not None:
            self._lock.close()


class Notifier:
    """Another process's way to wake the leader on PostgreSQL: `NOTIFY` on a connection of
    its own, at most one every `NOTIFY_INTERVAL_S`, never on the request path."""

    def __init__(self, url: str) -> None:
        self._conninfo = libpq_url(url)
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def poke(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while True:
            self._again = False
            try:
                if self._connection is None or self._connection.broken:
                    self._connection = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True
                    )
                await self._connection.execute(f"NOTIFY {CHANNEL}")
            except psycopg.Error:
                self._connection = None  # the leader polls meanwhile
            await asyncio.sleep(NOTIFY_INTERVAL_S)
            if not self._again:
                return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()


class Relay:
    def __init__(
        self,
        database: AsyncDatabase | ThreadedDatabase,
        *,
        clock: Clock,
        poll_seconds: float,
        publisher: Publisher | None,
    ) -> None:
        self._database = database
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._publisher = publisher
        self._woken = asyncio.Event()
        self._leading = False
        if isinstance(database, AsyncDatabase):
            self._leadership: Leadership = PostgresLeadership(database.url)
            self._notifier: Notifier | None = Notifier(database.url)
        else:
            self._leadership = FileLeadership(database.url)
            self._notifier = None
        self._task: asyncio.Task[None] | None = None
        self._counted_at = -COUNT_EVERY_S
        self._failing_since: float | None = None
        self._failure_logged_at = 0.0

    def wake(self) -> None:
        """After a commit that appended events, in this process."""
        if self._leading:
            self._woken.set()
        elif self._notifier is not None:
            self._notifier.poke()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._notifier is not None:
            await self._notifier.close()
        if self._publisher is not None:
            await self._publisher.close()
        await self._leadership.close()

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            try:
                self._leading = await self._leadership.acquire()
                if not self._leading:
                    await asyncio.sleep(LEADER_RETRY_S)
                    continue
                more = await self.step()
                backoff = 0.0
                if not more:
                    await self._leadership.wait_for_news(self._poll_seconds, self._woken)
                    await asyncio.sleep(LINGER_S)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the relay never stops; serving goes on
                backoff = min(MAX_BACKOFF_S, max(0.1, backoff * 2))
                log.warning("event relay: %s; retrying in %.1fs", _describe(error), backoff)
                await asyncio.sleep(backoff)

    async def step(self) -> bool:
        """One round: publishes the backlog of positioned events, then positions (and
        publishes) the next committed ones. When the backlog could not all be published
        (the broker is down), the next ones get their positions unpublished: the poll feed
        goes on, and publishing them now would put them before the backlog. True when
        there may be more to do at once."""
        publishing = self._publisher is not None
        if publishing:
            backlog = await self._database.read(repository.unpublished, limit=BATCH)
            if backlog:
                published = await self._publish(backlog)
                await self._mark(backlog[:published])
                if published == len(backlog) == BATCH:
                    self._observe_waiting()
                    return True
                publishing = published == len(backlog)
        fresh = await self._database.read(repository.unsequenced, limit=BATCH)
        if not fresh:
            self._observe_waiting()
            return False
        published = 0
        if publishing:
            published = await self._publish(fresh)
        now = self._clock()
        async with self._database.transaction() as work:
            await work.run_sync(
                repository.assign_positions,
                [item.seq for item in fresh],
                published=published,
                now=now,
            )
        metrics.EVENTS_PUBLISHED.inc(published)
        self._observe_waiting()
        return len(fresh) == BATCH and (published == len(fresh) or not publishing)

    async def _publish(self, pending: list[repository.Pending]) -> int:
        assert self._publisher is not None  # noqa: S101 - callers checked
        try:
            done = await self._publisher.publish(pending)
        except PartlyPublished as stopped:
            self._failed(stopped.__cause__ or stopped)
            return stopped.done
        except Exception as error:
            self._failed(error)
            return 0
        if self._failing_since is not None:
            log.info("event publishing works again: the waiting events are being published")
            self._failing_since = None
        return done

    def _failed(self, error: BaseException) -> None:
        """Counts every failed round; logs the first of an outage and then one a
        `FAILURE_LOG_EVERY_S`, not one per poll."""
        metrics.EVENTS_PUBLISH_FAILURES.inc()
        moment = time.monotonic()
        if self._failing_since is None or moment - self._failure_logged_at >= FAILURE_LOG_EVERY_S:
            log.warning("event publishing failed: %s; events wait in the log", _describe(error))
            self._failure_logged_at = moment
        if self._failing_since is None:
            self._failing_since = moment

    async def _mark(self, published: list[repository.Pending]) -> None:
        if not published:
            return
        now = self._clock()
        async with self._database.transaction() as work:
            await work.run_sync(
                repository.mark_published, [item.seq for item in published], now=now
            )
        metrics.EVENTS_PUBLISHED.inc(len(published))

    def _observe_waiting(self) -> None:
        """Counts the waiting events for the metric, at most every `COUNT_EVERY_S`."""
        moment = time.monotonic()
        if moment - self._counted_at < COUNT_EVERY_S:
            return
        self._counted_at = moment
        task = asyncio.get_running_loop().create_task(self._count_waiting())
        task.add_done_callback(_ignore)

    async def _count_waiting(self) -> None:
        count = await self._database.read(
            repository.waiting, publishing=self._publisher is not None
        )
        metrics.EVENTS_WAITING.set(count)


def _ignore(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _describe(error: BaseException) -> str:
    """A failure's kind, never its text (a database error can quote values)."""
    return type(error).__name__


def relay_for(
    database: AsyncDatabase | ThreadedDatabase,
    *,
    clock: Clock,
    nats_url: str | None,
    poll_seconds: float,
    publisher_factory: Callable[[str], Publisher] = JetStreamPublisher,
) -> Relay:
    publisher = None if nats_url is None else publisher_factory(nats_url)
    return Relay(database, clock=clock, poll_seconds=poll_seconds, publisher=publisher)
