"""Stored API credentials through a rotation of the hash secret (issue 13): service secrets,
v3 service access tokens and client secrets made under key "k1" keep working while "k2,k1"
is listed, move to "k2" at their first successful use, and then work under "k2" alone; one
never used during the overlap does not, and a credential under a key no longer listed is
refused exactly as a wrong one is.

Each phase is an app of its own over the same database, as a restart with new settings is.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from httpx import ASGITransport, AsyncClient, Response
from pydantic import SecretStr
from sqlalchemy import Engine, select
from starlette.routing import BaseRoute

from app.auth import require_service
from app.clients.models import ClientRow
from app.config import Settings
from app.credentials import CredentialReplica
from app.kit.hashing import service_token_key
from app.kit.keys import KeyRing
from app.main import create_app
from app.services.models import ServiceAccessTokenRow, ServiceRow
from app.transactions import unit_of_work
from tests.api.world import ok
from tests.conftest import OPERATOR

pytestmark = pytest.mark.anyio

K1 = "k1:" + "1" * 40
K2 = "k2:" + "2" * 40
K0 = "k0:" + "0" * 40


@dataclass
class Served:
    app: FastAPI
    http: AsyncClient

    @property
    def replica(self) -> CredentialReplica:
        replica: CredentialReplica = self.app.state.credentials
        return replica


@asynccontextmanager
async def serving(settings: Settings, hash_secrets: str) -> AsyncIterator[Served]:
    """The app as a process started with TOKENSTORE_HASH_SECRETS=`hash_secrets`."""
    app = create_app(settings.model_copy(update={"hash_secrets": SecretStr(hash_secrets)}))
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with AsyncClient(transport=transport, base_url="http://tokenstore") as http:
            yield Served(app, http)
    finally:
        await app.state.credentials.close()
        await app.state.database.dispose()


# --- Credentials and their uses ---------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    api_key: int
    secret: str

    @property
    def auth(self) -> tuple[str, str]:
        return (str(self.api_key), self.secret)


@dataclass(frozen=True)
class Bearer:
    api_key: int
    token_id: str
    value: str


@dataclass(frozen=True)
class Client:
    service: Service  # the service it belongs to, whose credentials call the API
    client_id: int
    secret: str


Credential = Service | Bearer | Client


async def by_service(http: AsyncClient, service: Service) -> Response:
    return await http.get("/api/client/get/list", auth=service.auth)


async def by_bearer(http: AsyncClient, api_key: int, value: str) -> Response:
    headers = {"Authorization": f"Bearer {value}"}
    return await http.get(f"/api/{api_key}/client/get/list", headers=headers)


async def revoke(http: AsyncClient, client: Client, secret: str) -> dict[str, Any]:
    """RFC 7009 revocation of a token of the client's own, with CLIENT_SECRET_BASIC."""
    token = ok(
        await http.post(
            "/api/auth/token/create",
            json={"grantType": "CLIENT_CREDENTIALS", "clientId": client.client_id, "scopes": []},
            auth=client.service.auth,
        )
    )
    body = {
        "parameters": urlencode({"token": token["accessToken"]}),
        "clientId": str(client.client_id),
        "clientSecret": secret,
    }
    return ok(await http.post("/api/auth/revocation", json=body, auth=client.service.auth))


async def accepted(http: AsyncClient, credential: Credential) -> bool:
    """True when the credential was accepted, False when it was refused as wrong (any
    other answer fails the test)."""
    if isinstance(credential, Client):
        answer = await revoke(http, credential, credential.secret)
        assert answer["action"] in ("OK", "INVALID_CLIENT"), answer
        return bool(answer["action"] == "OK")
    if isinstance(credential, Service):
        response = await by_service(http, credential)
    else:
        response = await by_bearer(http, credential.api_key, credential.value)
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def key_id(engine: Engine, credential: Credential) -> str:
    """The key id its row records, read from the database."""
    if isinstance(credential, Service):
        statement = select(ServiceRow.secret_key_id).where(ServiceRow.api_key == credential.api_key)
    elif isinstance(credential, Bearer):
        statement = select(ServiceAccessTokenRow.key_id).where(
            ServiceAccessTokenRow.token_id == credential.token_id
        )
    else:
        statement = select(ClientRow.secret_key_id).where(
            ClientRow.client_id == credential.client_id
        )
    with engine.connect() as connection:
        found: str = connection.execute(statement).scalar_one()
    return found


