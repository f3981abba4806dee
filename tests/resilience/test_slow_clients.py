"""A client that sends its body slowly holds no database resource while it does.

Several requests of one tenant trickle their JSON bodies a byte at a time over raw sockets
while another tenant's updates and introspections run: those must be answered as usual and
at once, not wait behind the trickling requests (on SQLite, the writer lock between the
workers; on PostgreSQL, a small connection pool). Then the slow requests finish their
bodies and are answered, their updates applied.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.conftest import migrated_database
from tests.resilience.load import BASE_EXPIRY
from tests.resilience.tenant import server_environment, tenant_with_tokens
from tests.servers import serving

SLOW_CLIENTS = 8  # over 2 workers with 2 pooled connections each
BYTE_INTERVAL = 0.1  # seconds between the slow clients' body bytes
POOL_TIMEOUT = 3.0  # the server's wait for a connection or the SQLite writer lock
PROMPT = 2.0  # seconds within which each of the other tenant's requests must be answered
OTHER_REQUESTS = 50  # updates, and as many introspections
SLOW_FOR = 4.0  # seconds, at least, that each slow client takes over its body


@dataclass
class SlowClient:
    """One `POST /api/auth/token/update` whose body goes out a byte at a time.

    The bytes trickle until `finish` is set; the last one is held back until then, so the
    request stays unfinished as long as the rest of the test needs it to. After `finish`,
    the remaining bytes still go one at a time, briskly."""

    base: str
    auth: tuple[str, str]
    body: bytes
    finish: threading.Event
    started: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    answer: dict[str, Any] | None = None
    error: str | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def join(self, seconds: float) -> None:
        assert self._thread is not None
        self._thread.join(seconds)

    def _head(self, host: str) -> bytes:
        credentials = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return (
            "POST /api/auth/token/update HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"Authorization: Basic {credentials}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            "Connection: close\r\n"
            "\r\n"
        ).encode()

    def _run(self) -> None:
        url = urlsplit(self.base)
        assert url.hostname is not None
        assert url.port is not None
        try:
            with socket.create_connection((url.hostname, url.port), timeout=30) as connection:
                try:
                    self._send(connection, url.netloc)
                except OSError as error:  # the server answered (and closed) before the end
                    self.error = f"while sending the body: {error!r}"
                self._receive(connection)
        except OSError as error:
            self.error = f"{self.error or ''} {error!r}".strip()
        finally:
            self.started.set()

    def _send(self, connection: socket.socket, host: str) -> None:
        connection.sendall(self._head(host))
        last = len(self.body) - 1
        for index in range(last):
            connection.sendall(self.body[index : index + 1])
            self.started.set()
            self.finish.wait(BYTE_INTERVAL if not self.finish.is_set() else 0.005)
        self.finish.wait(60)
        connection.sendall(self.body[last:])

    def _receive(self, connection: socket.socket) -> None:
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        head, _, content = received.partition(b"\r\n\r\n")
        if not head:
            self.error = f"{self.error or ''} no answer at all".strip()
            return
        self.status = int(head.split(b" ", 2)[1])
        self.answer = json.loads(content) if content else None


@dataclass
class Timed:
    what: str
    seconds: float
    status: int  # 0: no answer within the client's timeout
    answer: dict[str, Any] | None


def other_tenant_requests(base: str, auth: tuple[str, str], tokens: list[str]) -> list[Timed]:
    """Updates and introspections, alternating, each over a fresh connection (so they meet
    both workers). Stops at the first that is not answered OK in time, so a server stuck
    behind the slow clients does not make the test wait out every request."""
    timed: list[Timed] = []
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base, auth=auth, timeout=5, limits=no_keep_alive) as client:
        for number in range(2 * OTHER_REQUESTS):
            token = tokens[number % len(tokens)]
            if number % 2 == 0:
                what = f"update #{number // 2}"
                path = "/api/auth/token/update"
                body: dict[str, Any] = {
                    "accessToken": token,
                    "accessTokenExpiresAt": BASE_EXPIRY + 1_000_000 + number,
                }
            else:
                what = f"introspection #{number // 2}"
                path, body = "/api/auth/introspection", {"token": token}
            began = time.perf_counter()
            try:
                response = client.post(path, json=body)
                status = response.status_code
                answer = response.json() if response.content else None
            except httpx.TimeoutException:
                status, answer = 0, None
            result = Timed(what, time.perf_counter() - began, status, answer)
            timed.append(result)
            if not answered_promptly(result):
                break
    return timed


def answered_promptly(result: Timed) -> bool:
    return (
        result.status == 200
        and result.answer is not None
        and result.answer.get("action") == "OK"
        and result.seconds < PROMPT
    )


def test_a_slow_client_holds_no_database_resource_while_it_sends_its_body(
    backend: str, tmp_path: Path
) -> None:
    with migrated_database(backend, tmp_path) as url:
        environment = {
            **server_environment(url),
            "TOKENSTORE_DB_POOL_SIZE": "2",
            "TOKENSTORE_DB_POOL_TIMEOUT_SECONDS": str(POOL_TIMEOUT),
        }
        with serving(tmp_path, environment, "--workers", "2") as (base, _output):
            slow_auth, slow_tokens = tenant_with_tokens(base, SLOW_CLIENTS)
            other_auth, other_tokens = tenant_with_tokens(base, 2)
            finish = threading.Event()
            slow = [
                SlowClient(
                    base,
                    slow_auth,
                    json.dumps(
                        {
                            "accessToken": token,
                            "accessTokenExpiresAt": BASE_EXPIRY + number,
                            "scopes": [],
                        }
                    ).encode(),
                    finish,
                )
                for number, token in enumerate(slow_tokens)
            ]
            try:
                slow_since = time.monotonic()
                for client in slow:
                    client.start()
                for client in slow:
                    assert client.started.wait(10)
                time.sleep(0.5)  # every slow request is in the server, its body unfinished
                began = time.monotonic()
                other = other_tenant_requests(base, other_auth, other_tokens)
                other_took = time.monotonic() - began
                print(f"the other tenant's requests took {other_took:.1f} s")  # noqa: T201
                still_sending = sum(1 for client in slow if client.status is None)
                time.sleep(max(0.0, slow_since + SLOW_FOR - time.monotonic()))
            finally:
                finish.set()
                for client in slow:
                    client.join(30)
            introspected = [
                httpx.post(
                    f"{base}/api/auth/introspection", json={"token": token}, auth=slow_auth
                ).json()
                for token in slow_tokens
            ]

    late = [result for result in other if not answered_promptly(result)]
    assert late == [], (
        f"while {SLOW_CLIENTS} clients were sending their bodies slowly, another tenant's "
        f"request was not answered OK within {PROMPT} s (after {len(other) - 1} that were): "
        f"{late[0]}"
    )
    assert len(other) == 2 * OTHER_REQUESTS
    # The slow clients were still sending throughout (the check is not vacuous).
    assert still_sending == SLOW_CLIENTS, f"only {still_sending} slow clients outlasted the rest"
    for number, client in enumerate(slow):
        assert (client.status, client.error) == (200, None), (number, client.answer)
        assert client.answer is not None
        assert client.answer["action"] == "OK"
        assert client.answer["accessTokenExpiresAt"] == BASE_EXPIRY + number
        assert client.answer.get("scopes", []) == []
    assert [answer["action"] for answer in introspected] == ["OK"] * SLOW_CLIENTS
    assert [answer["expiresAt"] for answer in introspected] == [
        BASE_EXPIRY + number for number in range(SLOW_CLIENTS)
    ]
