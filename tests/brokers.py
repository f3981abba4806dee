"""NATS JetStream for the tests: a broker of a test's own, to stop and start at will, the
shared broker's address, and reading back what the relay published.

A test that stops a broker runs one of its own (`Broker`: a free port, its own store
directory), never the machine's. A test that only needs a broker uses the shared one at
`TOKENSTORE_TEST_NATS_URL` (scripts/test starts it). Either way a missing `nats-server`
or an unreachable broker fails the test: it never skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import pytest
from nats.js.errors import NotFoundError

from app.events.relay import STREAM
from tests.servers import free_port

SHARED_NATS_URL = os.environ.get("TOKENSTORE_TEST_NATS_URL", "nats://127.0.0.1:4222")
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class Broker:
    """`nats-server` with JetStream on a free port, storing under `directory`: stopped and
    started again, it comes back with the same streams (and the same port)."""

    def __init__(self, directory: Path) -> None:
        if not Path(NATS_SERVER).is_file():
            pytest.fail(
                "nats-server is not installed: these tests start brokers of their own "
                "(Debian: apt-get install nats-server; scripts/test does it as root)",
                pytrace=False,
            )
        self.port = free_port()
        self.directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, seconds: float = 10) -> None:
        command = [
            NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js",
            "-sd", str(self.directory / "nats-store"),
        ]  # fmt: skip
        with (self.directory / f"nats-{self.port}.log").open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + seconds
        while not _serves_jetstream("127.0.0.1", self.port):
            if self._process.poll() is not None:
                pytest.fail(f"nats-server exited early: see {log.name}")
            if time.monotonic() > deadline:
                pytest.fail(f"nats-server did not serve JetStream within {seconds} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """A clean stop (SIGTERM): what the broker acknowledged is on disk."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None


@contextmanager
def own_broker(directory: Path, *, started: bool = True) -> Iterator[Broker]:
    broker = Broker(directory)
    if started:
        broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _serves_jetstream(host: str, port: int) -> bool:
    """The server's first line is `INFO {...}`; it says whether JetStream is on."""
    try:
        with socket.create_connection((host, port), timeout=1) as connection:
            first = connection.makefile("rb").readline()
    except OSError:
        return False
    return first.startswith(b"INFO ") and json.loads(first[5:]).get("jetstream") is True


async def _quiet(_error: Exception) -> None:
    """nats-py logs each failed attempt with its traceback by default."""


def shared_broker() -> str:
    """The shared broker's URL, once it answers with JetStream on; else the test fails."""
    address = urlsplit(SHARED_NATS_URL)
    if not _serves_jetstream(address.hostname or "127.0.0.1", address.port or 4222):
        pytest.fail(
            f"no NATS server with JetStream at {SHARED_NATS_URL} (TOKENSTORE_TEST_NATS_URL): "
            "scripts/test starts it",
            pytrace=False,
        )
    return SHARED_NATS_URL


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message of the stream: its subject, `Nats-Msg-Id` and CloudEvents body."""

    seq: int
    subject: str
    message_id: str | None
    event: dict[str, Any]


def service_subjects(api_key: str | int) -> str:
    return f"tokenstore.events.{api_key}.>"


def delivered(url: str, subjects: str) -> list[Delivered]:
    """Every message in the stream on `subjects`, in stream order (none when the stream is
    not there yet)."""
    return asyncio.run(_read(url, subjects))


async def _read(url: str, subjects: str) -> list[Delivered]:
    # nats-py tries a server again and again, allow_reconnect or not, until it has failed
    # more than max_reconnect_attempts times (60 by default, two seconds apart).
    client = await nats.connect(
        servers=[url], connect_timeout=2, max_reconnect_attempts=1, error_cb=_quiet
    )
    try:
        stream = client.jetstream(timeout=5)
        found: list[Delivered] = []
        seq = 1
        while True:
            try:
                message = await stream.get_msg(STREAM, seq=seq, subject=subjects, next=True)
            except NotFoundError:  # no stream yet, or no message at or after `seq`
                return found
            assert message.seq is not None
            assert message.subject is not None
            assert message.data is not None
            headers = message.headers or {}
            found.append(
                Delivered(
                    message.seq, message.subject, headers.get("Nats-Msg-Id"),
                    json.loads(message.data),
                )
            )  # fmt: skip
            seq = message.seq + 1
    finally:
        await client.close()


def wait_for_delivery(
    url: str, subjects: str, expected: set[str], seconds: float = 20
) -> list[Delivered]:
    """The stream's messages on `subjects` once their ids include all of `expected` (fails
    after `seconds`, saying how many are missing); then a moment more, so a duplicate or a
    stray event that came after would be in what it answers too."""
    deadline = time.monotonic() + seconds
    while True:
        messages = delivered(url, subjects)
        missing = expected - {message.message_id for message in messages}
        if not missing:
            time.sleep(0.5)
            return delivered(url, subjects)
        if time.monotonic() > deadline:
            pytest.fail(f"{len(missing)} of {len(expected)} events not delivered in {seconds} s")
        time.sleep(0.2)
