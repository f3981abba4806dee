"""POST /auth/token/update end to end: each rule of docs/api.md through HTTP, on both databases."""

from __future__ import annotations

import time
from typing import Any

import pytest
from httpx import AsyncClient

from app.kit.hashing import token_hash
from tests.api.world import World, ok

pytestmark = pytest.mark.anyio

THUMB = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"  # RFC 7638 section 3.1
UPDATE_PATHS = [
    "/auth/token/update",
    "/api/auth/token/update",
    "/api/{serviceId}/auth/token/update",
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.mark.parametrize("path", UPDATE_PATHS)
async def test_an_update_by_value_answers_with_the_tokens_new_state(
    world: World, path: str
) -> None:
    token = await world.token(scopes=["read", "write"])
    expires_at = now_ms() + 123_456
    updated = await world.update(
        path.format(serviceId=world.api_key),
        accessToken=token["accessToken"],
        accessTokenExpiresAt=expires_at,
        scopes=["write"],
    )
    assert updated["action"] == "OK"
    assert updated["accessToken"] == token["accessToken"]
    assert updated["accessTokenHash"] == token_hash(token["accessToken"])
    assert updated["accessTokenExpiresAt"] == expires_at
    assert updated["scopes"] == ["write"]
    assert updated["tokenType"] == "Bearer"
    assert updated["tokenId"] == token["tokenId"]
    assert updated["accessTokenPersistent"] is False


async def test_an_update_by_hash_or_token_id_finds_the_token_but_shows_no_value(
    world: World,
) -> None:
    token = await world.token()
    by_hash = await world.update(accessTokenHash=token_hash(token["accessToken"]), scopes=[])
    assert (by_hash["action"], by_hash["scopes"]) == ("OK", [])
    assert "accessToken" not in by_hash
    by_id = await world.update(tokenId=token["tokenId"], scopes=["read"])
    assert (by_id["action"], by_id["scopes"]) == ("OK", ["read"])
    assert "accessToken" not in by_id


async def test_the_access_token_value_takes_precedence_over_hash_and_token_id(
    world: World,
) -> None:
    first, second = await world.token(), await world.token()
    updated = await world.update(
        accessToken=first["accessToken"],
        accessTokenHash=token_hash(second["accessToken"]),
        tokenId=second["tokenId"],
        scopes=[],
    )
    assert updated["tokenId"] == first["tokenId"]


async def test_scopes_are_filtered_and_durations_recompute_both_expiries(world: World) -> None:
    token = await world.token(scopes=["read"])
    before = now_ms()
    updated = await world.update(
        accessToken=token["accessToken"],
        scopes=["profile", "unknown", "read", "profile"],
        accessTokenExpiresAtUpdatedOnScopeUpdate=True,
        refreshTokenExpiresAtUpdatedOnScopeUpdate=True,
    )
    after = now_ms()
    assert updated["scopes"] == ["profile", "read"]
    # read: 600 s access, 7200 s refresh; profile: 10000 s access, 3600 s refresh.
    assert before + 600_000 <= updated["accessTokenExpiresAt"] <= after + 600_000
    assert before + 3_600_000 <= updated["refreshTokenExpiresAt"] <= after + 3_600_000


async def test_a_client_with_requestable_scopes_keeps_only_those(http: AsyncClient) -> None:
    world = await World.create(http, requestable=["read", "admin"])
    token = await world.token(scopes=["read", "write"])
    assert token["scopes"] == ["read"]
    updated = await world.update(accessToken=token["accessToken"], scopes=["write", "admin"])
    assert updated["scopes"] == ["admin"]


async def test_persistence_and_its_end(world: World) -> None:
    token = await world.token()
    persistent = await world.update(
        accessToken=token["accessToken"], accessTokenPersistent=True, accessTokenExpiresAt=5
    )
    assert (persistent["accessTokenPersistent"], persistent["accessTokenExpiresAt"]) == (True, 0)
    unchanged = await world.update(accessToken=token["accessToken"], accessTokenPersistent=False)
    assert unchanged["accessTokenPersistent"] is True
    expires_at = now_ms() + 60_000
    expiring = await world.update(accessToken=token["accessToken"], accessTokenExpiresAt=expires_at)
    assert (expiring["accessTokenPersistent"], expiring["accessTokenExpiresAt"]) == (
        False,
        expires_at,
    )


async def test_properties_details_bindings_and_attachment_flag_are_replaced(
    world: World,
) -> None:
    token = await world.token(properties=[{"key": "old", "value": "1"}])
    details = {
        "elements": [
            {
                "type": "payment_initiation",
                "actions": ["initiate"],
                "locations": ["https://bank.example/payments"],
                "otherFields": '{"instructedAmount":{"currency":"EUR","amount":"123.50"}}',
            }
        ]
    }
    updated = await world.update(
        accessToken=token["accessToken"],
        properties=[{"key": "a", "value": "1"}, {"key": "b", "value": "2", "hidden": True}],
        authorizationDetails=details,
        dpopKeyThumbprint=THUMB,
        certificateThumbprint=THUMB,
        forExternalAttachment=True,
    )
    assert updated["properties"] == [
        {"key": "a", "value": "1", "hidden": False},
        {"key": "b", "value": "2", "hidden": True},
    ]
    assert updated["authorizationDetails"] == details
    assert updated["tokenType"] == "DPoP"
    assert (updated["dpopKeyThumbprint"], updated["certificateThumbprint"]) == (THUMB, THUMB)
    assert updated["forExternalAttachment"] is True

    unbound = await world.update(
        accessToken=token["accessToken"], dpopKeyThumbprint="", certificateThumbprint=""
    )
    assert unbound["tokenType"] == "Bearer"
    assert "dpopKeyThumbprint" not in unbound
    assert "certificateThumbprint" not in unbound
    assert unbound["properties"] == updated["properties"]  # absent: unchanged


async def test_regeneration_returns_a_new_value_and_the_old_one_stops_working(
    world: World,
) -> None:
    token = await world.token()
    regenerated = await world.update(tokenId=token["tokenId"], accessTokenValueUpdated=True)
    new_value = regenerated["accessToken"]
    assert new_value != token["accessToken"]
    assert len(new_value) == 43
    assert regenerated["accessTokenHash"] == token_hash(new_value)
    old = await world.update(accessToken=token["accessToken"], scopes=[])
    assert old["action"] == "NOT_FOUND"
    assert (await world.update(accessToken=new_value, scopes=[]))["action"] == "OK"


async def test_a_token_is_not_found_once_both_of_its_tokens_have_expired(world: World) -> None:
    without_refresh = await world.token(grantType="CLIENT_CREDENTIALS", subject=None)
    assert "refreshToken" not in without_refresh
    expired = await world.update(
        accessToken=without_refresh["accessToken"], accessTokenExpiresAt=now_ms() - 1
    )
    assert expired["action"] == "OK"  # a past expiry is accepted...
    again = await world.update(accessToken=without_refresh["accessToken"], scopes=[])
    assert again["action"] == "NOT_FOUND"  # ...and then the token is gone

    with_refresh = await world.token()
    await world.update(accessToken=with_refresh["accessToken"], accessTokenExpiresAt=1)
    alive = await world.update(
        accessToken=with_refresh["accessToken"], accessTokenExpiresAt=now_ms() + 60_000
    )
    assert alive["action"] == "OK"  # the refresh token kept it findable


async def test_another_services_credentials_never_find_the_token(
    http: AsyncClient, stored: Any
) -> None:
    owner, stranger = await World.create(http), await World.create(http)
    token = await owner.token()
    before = stored(token["tokenId"])
    for name in [
        {"accessToken": token["accessToken"]},
        {"accessTokenHash": token_hash(token["accessToken"])},
        {"tokenId": token["tokenId"]},
    ]:
        answer = await stranger.update(**name, scopes=[], accessTokenPersistent=True)
        assert answer["action"] == "NOT_FOUND"
    assert stored(token["tokenId"]) == before


async def test_v3_paths_refuse_the_credentials_of_another_service(http: AsyncClient) -> None:
    owner, stranger = await World.create(http), await World.create(http)
    token = await owner.token()
    response = await http.post(
        f"/api/{owner.api_key}/auth/token/update",
        json={"accessToken": token["accessToken"]},
        auth=stranger.auth,
    )
    assert response.status_code == 401
    assert response.json()["resultCode"] == "CREDENTIALS_INVALID"


async def test_a_form_encoded_update_takes_repeated_and_space_separated_scopes(
    world: World,
) -> None:
    token = await world.token(scopes=[])
    response = await world.http.post(
        "/auth/token/update",
        content=f"accessToken={token['accessToken']}&scopes=read+write&scopes=admin"
        "&accessTokenPersistent=true",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=world.auth,
    )
    updated = ok(response)
    assert updated["scopes"] == ["read", "write", "admin"]
    assert updated["accessTokenPersistent"] is True


async def test_an_update_without_refresh_token_ignores_refresh_expiry(world: World) -> None:
    token = await world.token(grantType="CLIENT_CREDENTIALS", subject=None)
    updated = await world.update(
        accessToken=token["accessToken"], refreshTokenExpiresAt=now_ms() + 5000
    )
    assert (updated["action"], updated["refreshTokenExpiresAt"]) == ("OK", 0)


async def test_the_listed_token_shows_the_updated_state_and_no_value(world: World) -> None:
    token = await world.token(subject="bob")
    await world.update(
        accessToken=token["accessToken"], accessTokenValueUpdated=True, scopes=["write"]
    )
    listing = ok(
        await world.http.get(
            "/api/auth/token/get/list",
            params={"subject": "bob", "clientIdentifier": str(world.client_id)},
            auth=world.auth,
        )
    )
    assert listing["totalCount"] == 1
    (listed,) = listing["accessTokens"]
    assert listed["scopes"] == ["write"]
    assert listed["tokenId"] == token["tokenId"]
    assert listed["accessTokenHash"] != token_hash(token["accessToken"])
    assert "accessToken" not in listed
    assert listing["client"]["clientId"] == world.client_id
