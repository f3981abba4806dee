"""An exclusive `flock` on a file, shared by the processes of one host (POSIX): the kernel
wakes the next waiter as soon as it is released, and releases it when its process dies."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class FileLock:
    """Opened once per process; `acquire` and `release` may be called many times."""

    def __init__(self, path: Path | str) -> None:
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self, *, wait: bool = True) -> bool:
        """Takes the lock, waiting for it if `wait`; else False when another holds it."""
        if self._fd is None:
            raise ValueError("the lock file is closed")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
