"""The one transaction owner: each request's unit of work, on PostgreSQL or SQLite.

The request-scoped unit of work (`unit_of_work`) commits when the route returns and rolls
back when it raises; services and repositories never commit. It runs with FastAPI's
`scope="function"`, so the commit happens before the response is sent: a failed commit
becomes an error response, never a 200 for a write that did not happen.

Services and repositories are plain synchronous code over a `Session`. Routes hand them
to the unit of work with `await work.run_sync(fn, ...)`, which runs them where the
database is best driven from:

- PostgreSQL (`AsyncDatabase`): on the event loop, through an `AsyncSession` over
  psycopg's async mode; SQLAlchemy runs the function in a greenlet and awaits each round
  trip on the loop. Against sync routes in the thread pool, whose thread hand-offs and GIL
  contention on every round trip cost more than the work itself, this halved the server
  CPU of an update (bench/README.md).
- SQLite (`ThreadedDatabase`): on one thread of the process's own, over the synchronous
  driver. SQLite has one writer at a time, so transactions queue on locks and each runs
  on that thread: one hand-off per call instead of one per statement (aiosqlite's way,
  which served about 1.5 times fewer updates per second on one worker).

The same services run unchanged from the CLI and the tests, over a synchronous engine.

A unit of work opens only once its request has been read whole (`unit_of_work` depends on
`request_read`): no connection, transaction or lock is held while a client sends its
body, and every wait for one is bounded (`pool_timeout`, then 503 SERVICE_BUSY).

On PostgreSQL, a transaction that the database rolls back to settle a conflict with a
concurrent one (a deadlock, a serialization failure) is run again, a few times at most:
its first call is the whole of the work so far, so it can be replayed from a fresh
transaction (`RetriedWork`). Services take their locks in one order (the parent row first)
so that this stays a safety net; what still fails after the last attempt is answered 409
(app.http), never as a database outage.

The hot path (introspection and the update, app.tokens.repository) drives psycopg itself
on PostgreSQL, from a pool of its own (`DriverPool`): `reads()` hands out a connection in
autocommit (one round trip a statement), `pipelined()` a transaction in pipeline mode (two
round trips for a locked read and a write). On SQLite it uses `read()` and `transaction()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Concatenate, ParamSpec, Protocol, TypeVar

import psycopg
from fastapi import Depends, Request
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as WaitTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool

from app.db import (
    DEADLOCK_DETECTED,
    ENGINE_OPTIONS,
    POSTGRES_CONNECT_ARGS,
    READ_ONLY,
    SERIALIZATION_FAILURE,
    SESSION_OPTIONS,
    driver_url,
    is_sqlite,
    libpq_url,
    make_engine,
    make_sessionmaker,
    sqlite_file,
    sqlstate,
)
from app.filelock import FileLock, LockTimeout

IDLE = TransactionStatus.IDLE
# The session's list of NOTIFY payloads its transaction sent (see `after_announcements`).
ANNOUNCEMENTS = "tokenstore.credentials_changed"
# The session's mark that its transaction appended token events (app.events.repository):
# once it has committed, the database's `events_committed` wakes the event relay.
EVENTS_WRITTEN = "tokenstore.events_written"
P = ParamSpec("P")
T = TypeVar("T")
# How often a unit of work is run in all when PostgreSQL keeps rolling it back for a
# conflict with concurrent transactions (`RetriedWork`), and the longest pause before a
# new attempt (a random part of it, so that the colliding requests do not meet again).
ATTEMPTS = 4
RETRY_PAUSE_S = 0.02


class UnitOfWork(Protocol):
    """What a route sees of its request's transaction."""

    async def run_sync(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T: ...


class Database(Protocol):
    pool: Pool
    url: str

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]: ...

    async def read(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T: ...

    async def ping(self) -> None: ...

    async def dispose(self) -> None: ...


def open_database(
    url: str,
    *,
    pool_size: int,
    pool_timeout: float,
    statement_timeout: float,
    idle_in_transaction_timeout: float,
) -> AsyncDatabase | ThreadedDatabase:
    if is_sqlite(url):
        return ThreadedDatabase(url, pool_size=pool_size, wait_timeout=pool_timeout)
    return AsyncDatabase(
        url,
        pool_size=pool_size,
        pool_timeout=pool_timeout,
        statement_timeout=statement_timeout,
        idle_in_transaction_timeout=idle_in_transaction_timeout,
    )


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class AsyncDatabase:
    """PostgreSQL from the event loop (psycopg's async mode)."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int,
        pool_timeout: float,
        statement_timeout: float,
        idle_in_transaction_timeout: float,
    ) -> None:
        # A fixed pool and no overflow: an overflow connection is closed when it is
        # returned, so a load above the pool size opened and closed a connection per
        # request (a PostgreSQL backend forked each time, psycopg's prepared statements
        # lost). Requests beyond the pool wait their turn, up to `pool_timeout` seconds
        # (then 503 SERVICE_BUSY), and PostgreSQL sees at most `pool_size` connections per
        # worker. No pre-ping (a round trip on every checkout): a connection that a
        # database restart broke fails its request with 503, and SQLAlchemy then
        # invalidates every older pooled connection at once
        # (tests/resilience/test_database_outage.py).
        # A statement timeout (lock waits count) bounds how long a stuck row lock or a slow
        # database can hold a request and its connection: PostgreSQL cancels the
        # statement, the transaction rolls back, and the request is answered 503.
        # No transaction waits on a client (requests are read whole before one opens), so
        # a transaction left idle is a fault: PostgreSQL ends it, and its locks with it,
        # after the idle-in-transaction timeout (a safety net the statement timeout is not).
        options = (
            f"-c statement_timeout={_milliseconds(statement_timeout)}"
            f" -c idle_in_transaction_session_timeout={_milliseconds(idle_in_transaction_timeout)}"
        )
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            driver_url(url),
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=pool_timeout,
            connect_args={
                **POSTGRES_CONNECT_ARGS,
                "options": options,
            },
            **ENGINE_OPTIONS,
        )
        self.pool = self.engine.pool
        self._sessions = async_sessionmaker(self.engine, **SESSION_OPTIONS)
        self.driver = DriverPool(
            libpq_url(url), size=pool_size, timeout=pool_timeout, options=options
        )
        # Awaited after a commit that announced changes (NOTIFY payloads), before the
        # answer goes out: app.credentials waits there for their delivery.
        self.after_announcements: Callable[[list[str]], Awaitable[None]] | None = None
        # Called after a commit that appended token events: wakes the relay (app.events).
        self.after_events: Callable[[], None] | None = None

    def events_committed(self) -> None:
        if self.after_events is not None:
            self.after_events()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        session = self._sessions()
        try:
            yield RetriedWork(session)
            await session.commit()
            if session.sync_session.info.pop(EVENTS_WRITTEN, False):
                self.events_committed()
            announced = session.sync_session.info.pop(ANNOUNCEMENTS, None)
            if announced and self.after_announcements is not None:
                await self.after_announcements(announced)
        except BaseException:
            await session.rollback()
            raise
        finally:
            await session.close()

    async def read(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A read through the ORM, in a transaction of its own (rare paths only)."""
        async with self.transaction() as work:
            return await work.run_sync(fn, *args, **kwargs)

    @asynccontextmanager
    async def reads(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A hot-path connection for pure reads and single statements, in autocommit: no
        BEGIN and no COMMIT around them (one round trip each)."""
        async with self.driver.connection() as connection:
            yield connection

    @asynccontextmanager
    async def pipelined(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A transaction on a hot-path connection in pipeline mode, for the read-modify-write
        of an update: the BEGIN travels with the first statement and the COMMIT with the last
        write, so a locked read and a write cost two round trips in all. Commits when the
        block ends, rolls back when it raises."""
        async with self.driver.connection() as connection:
            try:
                async with connection.pipeline():
                    await connection.execute(b"BEGIN")
                    yield connection
                    await connection.execute(b"COMMIT")
            except BaseException:
                if connection.pgconn.transaction_status != IDLE and not connection.closed:
                    # A connection that cannot roll back is not reused (DriverPool).
                    with contextlib.suppress(psycopg.Error):
                        await connection.execute(b"ROLLBACK")
                raise

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.driver.close()
        await self.engine.dispose()


class RetriedWork:
    """A unit of work on PostgreSQL whose first call runs again, in a fresh transaction,
    when PostgreSQL rolled its transaction back to settle a conflict with a concurrent one:
    a deadlock or a serialization failure, which its manual tells clients to retry (13.6,
    "Serialization Failure Handling"). At most `ATTEMPTS` runs in all; then the error goes
    up (409, app.http).

    Only the first call: it is the transaction's whole work so far, so running it again
    redoes everything the rollback undid (every management route makes one call, whose
    function builds its rows anew). A later call's failure is not retried, since the
    rollback undid its predecessors too, and only the route knows them. Nothing is
    retried once the route has returned: a commit on PostgreSQL's default isolation level
    fails for neither reason.
    """

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._called = False

    async def run_sync(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self._called:
            return await self._session.run_sync(fn, *args, **kwargs)
        self._called = True
        for attempt in range(1, ATTEMPTS):
            try:
                return await self._session.run_sync(fn, *args, **kwargs)
            except DBAPIError as error:
                if sqlstate(error) not in (DEADLOCK_DETECTED, SERIALIZATION_FAILURE):
                    raise
            await self._session.rollback()
            # The failed attempt's announcements were never sent (app.services.repository),
            # nor its events written.
            self._session.sync_session.info.pop(ANNOUNCEMENTS, None)
            self._session.sync_session.info.pop(EVENTS_WRITTEN, None)
            await asyncio.sleep(random.uniform(0, RETRY_PAUSE_S * attempt))  # noqa: S311
        return await self._session.run_sync(fn, *args, **kwargs)


class DriverPool:
    """psycopg connections for the hot path, in autocommit, outside SQLAlchemy: its pool
    checkout cost about 50 microseconds a request (bench/README.md), this one about one.

    At most `size` connections, opened when needed and kept; a request that finds none free
    waits up to `timeout` seconds, then gets 503 SERVICE_BUSY (SQLAlchemy's TimeoutError,
    as for the ORM's pool). A connection that breaks (a database restart) is discarded with
    every idle connection opened before it, as SQLAlchemy invalidates its pool."""

    def __init__(self, conninfo: str, *, size: int, timeout: float, options: str) -> None:
        self._conninfo = conninfo
        self._options = options
        self._timeout = timeout
        self._free = asyncio.Semaphore(size)
        self._idle: list[tuple[int, psycopg.AsyncConnection[Any]]] = []
        self._generation = 0
        self._closing: set[asyncio.Task[None]] = set()
        self.in_use = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._free.locked():
            try:
                async with asyncio.timeout(self._timeout):
                    await self._free.acquire()
            except TimeoutError:
                raise WaitTimeout("no hot-path connection became free in time") from None
        else:
            await self._free.acquire()  # free: returns at once
        self.in_use += 1
        try:
            generation, connection = self._idle.pop() if self._idle else await self._connect()
            try:
                yield connection
            finally:
                self._put_back(generation, connection)
        finally:
            self.in_use -= 1
            self._free.release()

    async def _connect(self) -> tuple[int, psycopg.AsyncConnection[Any]]:
        generation = self._generation
        connection = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, options=self._options
        )
        return generation, connection

    def _put_back(self, generation: int, connection: psycopg.AsyncConnection[Any]) -> None:
        if connection.broken:  # the server went away: so did every connection opened before
            self._generation += 1
            stale, self._idle = self._idle, []
            for _, other in stale:
                self._close_later(other)
        if connection.broken or connection.pgconn.transaction_status != IDLE:
            self._close_later(connection)  # a call cut off in the middle: not reusable
        elif generation == self._generation:
            self._idle.append((generation, connection))
        else:
            self._close_later(connection)

    def _close_later(self, connection: psycopg.AsyncConnection[Any]) -> None:
        task = asyncio.get_running_loop().create_task(connection.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, connection in idle:
            await connection.close()


class ThreadedDatabase:
    """SQLite from one thread of its own, one transaction at a time across the workers.

    SQLite's busy handler makes a waiting writer sleep in growing steps (up to 100 ms)
    while the lock may already be free: under concurrency the tail latency reached
    seconds. So transactions queue on locks that hand over at once instead: an asyncio
    lock between the requests of a process (a request that waits longer than
    `wait_timeout` for it is answered 503), then an exclusive `flock` on a file beside the
    database between the worker processes (the kernel wakes the next waiter when it is
    released, and releases it when a process dies). Other programs on the same file
    still meet SQLite's own locking (`BEGIN IMMEDIATE` and the busy timeout, app.db).

    One thread runs every call in order, so whatever happens to the awaiting request
    (a cancelled call, say), the rollback, the close and the file unlock run after what
    was already started, and before the next transaction's first call.
    """

    def __init__(self, url: str, *, pool_size: int, wait_timeout: float) -> None:
        self.url = url
        self.engine: Engine = make_engine(url, pool_size=pool_size)
        self._wait_timeout = wait_timeout
        self.pool = self.engine.pool
        self._sessions = make_sessionmaker(self.engine)
        self._read_sessions = make_sessionmaker(self.engine.execution_options(**{READ_ONLY: True}))
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._writer = asyncio.Lock()
        self._between_processes = lock_beside(url)
        # Called after a commit that appended token events: wakes the relay (app.events).
        self.after_events: Callable[[], None] | None = None

    def events_committed(self) -> None:
        if self.after_events is not None:
            self.after_events()

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the database thread, in this task's context (its log request id)."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._thread, call)

    async def call_to_the_end(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """As `call`, but `fn` runs even if the awaiting task is cancelled meanwhile (a
        transaction's end: its locks must be released whatever happens to the request)."""
        context = contextvars.copy_context()
        future = self._thread.submit(functools.partial(context.run, fn, *args, **kwargs))
        return await asyncio.shield(asyncio.wrap_future(future))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        """A write transaction: the process's turn, then (on the database thread) the turn
        between processes and the session, the caller's calls, and the end (commit or
        rollback, close, release) in one call."""
        try:
            async with asyncio.timeout(self._wait_timeout):
                await self._writer.acquire()
        except TimeoutError:
            # As a PostgreSQL request that finds no free pooled connection: 503 SERVICE_BUSY.
            raise WaitTimeout("no turn at the SQLite writer lock in time") from None
        try:
            session = await self.call_to_the_end(self._begin)
            try:
                yield _ThreadedSession(self, session)
            except BaseException:
                await self.call_to_the_end(self._end, session, commit=False)
                raise
            await self.call_to_the_end(self._end, session, commit=True)
        finally:
            self._writer.release()
        if session.info.pop(EVENTS_WRITTEN, False):
            self.events_committed()

    def _begin(self) -> Session:
        if self._between_processes is not None:
            try:
                self._between_processes.acquire(timeout=self._wait_timeout)
            except LockTimeout:
                # Another worker process held the database for the whole wait.
                raise WaitTimeout("no turn at the SQLite file lock in time") from None
        return self._sessions()

    def _end(self, session: Session, *, commit: bool) -> None:
        try:
            if commit:
                try:
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
            else:
                session.rollback()
        finally:
            try:
                session.close()
            finally:
                if self._between_processes is not None:
                    self._between_processes.release()

    async def read(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A pure read, in one call on the database thread and outside the writer's queue:
        WAL lets it read a consistent snapshot beside a writer, and it takes no lock."""
        return await self.call(
            functools.partial(_read_once, self._read_sessions, fn, *args, **kwargs)
        )

    async def ping(self) -> None:
        await self.call(_select_one, self.engine)

    async def dispose(self) -> None:
        await self.call(self.engine.dispose)
        self._thread.shutdown(wait=True)
        if self._between_processes is not None:
            self._between_processes.close()


def lock_beside(url: str) -> FileLock | None:
    """`<database>.lock`, the SQLite writers' turn between processes (a job that writes
    beside a server, `tokenstore rekey`, queues on it too); an in-memory database has no
    file and no other process."""
    database = sqlite_file(url)
    return None if database is None else FileLock(f"{database}.lock")


class _ThreadedSession:
    def __init__(self, database: ThreadedDatabase, session: Session) -> None:
        self._database = database
        self._session = session

    async def run_sync(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await self._database.call(fn, self._session, *args, **kwargs)


def _read_once(
    sessions: sessionmaker[Session], fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    with sessions() as session:
        return fn(session, *args, **kwargs)


def _select_one(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def request_read(request: Request) -> None:
    """Waits for the whole request body (Starlette keeps it for the body's own parser)."""
    await request.body()


async def unit_of_work(
    request: Request, _read: Annotated[None, Depends(request_read)]
) -> AsyncIterator[UnitOfWork]:
    """The request's unit of work: commit on success, roll back on any error.

    It opens only once the whole request has arrived (`request_read`): no pooled
    connection, transaction or lock is held while a client trickles its body. Routes also
    declare it after their body and credentials, so those are parsed and checked first."""
    database: Database = request.app.state.database
    async with database.transaction() as work:
        yield work


# What a route declares to get its unit of work (after its body and credentials).
UnitOfWorkDep = Annotated[UnitOfWork, Depends(unit_of_work, scope="function")]
