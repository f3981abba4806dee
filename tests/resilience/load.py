"""A small, bounded update load and the check that no token was torn by it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select

from app.db import make_engine
from app.tokens.models import TokenRow

BASE_EXPIRY = 4_000_000_000_000  # far ahead, so every writer's expiry is its own


def whole_update(token: str, writer: int) -> dict[str, Any]:
    """An update whose three effects all name its writer: a torn one would not."""
    return {
        "accessToken": token,
        "accessTokenExpiresAt": BASE_EXPIRY + writer,
        "properties": [{"key": "writer", "value": str(writer)}],
        "authorizationDetails": {"elements": [{"type": f"writer-{writer}"}]},
    }


@dataclass
class Load:
    """Threads that keep updating the tokens until stopped, recording every answer."""

    base: str
    auth: tuple[str, str]
    tokens: list[str]
    threads: int = 4
    answers: list[tuple[float, int, dict[str, Any] | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _counter: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _next(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, auth=self.auth, timeout=10) as client:
            while not self._stop.is_set():
                writer = self._next()
                token = self.tokens[writer % len(self.tokens)]
                try:
                    response = client.post("/auth/token/update", json=whole_update(token, writer))
                    body = response.json() if response.content else None
                    self.answers.append((time.monotonic(), response.status_code, body))
                except httpx.TransportError:
                    self.answers.append((time.monotonic(), 0, None))  # the server is gone
                    time.sleep(0.05)

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)


def torn_tokens(database_url: str) -> list[dict[str, Any]]:
    """Rows whose fields do not all come from one update (or from none)."""
    engine = make_engine(database_url, pool_size=1)
    torn = []
    try:
        with engine.connect() as connection:
            for row in connection.execute(select(TokenRow.__table__)).mappings():
                if not row["properties"]:
                    continue  # never updated: its created state is whole
                writer = int(row["properties"][0]["value"])
                if row["access_expires_at"] != BASE_EXPIRY + writer or row[
                    "authorization_details"
                ] != [{"type": f"writer-{writer}"}]:
                    torn.append(dict(row))
    finally:
        engine.dispose()
    return torn
