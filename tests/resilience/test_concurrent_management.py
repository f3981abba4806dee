"""Identical management requests fired together at a server with two workers: each gets a
meaningful answer and never a 5xx. A unique alias goes to exactly one request (409 for the
others), a delete succeeds exactly once (404 for the others), revoke counts add up to the
tokens there were, and no log line quotes a value the requests carried.

On PostgreSQL, before the fixes: deadlocks answered 503 DATABASE_UNAVAILABLE, unique
violations 500 (their tracebacks logging the values), and most deletes of one token 204.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import migrated_database
from tests.resilience.tenant import ADMIN, server_environment
from tests.servers import serving

CONCURRENCY = 32
ROUNDS = 5
Auth = tuple[str, str]


@dataclass(frozen=True)
class Server:
    base: str
    log: Path

    def post(self, path: str, body: dict[str, Any], auth: Auth) -> dict[str, Any]:
        response = httpx.post(f"{self.base}{path}", json=body, auth=auth, timeout=30)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    def at_once(
        self, method: str, paths: list[str], auth: Auth, body: dict[str, Any] | None = None
    ) -> list[httpx.Response]:
        """The requests sent together, each on a connection of its own."""

        async def fire() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=len(paths))
            async with httpx.AsyncClient(base_url=self.base, timeout=60, limits=limits) as client:
                return await asyncio.gather(
                    *(client.request(method, path, json=body, auth=auth) for path in paths)
                )

        return asyncio.run(fire())

    def log_size(self) -> int:
        return self.log.stat().st_size

    def assert_logged_none_of(self, values: list[str], *, since: int) -> None:
        """Nothing logged since the offset `since` quotes one of the values, or a database
        error's statement parameters or DETAIL. The server logs each record as it happens
        (one line each, flushed)."""
        with self.log.open("rb") as log:
            log.seek(since)
            lines = log.read().decode().splitlines()
        assert lines
        assert [line for line in lines if any(value in line for value in values)] == []
        assert [line for line in lines if "DETAIL" in line or "parameters:" in line] == []


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp(f"races-{backend}")
    with (
        migrated_database(backend, directory) as url,
        serving(directory, server_environment(url), "--workers", "2") as (base, _),
    ):
        port = base.rsplit(":", 1)[1]
        yield Server(base, directory / f"serve-{port}.log")


@pytest.fixture
def since(server: Server) -> int:
    """Where the server's log stood when the test began."""
    return server.log_size()


@pytest.fixture
def service(server: Server) -> tuple[int, Auth]:
    created = server.post("/api/service/create", {"supportedScopes": [{"name": "read"}]}, ADMIN)
    return created["apiKey"], (str(created["apiKey"]), created["apiSecret"])


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(response.status_code for response in responses)


def exactly_one(winner: int, loser: int) -> Counter[int]:
    return Counter({winner: 1, loser: CONCURRENCY - 1})


def test_concurrent_creates_with_one_alias_give_it_to_exactly_one_client(
    server: Server, service: tuple[int, Auth], since: int
) -> None:
    _, auth = service
    used = []
    for _ in range(ROUNDS):
        alias, name = f"alias-{secrets.token_hex(6)}", f"name-{secrets.token_hex(6)}"
        used += [alias, name]
        body = {"clientIdAlias": alias, "clientName": name}
        responses = server.at_once("POST", ["/api/client/create"] * CONCURRENCY, auth, body)
        assert statuses(responses) == exactly_one(200, 409), [r.text for r in responses]
        refused = [r.json() for r in responses if r.status_code == 409]
        assert {answer["resultCode"] for answer in refused} == {"RESOURCE_CONFLICT"}
        assert all(alias in answer["resultMessage"] for answer in refused)
    server.assert_logged_none_of(used, since=since)


def test_concurrent_updates_of_many_clients_to_one_alias_give_it_to_exactly_one(
    server: Server, service: tuple[int, Auth], since: int
) -> None:
    _, auth = service
    clients = [server.post("/api/client/create", {}, auth)["clientId"] for _ in range(CONCURRENCY)]
    paths = [f"/api/client/update/{client}" for client in clients]
    used = []
    for _ in range(ROUNDS):
        alias, name = f"alias-{secrets.token_hex(6)}", f"name-{secrets.token_hex(6)}"
        used += [alias, name]
        responses = server.at_once(
            "POST", paths, auth, {"clientIdAlias": alias, "clientName": name}
        )
        assert statuses(responses) == exactly_one(200, 409), [r.text for r in responses]
    server.assert_logged_none_of(used, since=since)


