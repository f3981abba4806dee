"""The resource server of examples/resource_server_cache.py against a real `tokenstore
serve` publishing to the shared NATS broker: it answers repeated requests from its cache,
and still refuses a token within a second of its narrowing or its revocation, which only
the token's event can have told it (a cached answer is kept for 5 minutes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from examples.resource_server_cache import IntrospectionCache, create_app
from tests.brokers import shared_broker
from tests.conftest import migrated_database
from tests.resilience.tenant import ADMIN, server_environment
from tests.servers import serving

pytestmark = pytest.mark.anyio

SCOPES = [{"name": "photos.read"}, {"name": "photos.write"}]
WITHIN_S = 1.0


@dataclass
class Calls:
    """The requests that reached tokenstore from the cache."""

    introspections: int = 0
    lookups: int = 0

    async def count(self, request: httpx.Request) -> None:
        if request.url.path == "/api/auth/introspection":
            self.introspections += 1
        elif request.url.path.startswith("/api/auth/token/history/"):
            self.lookups += 1


async def answered_within(
    status: int, call: Callable[[], Awaitable[httpx.Response]], seconds: float = WITHIN_S
) -> float:
    """How long until `call` is answered `status` (it fails past `seconds`)."""
    started = time.monotonic()
    while (await call()).status_code != status:
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"still not {status} after {elapsed:.2f} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def tenant(base: str) -> tuple[tuple[str, str], str]:
    """A service with the photo scopes, and a token holding both."""
    async with httpx.AsyncClient(base_url=base) as http:
        service = (
            await http.post("/api/service/create", json={"supportedScopes": SCOPES}, auth=ADMIN)
        ).json()
        auth = (str(service["apiKey"]), service["apiSecret"])
        client = (await http.post("/api/client/create", json={}, auth=auth)).json()
        token = (
            await http.post(
                "/api/auth/token/create",
                json={
                    "grantType": "AUTHORIZATION_CODE", "clientId": client["clientId"],
                    "subject": "alice", "scopes": ["photos.read", "photos.write"],
                },
                auth=auth,
            )
        ).json()  # fmt: skip
    return auth, token["accessToken"]


async def test_a_cached_resource_server_refuses_a_narrowed_then_revoked_token_within_a_second(
    backend: str, tmp_path: Path
) -> None:
    nats_url = shared_broker()
    with migrated_database(backend, tmp_path) as url:
        env = {**server_environment(url), "TOKENSTORE_EVENTS_NATS_URL": nats_url}
        with serving(tmp_path, env) as (base, _):
            auth, token = await tenant(base)
            calls = Calls()
            tokenstore = httpx.AsyncClient(
                base_url=base, auth=auth, event_hooks={"request": [calls.count]}
            )
            cache = IntrospectionCache(tokenstore, api_key=auth[0], nats_url=nats_url)
            resource_server = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(cache)), base_url="http://photos"
            )
            bearer = {"Authorization": f"Bearer {token}"}

            async with tokenstore, cache, resource_server:
                assert (await resource_server.get("/photos", headers=bearer)).status_code == 200
                assert (calls.introspections, calls.lookups) == (1, 1)
                # The cache answers: the second request does not reach tokenstore.
                assert (await resource_server.get("/photos", headers=bearer)).status_code == 200
                assert (calls.introspections, calls.lookups) == (1, 1)
                # Another scope is another answer, kept as well.
                for _ in range(2):
                    deleted = await resource_server.delete("/photos", headers=bearer)
                    assert deleted.status_code == 200
                assert (calls.introspections, calls.lookups) == (2, 1)

                narrowed = await tokenstore.post(
                    "/auth/token/update", json={"accessToken": token, "scopes": ["photos.read"]}
                )
                assert narrowed.json()["action"] == "OK"
                await answered_within(
                    403, lambda: resource_server.delete("/photos", headers=bearer)
                )
                assert (await resource_server.get("/photos", headers=bearer)).status_code == 200

                revoked = await tokenstore.post(
                    "/api/auth/token/revoke", json={"accessTokenIdentifier": token}
                )
                assert revoked.json()["count"] == 1
                await answered_within(401, lambda: resource_server.get("/photos", headers=bearer))
                refused = await resource_server.get("/photos", headers=bearer)
                assert refused.status_code == 401
                assert refused.headers["WWW-Authenticate"].startswith("Bearer")
