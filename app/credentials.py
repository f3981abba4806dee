"""Service credentials without a database round trip: a per-process replica, kept coherent.

Every request of a service is authenticated (HTTP Basic with the API key and secret, or a v3
service access token), so reading the secret's digest from the database cost one round trip
per request. Each process instead keeps a replica of every service's secret digest and of
every service access token's key: a copy of all of them, not a cache of the keys seen, so an
unknown key and a wrong secret are answered from memory alike (a cache of recently used keys
would tell by its timing which keys exist), and its size is the number of services, never
what strangers send.

Coherence, so that a deleted service or a revoked service access token stops working at once
in every process of every host:

- Every write that changes credentials also announces it (`services.repository`), in the
  same transaction: on PostgreSQL a `NOTIFY`, delivered by the server to every listening
  connection when the transaction commits; on SQLite, a bump of the epoch file beside the
  database (`<database>.credentials`) right after the commit.
- On PostgreSQL each process keeps one connection that `LISTEN`s, and before every lookup
  it drains that connection's socket without blocking, so a notification that arrived
  before the request is applied before the request is answered. The request that made
  the change answers only once its own process's listener has the notification (sent to
  every listener at the same moment): by then the others have it on their sockets. On
  SQLite every lookup compares the epoch file's timestamp (one `stat`).
- An announcement distrusts the whole replica at once; until it is reloaded (a background
  task), lookups read the database, as they do while the listening connection is down or
  before the first load. The replica is also read anew every `MAX_AGE_SECONDS`, in the
  background (the old copy serves meanwhile: no change is known).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.db import is_sqlite, libpq_url, sqlite_file
from app.services import repository as services
from app.services.repository import CREDENTIALS_CHANNEL, BearerOwner, Credentials, StoredSecret

log = logging.getLogger("tokenstore.credentials")

# A backstop for anything that could slip past an announcement (a process killed between
# its SQLite commit and its epoch bump): no replica is older than this.
MAX_AGE_SECONDS = 60.0
RECONNECT_SECONDS = 1.0
DELIVERY_TIMEOUT_SECONDS = 2.0
RECENT_PAYLOADS = 256


@dataclass
class _Copy:
    credentials: Credentials
    loaded_at: float


@dataclass
class CredentialReplica:
    """The process's copy of every service credential; `None` while it is not trusted."""

    url: str
    # Reads the credentials from the database (a pure read, in a transaction of its own).
    read: Callable[..., Any]
    _copy: _Copy | None = None
    _feed: _ChangeFeed | None = None
    _task: asyncio.Task[None] | None = None
    _reload: asyncio.Event = field(default_factory=asyncio.Event)
    # The credentials this process is moving to the current key (`move`).
    _moving: set[Hashable] = field(default_factory=set)

    async def digest_of(self, api_key: int) -> StoredSecret | None:
        copy = self._current()
        if copy is None:
            stored: StoredSecret | None = await self.read(services.secret_digest_of, api_key)
            return stored
        return copy.credentials.digests.get(api_key)

    async def service_of_token(self, token_keys: Sequence[str]) -> tuple[str, BearerOwner] | None:
        """The first of `token_keys` (a value's key under each listed hash secret, the
        current one first) that is stored, and its owner."""
        copy = self._current()
        if copy is None:
            found: tuple[str, BearerOwner] | None = await self.read(
                services.service_of_access_token, token_keys
            )
            return found
        bearer = copy.credentials.bearer
        for token_key in token_keys:
            owner = bearer.get(token_key)
            if owner is not None:
                return token_key, owner
        return None

    async def move(self, credential: Hashable, write: Callable[[], Awaitable[object]]) -> None:
        """Runs `write`, which moves a credential verified under an older key to the
        current one (in a transaction of its own, announced), unless this process is
        moving it already: the requests that carry it meanwhile do not queue for the same
        no-op write. A failure only leaves the credential where it was (it stays valid and
        moves at its next use), so it is logged, not raised."""
        if credential in self._moving:
            return
        self._moving.add(credential)
        try:
            await write()
        except Exception as error:  # the database is down or busy: the request goes on
            log.warning("credential not moved to the current key: %s", type(error).__name__)
        finally:
            self._moving.discard(credential)

    def _current(self) -> _Copy | None:
        if self._task is None:
            self._start()
        if self._feed is None or not self._feed.unchanged():
            self._distrust()
        copy = self._copy
        if copy is not None and time.monotonic() - copy.loaded_at > MAX_AGE_SECONDS:
            # No change is known: the copy serves on while a fresh one is read.
            self._reload.set()
        return copy

    async def delivered(self, payloads: list[str]) -> None:
        """After a commit that changed credentials (PostgreSQL): returns once this process's
        listener has the notification, so this process trusts no stale copy from now on,
        and the other listeners, notified at the same moment, have it too. Without a
        listener the replica is not trusted anyway."""
        feed = self._feed
        if isinstance(feed, _Notifications) and not feed.broken:
            await feed.delivered(payloads, DELIVERY_TIMEOUT_SECONDS)

    def _distrust(self) -> None:
        if self._copy is not None:
            log.info("credentials changed: reloading the replica")
        self._copy = None
        self._reload.set()

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        """Follows the change feed, and reloads the replica whenever it was distrusted."""
        while True:
            try:
                if self._feed is None:
                    self._feed = await _open_feed(self.url)
                self._reload.clear()
                mark = self._feed.mark()
                credentials = await self.read(services.all_credentials)
                if not self._feed.unchanged(since=mark):
                    continue  # changed while it was read: read it again
                self._copy = _Copy(credentials, time.monotonic())
                await self._reload.wait()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database is down: lookups read it meanwhile
                log.warning("credential replica unavailable: %s", type(error).__name__)
                self._copy = None
                if self._feed is not None:
                    await self._feed.close()
                    self._feed = None
                await asyncio.sleep(RECONNECT_SECONDS)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._feed is not None:
            await self._feed.close()


