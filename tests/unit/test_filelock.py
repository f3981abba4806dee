"""The lock file between worker processes: a bounded wait, and an abandoned wait that
never leaves the lock taken. Two `FileLock`s on one file stand for two processes (each
has its own open file description, so their `flock`s conflict as between processes)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.filelock import FileLock, LockTimeout


def test_a_wait_for_a_held_lock_ends_in_lock_timeout_after_its_bound(tmp_path: Path) -> None:
    holder, waiter = FileLock(tmp_path / "db.lock"), FileLock(tmp_path / "db.lock")
    try:
        assert holder.acquire(timeout=1)
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            waiter.acquire(timeout=0.3)
        assert 0.25 <= time.monotonic() - started < 2
    finally:
        holder.close()
        waiter.close()


def test_an_abandoned_wait_gives_the_lock_back_once_it_gets_it(tmp_path: Path) -> None:
    holder, waiter = FileLock(tmp_path / "db.lock"), FileLock(tmp_path / "db.lock")
    third = FileLock(tmp_path / "db.lock")
    try:
        assert holder.acquire(timeout=1)
        with pytest.raises(LockTimeout):
            waiter.acquire(timeout=0.2)
        holder.release()  # the abandoned wait now gets the lock, and must hand it back
        deadline = time.monotonic() + 5
        while not third.acquire(wait=False):
            assert time.monotonic() < deadline, "the abandoned wait kept the lock"
            time.sleep(0.01)
        third.release()
        assert waiter.acquire(timeout=1)  # and the waiter can take it for real later
    finally:
        for lock in (holder, waiter, third):
            lock.close()


def test_a_bounded_wait_gets_the_lock_when_it_is_released_in_time(tmp_path: Path) -> None:
    holder, waiter = FileLock(tmp_path / "db.lock"), FileLock(tmp_path / "db.lock")
    try:
        assert holder.acquire(timeout=1)
        threading.Timer(0.2, holder.release).start()
        started = time.monotonic()
        assert waiter.acquire(timeout=5)
        assert time.monotonic() - started < 4
        assert not holder.acquire(wait=False)  # the waiter holds it now
    finally:
        holder.close()
        waiter.close()