async def new_service(http: AsyncClient) -> Service:
    made = ok(await http.post("/api/service/create", json={"serviceName": "r"}, auth=OPERATOR))
    return Service(made["apiKey"], made["apiSecret"])


async def new_bearer(http: AsyncClient, service: Service) -> Bearer:
    path = f"/api/service/{service.api_key}/access_token/create"
    made = ok(await http.post(path, json={}, auth=OPERATOR))
    return Bearer(service.api_key, made["tokenId"], made["accessToken"])


async def new_client(http: AsyncClient, service: Service) -> Client:
    made = ok(await http.post("/api/client/create", json={"clientName": "c"}, auth=service.auth))
    return Client(service, made["clientId"], made["clientSecret"])


@dataclass(frozen=True)
class Tenant:
    used: tuple[Service, Bearer, Client]  # used during the overlap
    unused: tuple[Service, Bearer, Client]  # never used during the overlap


async def tenant(http: AsyncClient) -> Tenant:
    """A service with a v3 service access token and a confidential client, and another
    of each (the token and the client on the same service)."""
    service, idle_service = await new_service(http), await new_service(http)
    return Tenant(
        used=(service, await new_bearer(http, service), await new_client(http, service)),
        unused=(idle_service, await new_bearer(http, service), await new_client(http, service)),
    )


# --- Rotation ----------------------------------------------------------------------------------


async def test_credentials_under_an_old_key_work_move_at_their_first_use_and_outlive_it(
    settings: Settings, engine: Engine
) -> None:
    async with serving(settings, K1) as before:
        made = await tenant(before.http)
        for credential in made.used + made.unused:
            assert await accepted(before.http, credential), credential
    assert {key_id(engine, c) for c in made.used + made.unused} == {"k1"}

    async with serving(settings, f"{K2},{K1}") as overlap:
        for credential in made.used:
            assert await accepted(overlap.http, credential), credential
            assert key_id(engine, credential) == "k2", credential
            # And again, now under the current key.
            assert await accepted(overlap.http, credential), credential
        # New credentials are made under the current key.
        fresh = await tenant(overlap.http)
        assert {key_id(engine, c) for c in fresh.used + fresh.unused} == {"k2"}
    assert {key_id(engine, c) for c in made.unused} == {"k1"}

    async with serving(settings, K2) as after:
        for credential in made.used + fresh.used + fresh.unused:
            assert await accepted(after.http, credential), credential
        for credential in made.unused:
            assert not await accepted(after.http, credential), credential


async def test_a_credential_under_a_key_no_longer_listed_is_refused_as_a_wrong_one(
    settings: Settings, engine: Engine
) -> None:
    async with serving(settings, K1) as before:
        service, token, client = (await tenant(before.http)).used
    async with serving(settings, f"{K2},{K0}") as after:
        http = after.http
        right = await by_service(http, service)
        wrong = await by_service(http, Service(service.api_key, "wrong"))
        unknown = await by_service(http, Service(123_456_789_012_345, "wrong"))
        assert right.status_code == wrong.status_code == unknown.status_code == 401
        assert right.json() == wrong.json() == unknown.json()
        right = await by_bearer(http, token.api_key, token.value)
        wrong = await by_bearer(http, token.api_key, token.value[:-2] + "xx")
        assert right.status_code == wrong.status_code == 401
        assert right.json() == wrong.json()
    # The client under a service moved to "k2" (so that its service can call the API).
    async with serving(settings, f"{K2},{K1}") as overlap:
        assert await accepted(overlap.http, service)
    async with serving(settings, f"{K2},{K0}") as after:
        right_client = await revoke(after.http, client, client.secret)
        wrong_client = await revoke(after.http, client, "wrong")
        assert right_client["action"] == "INVALID_CLIENT"
        assert right_client == wrong_client
    # A refusal moved nothing.
    assert key_id(engine, token) == key_id(engine, client) == "k1"