def test_concurrent_identical_updates_of_one_client_all_succeed(
    server: Server, service: tuple[int, Auth], since: int
) -> None:
    _, auth = service
    client = server.post("/api/client/create", {}, auth)["clientId"]
    alias = f"alias-{secrets.token_hex(6)}"
    paths = [f"/api/client/update/{client}"] * CONCURRENCY
    for _ in range(ROUNDS):
        responses = server.at_once("POST", paths, auth, {"clientIdAlias": alias})
        assert statuses(responses) == Counter({200: CONCURRENCY})
    server.assert_logged_none_of([alias], since=since)


def test_concurrent_identical_scope_updates_of_one_service_all_succeed(
    server: Server, service: tuple[int, Auth], since: int
) -> None:
    api_key, _ = service
    used = []
    for _ in range(ROUNDS):
        names = [f"scope-{secrets.token_hex(6)}" for _ in range(5)]
        used += names
        body = {"supportedScopes": [{"name": name} for name in names]}
        responses = server.at_once(
            "POST", [f"/api/service/update/{api_key}"] * CONCURRENCY, ADMIN, body
        )
        assert statuses(responses) == Counter({200: CONCURRENCY}), [r.text for r in responses]
        stored = httpx.get(f"{server.base}/api/service/get/{api_key}", auth=ADMIN).json()
        assert [scope["name"] for scope in stored["supportedScopes"]] == names
    server.assert_logged_none_of(used, since=since)


def new_token(server: Server, auth: Auth, client: int, subject: str) -> dict[str, Any]:
    body = {"grantType": "PASSWORD", "clientId": client, "subject": subject}
    token = server.post("/api/auth/token/create", body, auth)
    assert token["action"] == "OK", token
    return token


def test_concurrent_deletes_of_one_token_succeed_exactly_once(
    server: Server, service: tuple[int, Auth]
) -> None:
    _, auth = service
    client = server.post("/api/client/create", {}, auth)["clientId"]
    for _ in range(ROUNDS):
        token = new_token(server, auth, client, "alice")
        paths = [f"/api/auth/token/delete/{token['tokenId']}"] * CONCURRENCY
        assert statuses(server.at_once("DELETE", paths, auth)) == exactly_one(204, 404)


def test_concurrent_revokes_count_every_token_exactly_once(
    server: Server, service: tuple[int, Auth]
) -> None:
    _, auth = service
    client = server.post("/api/client/create", {}, auth)["clientId"]
    paths = ["/api/auth/token/revoke"] * CONCURRENCY
    for round_ in range(ROUNDS):
        token = new_token(server, auth, client, "alice")
        one = server.at_once("POST", paths, auth, {"accessTokenIdentifier": token["accessToken"]})
        assert statuses(one) == Counter({200: CONCURRENCY})
        assert sum(response.json()["count"] for response in one) == 1

        subject = f"subject-{round_}"
        for _ in range(5):
            new_token(server, auth, client, subject)
        every = server.at_once("POST", paths, auth, {"subject": subject})
        assert statuses(every) == Counter({200: CONCURRENCY})
        assert sum(response.json()["count"] for response in every) == 5


def test_concurrent_deletes_of_clients_services_and_access_tokens_succeed_exactly_once(
    server: Server, service: tuple[int, Auth]
) -> None:
    api_key, auth = service
    for _ in range(ROUNDS):
        client = server.post("/api/client/create", {}, auth)["clientId"]
        paths = [f"/api/client/delete/{client}"] * CONCURRENCY
        assert statuses(server.at_once("DELETE", paths, auth)) == exactly_one(204, 404)

        access = server.post(f"/api/service/{api_key}/access_token/create", {}, ADMIN)
        paths = [f"/api/service/{api_key}/access_token/delete/{access['tokenId']}"] * CONCURRENCY
        assert statuses(server.at_once("DELETE", paths, ADMIN)) == exactly_one(204, 404)

        other = server.post("/api/service/create", {"supportedScopes": [{"name": "a"}]}, ADMIN)
        paths = [f"/api/service/delete/{other['apiKey']}"] * CONCURRENCY
        assert statuses(server.at_once("DELETE", paths, ADMIN)) == exactly_one(204, 404)
