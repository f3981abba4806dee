"""Running `tokenstore serve` as a separate process, as a user (or a crash) would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

TOKENSTORE = str(Path(sys.executable).with_name("tokenstore"))


def clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSTORE_")}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def command(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs a `tokenstore` command to its end."""
    return subprocess.run(
        [TOKENSTORE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def start(cwd: Path, env: dict[str, str], port: int, *extra: str) -> subprocess.Popen[str]:
    """Starts `tokenstore serve`, its output going to `serve-<port>.log` in `cwd`: a pipe
    nobody reads would fill up under load and block the server on its own log lines."""
    with (cwd / f"serve-{port}.log").open("w") as log:
        return subprocess.Popen(
            [TOKENSTORE, "serve", "--port", str(port), *extra],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip


def wait_until_healthy(base: str, process: subprocess.Popen[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            pytest.fail("serve exited early")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"serve did not answer /health within {seconds} s")
        time.sleep(0.1)


@contextmanager
def serving(cwd: Path, env: dict[str, str], *extra: str) -> Iterator[tuple[str, list[str]]]:
    """Runs `tokenstore serve`; yields its URL and a list that holds its output once it
    has stopped."""
    port = free_port()
    process = start(cwd, env, port, *extra)
    base = f"http://127.0.0.1:{port}"
    output: list[str] = []
    try:
        wait_until_healthy(base, process)
        yield base, output
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        output.append((cwd / f"serve-{port}.log").read_text())