# --- The replica of every process ---------------------------------------------------------------


class CountedReads:
    """The replica's database reads, counted by the function read."""

    def __init__(self, read: Callable[..., Awaitable[Any]]) -> None:
        self._read = read
        self.calls: collections.Counter[str] = collections.Counter()

    async def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.calls[fn.__name__] += 1
        return await self._read(fn, *args, **kwargs)

    @property
    def per_lookup(self) -> int:
        """Reads made for one lookup: the replica's copy was not trusted."""
        return self.calls["secret_digest_of"] + self.calls["service_of_access_token"]


def counted(served: Served) -> CountedReads:
    reads = CountedReads(served.replica.read)
    served.replica.read = reads
    return reads


async def until_trusted(served: Served, reads: CountedReads) -> None:
    """Until a lookup is answered from the replica's copy, without a database read."""
    for _ in range(500):
        before = reads.per_lookup
        await served.replica.digest_of(0)
        if reads.per_lookup == before:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the credential replica was never loaded")


async def test_a_move_reaches_the_replica_of_every_process(settings: Settings) -> None:
    async with serving(settings, K1) as before:
        service, token, _ = (await tenant(before.http)).used
    current = KeyRing.parse(K2).current
    moved_token_key = service_token_key(token.value, current.secret)
    async with (
        serving(settings, f"{K2},{K1}") as first,
        serving(settings, f"{K2},{K1}") as second,
    ):
        first_reads, second_reads = counted(first), counted(second)
        await until_trusted(first, first_reads)
        await until_trusted(second, second_reads)
        seen = await second.replica.digest_of(service.api_key)
        assert seen is not None
        assert seen.key_id == "k1"

        # Requests that carry them at once in one process: all accepted.
        both: list[Credential] = [service, token]
        results = await asyncio.gather(*(accepted(first.http, c) for c in both * 4))
        assert results == [True] * 8

        # The other process learns of the moves at once, not when its copy is old.
        seen = await second.replica.digest_of(service.api_key)
        found = await second.replica.service_of_token([moved_token_key])
        assert seen is not None
        assert seen.key_id == "k2"
        assert found is not None
        assert found[1].key_id == "k2"
        # Its reloaded copy accepts them under the current key, from memory.
        await until_trusted(second, second_reads)
        before_reads = second_reads.per_lookup
        assert await accepted(second.http, service)
        assert await accepted(second.http, token)
        assert second_reads.per_lookup == before_reads


async def test_every_route_checks_service_credentials_before_its_unit_of_work(app: FastAPI) -> None:
    """A move runs in a transaction of its own from the credential check (app.auth): on
    SQLite, a route whose unit of work opened first would hold the writer's turn it waits
    for."""
    checked = 0
    for route in api_routes(app.routes):
        calls = resolution_order(route.dependant)
        if require_service in calls and unit_of_work in calls:
            assert calls.index(require_service) < calls.index(unit_of_work), route.path
            checked += 1
    assert checked > 20


def resolution_order(dependant: Dependant) -> list[Any]:
    """The dependencies' callables in the order FastAPI resolves them (sub-dependencies
    first)."""
    calls = []
    for dependency in dependant.dependencies:
        calls += resolution_order(dependency)
        calls.append(dependency.call)
    return calls


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # An included router (FastAPI includes them as they are, not copied route by route).
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)