class _ChangeFeed:
    """Tells whether credentials may have changed since a mark."""

    def mark(self) -> object:
        raise NotImplementedError

    def unchanged(self, *, since: object | None = None) -> bool:
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def _open_feed(url: str) -> _ChangeFeed:
    if is_sqlite(url):
        return _EpochFile(epoch_file(url))
    return await _Notifications.listen(url)


class _Notifications(_ChangeFeed):
    """PostgreSQL `LISTEN` on a connection of its own (outside the pool). Its socket is
    drained without blocking on every check, and whenever the event loop sees it readable."""

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._connection = connection
        self._count = 0
        self._seen = 0
        self._broken = False
        self._waiting: dict[str, asyncio.Future[None]] = {}
        # The latest payloads received: a notification can arrive (and be drained) while
        # its sender still awaits its COMMIT, before it starts waiting for it.
        self._received: collections.deque[str] = collections.deque(maxlen=RECENT_PAYLOADS)
        self._fd = connection.pgconn.socket
        asyncio.get_running_loop().add_reader(self._fd, self._drain)

    @classmethod
    async def listen(cls, url: str) -> _Notifications:
        connection = await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True)
        await connection.execute(f"LISTEN {CREDENTIALS_CHANNEL}")
        return cls(connection)

    def _drain(self) -> None:
        if self._broken:
            return
        pgconn = self._connection.pgconn
        try:
            pgconn.consume_input()
        except psycopg.OperationalError:
            self._broken = True
        while (notification := pgconn.notifies()) is not None:
            self._count += 1
            payload = notification.extra.decode()
            self._received.append(payload)
            waiter = self._waiting.pop(payload, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if self._broken or pgconn.status != psycopg.pq.ConnStatus.OK:
            self._broken = True
            asyncio.get_running_loop().remove_reader(self._fd)

    async def delivered(self, payloads: list[str], timeout: float) -> None:
        """Waits until this connection has received the notifications sent with `payloads`
        (sent to every listener at the same moment)."""
        loop = asyncio.get_running_loop()
        self._drain()
        waiters = [
            self._waiting.setdefault(p, loop.create_future())
            for p in payloads
            if p not in self._received
        ]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waiters)
        except TimeoutError:
            log.warning("a credentials notification did not come back within %s s", timeout)
        finally:
            for payload in payloads:
                self._waiting.pop(payload, None)

    @property
    def broken(self) -> bool:
        return self._broken

    def mark(self) -> object:
        self._drain()
        return self._count

    def unchanged(self, *, since: object | None = None) -> bool:
        self._drain()
        if self._broken:
            return False
        if since is not None:
            return self._count == since
        if self._count != self._seen:
            self._seen = self._count
            return False
        return True

    async def close(self) -> None:
        if not self._broken:
            asyncio.get_running_loop().remove_reader(self._fd)
        self._broken = True
        await self._connection.close()


class _EpochFile(_ChangeFeed):
    """SQLite: the modification time of `<database>.credentials`, bumped by every commit
    that changed credentials (`bump_epoch`); one `stat` per check."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._seen = self._read()

    def _read(self) -> int | None:
        if self._path is None:
            return None
        try:
            return os.stat(self._path).st_mtime_ns
        except FileNotFoundError:
            return 0

    def mark(self) -> object:
        return self._read()

    def unchanged(self, *, since: object | None = None) -> bool:
        if self._path is None:  # an in-memory database: never trusted
            return False
        now = self._read()
        if since is not None:
            return now == since
        if now != self._seen:
            self._seen = now
            return False
        return True


def epoch_file(url: str) -> str | None:
    database = sqlite_file(url)
    return None if database is None else f"{database}.credentials"


def bump_epoch(path: str) -> None:
    """Moves the epoch file's timestamp forward: strictly, even within one clock tick."""
    try:
        before = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        before = 0
    after = max(time.time_ns(), before + 1)
    os.utime(path, ns=(after, after))


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    """SQLite's announcement: after the commit of a transaction that changed credentials
    (`services.repository.announce_credentials_changed` marks it). On PostgreSQL the
    NOTIFY went with the commit, and the unit of work awaits its delivery
    (`CredentialReplica.delivered`)."""
    engine = session.get_bind().engine
    if engine.dialect.name != "sqlite" or not session.info.pop(services.CREDENTIALS_CHANGED, None):
        return
    path = epoch_file(str(engine.url))
    if path is not None:
        bump_epoch(path)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(services.CREDENTIALS_CHANGED, None)
