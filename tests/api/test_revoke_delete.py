"""DELETE /api/auth/token/delete/{id} and POST /api/auth/token/revoke."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from app.kit.hashing import token_hash
from tests.api.world import World, ok

pytestmark = pytest.mark.anyio


async def revoke(world: World, **fields: Any) -> int:
    answer = ok(await world.http.post("/api/auth/token/revoke", json=fields, auth=world.auth))
    count: int = answer["count"]
    return count


async def alive(world: World, token: dict[str, Any]) -> bool:
    answer = await world.update(accessToken=token["accessToken"], scopes=["read"])
    return bool(answer["action"] == "OK")


@pytest.mark.parametrize("name", ["value", "hash", "tokenId"])
async def test_a_token_is_deleted_by_value_hash_or_token_id(
    world: World, stored: Any, name: str
) -> None:
    token = await world.token()
    identifier = {
        "value": token["accessToken"],
        "hash": token_hash(token["accessToken"]),
        "tokenId": token["tokenId"],
    }[name]
    response = await world.http.delete(f"/api/auth/token/delete/{identifier}", auth=world.auth)
    assert response.status_code == 204
    assert stored(token["tokenId"]) is None
    again = await world.http.delete(f"/api/auth/token/delete/{identifier}", auth=world.auth)
    assert (again.status_code, again.json()["resultCode"]) == (404, "RESOURCE_NOT_FOUND")


async def test_another_service_cannot_delete_or_revoke_the_token(
    http: AsyncClient, stored: Any
) -> None:
    owner, stranger = await World.create(http), await World.create(http)
    token = await owner.token()
    response = await http.delete(
        f"/api/auth/token/delete/{token['accessToken']}", auth=stranger.auth
    )
    assert response.status_code == 404
    assert await revoke(stranger, accessTokenIdentifier=token["accessToken"]) == 0
    assert await revoke(stranger, subject="alice") == 0
    assert stored(token["tokenId"]) is not None


async def test_revoke_one_token_by_access_or_refresh_identifier(world: World) -> None:
    first, second, third = await world.token(), await world.token(), await world.token()
    assert await revoke(world, accessTokenIdentifier=first["accessToken"]) == 1
    assert await revoke(world, refreshTokenIdentifier=second["refreshToken"]) == 1
    assert await revoke(world, refreshTokenIdentifier=token_hash(third["refreshToken"])) == 1
    assert await revoke(world, accessTokenIdentifier=first["accessToken"]) == 0
    assert [await alive(world, t) for t in (first, second, third)] == [False, False, False]


async def test_an_access_token_value_is_not_taken_for_a_refresh_token(world: World) -> None:
    token = await world.token()
    assert await revoke(world, refreshTokenIdentifier=token["accessToken"]) == 0
    assert await alive(world, token)


async def test_revoke_all_tokens_of_a_client_and_or_a_subject(http: AsyncClient) -> None:
    world = await World.create(http)
    other_client = ok(await http.post("/api/client/create", json={}, auth=world.auth))
    tokens = {
        ("c1", "alice"): await world.token(subject="alice"),
        ("c1", "bob"): await world.token(subject="bob"),
        ("c2", "alice"): await world.token(subject="alice", clientId=other_client["clientId"]),
        ("c2", "bob"): await world.token(subject="bob", clientId=other_client["clientId"]),
    }
    assert await revoke(world, clientIdentifier=str(world.client_id), subject="alice") == 1
    assert await revoke(world, subject="bob") == 2
    assert await revoke(world, clientIdentifier=str(other_client["clientId"])) == 1
    assert await revoke(world, clientIdentifier="no-such-client") == 0
    assert [key for key, t in tokens.items() if await alive(world, t)] == []


async def test_revoke_naming_nothing_is_http_400(world: World) -> None:
    response = await world.http.post(
        "/api/auth/token/revoke",
        json={"accessTokenIdentifier": None, "clientIdentifier": "", "subject": None},
        auth=world.auth,
    )
    assert (response.status_code, response.json()["resultCode"]) == (400, "REQUEST_MALFORMED")
