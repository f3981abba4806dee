"""Engines, metadata and the one transaction owner.

The request-scoped session (`get_session`) commits when the route returns and rolls back
when it raises; services and repositories never commit. It runs with FastAPI's
`scope="function"`, so the commit happens before the response is sent: a failed commit
becomes an error response, never a 200 for a write that did not happen.

Requests run on the event loop with an `AsyncSession` (psycopg's async mode; aiosqlite on
SQLite). Services and repositories stay plain synchronous code over a `Session`: routes
call them through `AsyncSession.run_sync`, where SQLAlchemy runs them in a greenlet and
awaits each database round trip on the loop. Measured on the update path, this halved
the server CPU per request against sync routes in the thread pool, whose four thread
hand-offs and GIL contention on every round trip cost more than the work itself
(bench/README.md). The same services run unchanged from the CLI and the tests, over a
synchronous engine (`make_engine`).

SQLite: every transaction starts with `BEGIN IMMEDIATE`, taking the write lock up front.
A deferred transaction that reads and then writes can fail with SQLITE_BUSY at the lock
upgrade without waiting for the busy timeout; an immediate one waits its turn instead.
WAL lets readers proceed beside the one writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Request
from sqlalchemy import JSON, Engine, MetaData, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as sqlalchemy_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_S = 30


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def driver_url(url: str) -> str:
    """Accept plain `postgresql://` (or `postgres://`) and pick the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """The synchronous engine: migrations, the CLI, background jobs and tests."""
    real_url = driver_url(url)
    if not is_sqlite(real_url):
        # pool_pre_ping: after a database restart, stale connections are replaced instead
        # of failing the next request.
        return create_engine(
            real_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )
    _make_sqlite_directory(real_url)
    engine = create_engine(
        real_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
    )
    _configure_sqlite(engine)
    return engine


def make_async_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """The engine requests use: psycopg in async mode, or aiosqlite."""
    real_url = driver_url(url)
    if not is_sqlite(real_url):
        # No pre-ping (a round trip on every checkout): a connection that a database
        # restart broke fails its request with 503, and SQLAlchemy then invalidates every
        # older pooled connection at once (tests/resilience/test_database_outage.py).
        return sqlalchemy_async_engine(real_url, pool_size=pool_size, max_overflow=pool_size)
    _make_sqlite_directory(real_url)
    async_url = make_url(real_url).set(drivername="sqlite+aiosqlite")
    engine = sqlalchemy_async_engine(
        async_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
    )
    _configure_sqlite(engine.sync_engine)
    return engine


def _make_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below (the pysqlite
        # driver's own implicit BEGIN is deferred and cannot be made immediate).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


def make_async_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def writer_lock(url: str) -> asyncio.Lock | None:
    """SQLite has one writer at a time, and its busy handler makes a waiting writer sleep
    in growing steps (up to 100 ms) while the lock may already be free: under concurrency
    the tail latency reaches seconds. Queueing this process's transactions on a lock hands
    it over at once; only other processes still meet SQLite's own locking."""
    return asyncio.Lock() if is_sqlite(url) else None


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: commit on success, roll back on any error."""
    lock: asyncio.Lock | None = request.app.state.writer_lock
    if lock is not None:
        try:
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_S):
                await lock.acquire()
        except TimeoutError:
            raise OperationalError("BEGIN", None, TimeoutError("the SQLite writer lock")) from None
    session: AsyncSession = request.app.state.sessionmaker()
    try:
        yield session
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()
        if lock is not None:
            lock.release()


# JSON documents (scopes, properties, authorization details): JSONB on PostgreSQL.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")
