"""An exclusive `flock` on a file, shared by the processes of one host (POSIX): the kernel
wakes the next waiter as soon as it is released, and releases it when its process dies.

`flock` itself waits without bound. `acquire(timeout=...)` bounds the wait: it first tries
without blocking, and when another process holds the lock the blocking call runs on a
waiter thread of the lock's own, and a caller that gives up leaves it
behind marked as abandoned, so that the lock, once the kernel hands it over, is released
at once. One waiter thread runs every call in order, so an abandoned wait and the next
caller's wait can never both believe they hold the lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path


class LockTimeout(Exception):
    """The lock did not become free within the timeout."""


class FileLock:
    """Opened once per process; `acquire` and `release` may be called many times."""

    def __init__(self, path: Path | str) -> None:
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._waiter: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()
        self._waits = 0  # timed waits handed to the waiter thread and not over yet

    def acquire(self, *, wait: bool = True, timeout: float | None = None) -> bool:
        """Takes the lock, waiting for it if `wait` (up to `timeout` seconds, then
        `LockTimeout`); else False when another process holds it."""
        fd = self._open_fd()
        if not wait:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return True
        if not self._waits:  # no abandoned wait could hand the lock back meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held by another process: wait for it, boundedly
            else:
                return True
        wait_ = _Wait()
        with self._guard:
            self._waits += 1
        future = self._waiter_thread().submit(self._take, fd, wait_)
        try:
            future.result(timeout=timeout)
        except FutureTimeout:
            if not wait_.give_up():
                return True  # taken in the meantime: ours after all
            raise LockTimeout(f"the lock was not free within {timeout} s") from None
        return True

    def _take(self, fd: int, wait: _Wait) -> None:
        """Blocks for the lock; gives it back at once when its caller gave up waiting."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not wait.taken():
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            with self._guard:
                self._waits -= 1

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.shutdown(wait=False, cancel_futures=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open_fd(self) -> int:
        if self._fd is None:
            raise ValueError("the lock file is closed")
        return self._fd

    def _waiter_thread(self) -> ThreadPoolExecutor:
        with self._guard:
            if self._waiter is None:
                self._waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flock")
            return self._waiter


class _Wait:
    """Who decides a timed wait: the waiter (it took the lock) or the caller (it gave up),
    whichever comes first, under one mutex."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._taken = False
        self._abandoned = False

    def taken(self) -> bool:
        """The waiter got the lock; False if the caller had given up (it must unlock)."""
        with self._mutex:
            self._taken = not self._abandoned
            return self._taken

    def give_up(self) -> bool:
        """The caller stops waiting; False if the lock was taken for it meanwhile."""
        with self._mutex:
            self._abandoned = not self._taken
            return self._abandoned
