"""Services (operator) and clients (service): Authlete's shapes, and tenant isolation."""

from __future__ import annotations

import pytest
from httpx import AsyncClient

from tests.api.world import SCOPES, World, ok
from tests.conftest import OPERATOR

pytestmark = pytest.mark.anyio


async def test_a_service_is_created_with_a_secret_shown_once(http: AsyncClient) -> None:
    created = ok(
        await http.post(
            "/api/service/create",
            json={
                "serviceName": "svc",
                "supportedScopes": SCOPES,
                "accessTokenDuration": 3600,
                "refreshTokenDuration": 0,
            },
            auth=OPERATOR,
        )
    )
    assert len(created["apiSecret"]) == 43
    assert created["accessTokenDuration"] == 3600
    assert created["refreshTokenDuration"] == 864000  # 0 means "not set": the default
    fetched = ok(await http.get(f"/api/service/get/{created['apiKey']}", auth=OPERATOR))
    assert "apiSecret" not in fetched
    assert fetched["supportedScopes"][0]["attributes"] == SCOPES[0]["attributes"]


async def test_a_service_update_replaces_given_fields_and_keeps_the_rest(
    world: World, http: AsyncClient
) -> None:
    updated = ok(
        await http.post(
            f"/api/service/update/{world.api_key}",
            json={"supportedScopes": [{"name": "only"}], "accessTokenDuration": 0},
            auth=OPERATOR,
        )
    )
    assert [s["name"] for s in updated["supportedScopes"]] == ["only"]
    assert updated["serviceName"] == "test"
    assert updated["accessTokenDuration"] == 86400
    token = await world.token(scopes=["only", "read"])
    assert token["scopes"] == ["only"]


@pytest.mark.parametrize(
    "scopes",
    [[{"name": "a"}, {"name": "a"}], [{"name": ""}], [{"name": "two words"}]],
    ids=["duplicate names", "empty name", "space in name"],
)
async def test_invalid_scope_definitions_are_refused(
    http: AsyncClient, scopes: list[dict[str, str]]
) -> None:
    response = await http.post(
        "/api/service/create", json={"supportedScopes": scopes}, auth=OPERATOR
    )
    assert response.status_code == 400
    assert response.json()["resultCode"] == "VALUE_INVALID"


async def test_deleting_a_service_takes_its_clients_and_tokens(
    world: World, http: AsyncClient
) -> None:
    token = await world.token()
    assert (
        await http.delete(f"/api/service/delete/{world.api_key}", auth=OPERATOR)
    ).status_code == 204
    assert (await http.get(f"/api/service/get/{world.api_key}", auth=OPERATOR)).status_code == 404
    assert (
        await http.delete(f"/api/service/delete/{world.api_key}", auth=OPERATOR)
    ).status_code == 404
    # Its credentials are gone with it.
    response = await http.post(
        "/auth/token/update", json={"accessToken": token["accessToken"]}, auth=world.auth
    )
    assert response.status_code == 401


async def test_clients_are_managed_and_isolated_per_service(http: AsyncClient) -> None:
    first, second = await World.create(http), await World.create(http)
    client = ok(
        await http.post(
            "/api/client/create",
            json={"clientName": "c", "clientIdAlias": "my-app"},
            auth=first.auth,
        )
    )
    # Another service can neither see nor change it, and may use the same alias.
    assert (
        await http.get(f"/api/client/get/{client['clientId']}", auth=second.auth)
    ).status_code == 404
    assert (
        await http.delete(f"/api/client/delete/{client['clientId']}", auth=second.auth)
    ).status_code == 404
    ok(await http.post("/api/client/create", json={"clientIdAlias": "my-app"}, auth=second.auth))
    taken = await http.post("/api/client/create", json={"clientIdAlias": "my-app"}, auth=first.auth)
    assert (taken.status_code, taken.json()["resultCode"]) == (409, "RESOURCE_CONFLICT")

    updated = ok(
        await http.post(
            f"/api/client/update/{client['clientId']}",
            json={"extension": {"requestableScopesEnabled": True, "requestableScopes": ["read"]}},
            auth=first.auth,
        )
    )
    assert updated["extension"] == {"requestableScopesEnabled": True, "requestableScopes": ["read"]}
    assert updated["clientName"] == "c"
    listing = ok(await http.get("/api/client/get/list", auth=first.auth))
    assert listing["totalCount"] == 2
    assert {c["clientId"] for c in listing["clients"]} >= {client["clientId"]}

    # Tokens for another service's client cannot be created.
    refused = ok(
        await http.post(
            "/api/auth/token/create",
            json={"grantType": "PASSWORD", "clientId": client["clientId"], "subject": "s"},
            auth=second.auth,
        )
    )
    assert refused["action"] == "BAD_REQUEST"


async def test_token_lists_filter_by_client_alias_and_subject_and_page(
    http: AsyncClient,
) -> None:
    world = await World.create(http)
    ok(
        await http.post(
            f"/api/client/update/{world.client_id}",
            json={"clientIdAlias": "alias-1"},
            auth=world.auth,
        )
    )
    for subject in ["a", "a", "a", "b"]:
        await world.token(subject=subject)
    other = await World.create(http)
    await other.token(subject="a")

    def page(**params: object) -> dict[str, str]:
        return {k: str(v) for k, v in params.items()}

    by_alias = ok(
        await http.get(
            "/api/auth/token/get/list",
            params=page(clientIdentifier="alias-1", subject="a", start=1, end=3),
            auth=world.auth,
        )
    )
    assert by_alias["totalCount"] == 3
    assert len(by_alias["accessTokens"]) == 2
    everything = ok(await http.get("/api/auth/token/get/list", auth=world.auth))
    assert everything["totalCount"] == 4  # the other service's token is not counted
    unknown = ok(
        await http.get(
            "/api/auth/token/get/list", params={"clientIdentifier": "nobody"}, auth=world.auth
        )
    )
    assert (unknown["totalCount"], unknown["accessTokens"]) == (0, [])
