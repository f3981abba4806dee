"""Connected apps (Authlete's client authorization and granted scopes) and a v3 service
deleting itself: every path form, through plain HTTP and Authlete's Python client, on both
databases."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from authlete.api.authlete_api_exception import AuthleteApiException
from authlete.api.authlete_api_impl import AuthleteApiImpl
from authlete.conf.authlete_configuration import AuthleteConfiguration
from authlete.dto.client_authorization_update_request import ClientAuthorizationUpdateRequest
from httpx import AsyncClient

from tests.api.test_authlete_client import api, new_token, service_with_client
from tests.api.world import World, ok
from tests.conftest import OPERATOR

pytestmark = pytest.mark.anyio

PREFIXES = ["/api", "/api/{serviceId}"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def new_client(world: World, **fields: Any) -> int:
    created = ok(await world.http.post("/api/client/create", json={"clientName": "other",
                                       **fields}, auth=world.auth))  # fmt: skip
    client_id: int = created["clientId"]
    return client_id


async def tokens_of(world: World, **params: str | int) -> list[dict[str, Any]]:
    listed = ok(await world.http.get("/api/auth/token/get/list", auth=world.auth,
                                     params={"end": 1000, **params}))  # fmt: skip
    tokens: list[dict[str, Any]] = listed.get("accessTokens", [])
    return tokens


async def kill(world: World, token: dict[str, Any]) -> None:
    past = now_ms() - 1_000
    await world.update(tokenId=token["tokenId"], accessTokenExpiresAt=past,
                       refreshTokenExpiresAt=past)  # fmt: skip


# --- The apps a subject has authorized -------------------------------------------------------


async def authorized(
    world: World, form: str, subject: str, prefix: str = "/api", **page: Any
) -> dict[str, Any]:
    base = prefix.format(serviceId=world.api_key) + "/client/authorization/get/list"
    if form == "path":
        answer = await world.http.get(f"{base}/{subject}", params=page, auth=world.auth)
    elif form == "query":
        answer = await world.http.get(base, params={"subject": subject, **page}, auth=world.auth)
    else:
        answer = await world.http.post(base, json={"subject": subject, **page}, auth=world.auth)
    return ok(answer)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("form", ["path", "query", "body"])
async def test_the_list_shows_the_clients_a_subject_holds_live_tokens_of(
    world: World, form: str, prefix: str
) -> None:
    second = await new_client(world)
    third = await new_client(world)
    await world.token()
    await world.token()  # two tokens of one client: the client is listed once
    await world.token(clientId=second)
    await kill(world, await world.token(clientId=third))  # dead: not an authorization
    await world.token(clientId=third, subject="bob")

    listed = await authorized(world, form, "alice", prefix)
    assert [c["clientId"] for c in listed["clients"]] == [world.client_id, second]
    assert (listed["totalCount"], listed["subject"], listed["start"], listed["end"]) == (
        2, "alice", 0, 5,
    )  # fmt: skip
    assert listed["clients"][1]["clientName"] == "other"
    assert "clientSecret" not in listed["clients"][0]
    paged = await authorized(world, form, "alice", prefix, start=1, end=2)
    assert [c["clientId"] for c in paged["clients"]] == [second]
    assert paged["totalCount"] == 2
    counted = await authorized(world, form, "alice", prefix, start=2, end=2)
    assert (counted["totalCount"], "clients" in counted) == (2, False)
    bob = await authorized(world, form, "bob", prefix)
    assert [c["clientId"] for c in bob["clients"]] == [third]
    nobody = await authorized(world, form, "carol", prefix)
    assert (nobody["clients"], nobody["totalCount"]) == ([], 0)
    # tokenstore's clients have no developer: a developer filter matches none.
    developer = await authorized(world, form, "alice", prefix, developer="dev")
    assert (developer["totalCount"], developer["developer"]) == (0, "dev")


async def test_the_list_refuses_bad_input(world: World) -> None:
    base = "/api/client/authorization/get/list"
    long = "x" * 256
    for response in (
        await world.http.get(base, auth=world.auth),  # no subject
        await world.http.post(base, json={}, auth=world.auth),
        await world.http.post(base, json={"subject": 7}, auth=world.auth),
        await world.http.get(base, params={"subject": long}, auth=world.auth),
        await world.http.get(f"{base}/{long}", auth=world.auth),
        await world.http.post(base, json={"subject": long}, auth=world.auth),
        await world.http.get(f"{base}/alice", params={"end": 1001}, auth=world.auth),
        await world.http.post(base, json={"subject": "a", "start": -1}, auth=world.auth),
    ):
        assert response.status_code == 400, response.text
    assert (await world.http.get(f"{base}/alice")).status_code == 401


async def test_another_services_tokens_are_not_listed(world: World) -> None:
    await world.token()
    other = await World.create(world.http)
    assert (await authorized(other, "path", "alice"))["totalCount"] == 0


# --- Change an app's scopes ----------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_an_update_replaces_the_scopes_of_the_subjects_live_tokens(
    world: World, prefix: str
) -> None:
    first = await world.token(scopes=["read"])
    second = await world.token(scopes=["profile"])
    bobs = await world.token(subject="bob")
    url = prefix.format(serviceId=world.api_key) + f"/client/authorization/update/{world.client_id}"
    answer = ok(await world.http.post(
        url, json={"subject": "alice", "scopes": ["write", "nope", "admin", "write"]},
        auth=world.auth,
    ))  # fmt: skip
    assert (answer["count"], answer["resultCode"]) == (2, "CLIENT_AUTHORIZATION_UPDATED")
    assert answer["resultMessage"] == "Updated 2 access token(s)."
    scopes = {t["tokenId"]: t["scopes"] for t in await tokens_of(world)}
    assert scopes[first["tokenId"]] == scopes[second["tokenId"]] == ["write", "admin"]
    assert scopes[bobs["tokenId"]] == ["read"]
    # null scopes: nothing changes, the tokens are counted.
    unchanged = ok(await world.http.post(url, json={"subject": "alice"}, auth=world.auth))
    assert unchanged["count"] == 2
    assert {t["tokenId"]: t["scopes"] for t in await tokens_of(world)} == scopes


async def test_an_update_keeps_only_the_scopes_the_client_may_request(world: World) -> None:
    limited = await new_client(
        world, extension={"requestableScopesEnabled": True, "requestableScopes": ["read"]}
    )
    token = await world.token(clientId=limited, scopes=["read"])
    dead = await world.token(clientId=limited, scopes=["read"])
    await kill(world, dead)
    answer = ok(await world.http.post(
        f"/api/client/authorization/update/{limited}",
        json={"subject": "alice", "scopes": ["write", "read"]}, auth=world.auth,
    ))  # fmt: skip
    assert answer["count"] == 1  # the dead token is not an authorization
    (listed,) = await tokens_of(world, clientIdentifier=str(limited))
    assert (listed["tokenId"], listed["scopes"]) == (token["tokenId"], ["read"])
    dead_row = await tokens_of(world, clientIdentifier=str(limited), tokenStatus="INVALID")
    assert dead_row[0]["scopes"] == ["read"]


async def test_an_update_refuses_bad_input(world: World) -> None:
    other = await World.create(world.http)
    url = "/api/client/authorization/update/{}"
    cases = [
        (url.format(world.client_id), {"scopes": ["read"]}, 400),  # no subject
        (url.format(world.client_id), {"subject": "x" * 256}, 400),
        (url.format(world.client_id), {"subject": "alice", "scopes": "read"}, 400),
        (url.format(999_999_999), {"subject": "alice"}, 404),
        (url.format(other.client_id), {"subject": "alice"}, 404),  # another service's
        (url.format(0), {"subject": "alice"}, 400),
    ]
    for path, body, status in cases:
        response = await world.http.post(path, json=body, auth=world.auth)
        assert response.status_code == status, (path, body, response.text)


# --- Withdraw an app ------------------------------------------------------------------------


async def delete_authorization(world: World, form: str, client_id: int, subject: str) -> Any:
    base = f"/api/client/authorization/delete/{client_id}"
    if form == "path":
        return await world.http.delete(f"{base}/{subject}", auth=world.auth)
    if form == "query":
        return await world.http.delete(base, params={"subject": subject}, auth=world.auth)
    return await world.http.post(base, json={"subject": subject}, auth=world.auth)


@pytest.mark.parametrize("form", ["path", "query", "body"])
async def test_a_delete_removes_the_subjects_tokens_of_the_client(world: World, form: str) -> None:
    second = await new_client(world)
    await world.token()
    await kill(world, await world.token())  # dead, not yet purged: deleted too
    kept = [
        (await world.token(subject="bob"))["tokenId"],
        (await world.token(clientId=second))["tokenId"],
    ]
    answer = ok(await delete_authorization(world, form, world.client_id, "alice"))
    assert (answer["count"], answer["resultMessage"]) == (2, "Deleted 2 access token(s).")
    remaining = await tokens_of(world, tokenStatus="ALL")
    assert sorted(t["tokenId"] for t in remaining) == sorted(kept)
    again = ok(await delete_authorization(world, form, world.client_id, "alice"))
    assert again["count"] == 0
    assert (await delete_authorization(world, form, 999_999_999, "alice")).status_code == 404
    too_long = await delete_authorization(world, form, world.client_id, "x" * 256)
    assert too_long.status_code == 400


async def test_a_subject_with_a_slash_is_named_by_query_or_body(world: World) -> None:
    await world.token(subject="team/alice")
    listed = await authorized(world, "query", "team/alice")
    assert listed["totalCount"] == 1
    answer = ok(await delete_authorization(world, "query", world.client_id, "team/alice"))
    assert answer["count"] == 1


# --- Granted scopes -------------------------------------------------------------------------


async def granted(world: World, form: str, client_id: int, subject: str) -> Any:
    base = f"/api/client/granted_scopes/get/{client_id}"
    if form == "path":
        return await world.http.get(f"{base}/{subject}", auth=world.auth)
    if form == "query":
        return await world.http.get(base, params={"subject": subject}, auth=world.auth)
    return await world.http.post(base, json={"subject": subject}, auth=world.auth)


async def forget(world: World, form: str, client_id: int, subject: str) -> Any:
    base = f"/api/client/granted_scopes/delete/{client_id}"
    if form == "path":
        return await world.http.delete(f"{base}/{subject}", auth=world.auth)
    if form == "query":
        return await world.http.delete(base, params={"subject": subject}, auth=world.auth)
    return await world.http.post(base, json={"subject": subject}, auth=world.auth)


@pytest.mark.parametrize("form", ["path", "query", "body"])
async def test_granted_scopes_are_those_of_the_live_tokens(world: World, form: str) -> None:
    none = ok(await granted(world, form, world.client_id, "alice"))
    assert (none["clientId"], none["subject"], none["modifiedAt"]) == (world.client_id, "alice", 0)
    assert none["serviceApiKey"] == world.api_key
    assert "latestGrantedScopes" not in none
    assert "mergedGrantedScopes" not in none

    before = now_ms()
    await world.token(scopes=["read", "profile"])
    await kill(world, await world.token(scopes=["admin"]))  # dead: not granted any more
    await world.token(scopes=["write", "read"])
    await world.token(subject="bob", scopes=["admin"])
    scopes = ok(await granted(world, form, world.client_id, "alice"))
    assert scopes["latestGrantedScopes"] == ["write", "read"]
    assert scopes["mergedGrantedScopes"] == ["read", "profile", "write"]
    assert scopes["modifiedAt"] >= before

    forgotten = ok(await forget(world, form, world.client_id, "alice"))
    assert (forgotten["count"], forgotten["resultCode"]) == (2, "GRANTED_SCOPES_DELETED")
    cleared = ok(await granted(world, form, world.client_id, "alice"))
    assert (cleared["latestGrantedScopes"], cleared["mergedGrantedScopes"]) == ([], [])
    # The tokens stay, without scopes; bob's are untouched.
    alices = await tokens_of(world, subject="alice")
    assert [t["scopes"] for t in alices] == [[], []]
    bob = ok(await granted(world, form, world.client_id, "bob"))
    assert bob["mergedGrantedScopes"] == ["admin"]


@pytest.mark.parametrize("form", ["path", "query", "body"])
async def test_granted_scopes_refuse_bad_input(world: World, form: str) -> None:
    other = await World.create(world.http)
    for call in (granted, forget):
        assert (await call(world, form, 999_999_999, "alice")).status_code == 404
        assert (await call(world, form, other.client_id, "alice")).status_code == 404
        assert (await call(world, form, world.client_id, "x" * 256)).status_code == 400


async def test_missing_subjects_are_refused(http: AsyncClient, world: World) -> None:
    for method, path in (
        ("GET", f"/api/client/granted_scopes/get/{world.client_id}"),
        ("DELETE", f"/api/client/granted_scopes/delete/{world.client_id}"),
        ("DELETE", f"/api/client/authorization/delete/{world.client_id}"),
    ):
        assert (await http.request(method, path, auth=world.auth)).status_code == 400
    for path in (
        f"/api/client/granted_scopes/get/{world.client_id}",
        f"/api/client/granted_scopes/delete/{world.client_id}",
        f"/api/client/authorization/delete/{world.client_id}",
    ):
        assert (await http.post(path, json={}, auth=world.auth)).status_code == 400


# --- Through Authlete's Python client ------------------------------------------------------


def v3(base_url: str, api_key: int) -> AuthleteApiImpl:
    issued = httpx.post(f"{base_url}/api/service/{api_key}/access_token/create", json={},
                        auth=OPERATOR).json()  # fmt: skip
    configuration = AuthleteConfiguration()
    configuration.baseUrl = base_url
    configuration.apiVersion = "V3"
    configuration.serviceApiKey = str(api_key)
    configuration.serviceAccessToken = issued["accessToken"]
    return AuthleteApiImpl(configuration)


@pytest.mark.parametrize("version", ["V2", "V3"])
def test_connected_apps_through_authletes_client(base_url: str, version: str) -> None:
    service, basic, client_id = service_with_client(base_url)
    authlete = basic if version == "V2" else v3(base_url, service.apiKey)
    new_token(authlete, client_id, scopes=["read"])
    new_token(authlete, client_id, scopes=["write"])

    scopes = authlete.getGrantedScopes(client_id, "alice")
    assert scopes.clientId == client_id
    assert scopes.subject == "alice"
    assert scopes.mergedGrantedScopes == ["read", "write"]
    assert scopes.latestGrantedScopes == ["write"]

    update = ClientAuthorizationUpdateRequest()
    update.subject = "alice"
    update.scopes = ["read", "unsupported"]
    authlete.updateClientAuthorization(client_id, update)
    assert authlete.getGrantedScopes(client_id, "alice").mergedGrantedScopes == ["read"]

    authlete.deleteGrantedScopes(client_id, "alice")
    assert authlete.getGrantedScopes(client_id, "alice").mergedGrantedScopes == []
    assert authlete.getTokenList(subject="alice").totalCount == 2

    authlete.deleteClientAuthorization(client_id, "alice")
    assert authlete.getTokenList(subject="alice").totalCount == 0
    with pytest.raises(AuthleteApiException) as missing:
        authlete.deleteClientAuthorization(999_999_999, "alice")
    assert missing.value.response.status_code == 404

    # The client's list call: its response class cannot be built by the client itself
    # (AuthorizedClientListResponse declares its fields as a set), so the POST it sends is
    # made here by hand.
    new_token(authlete, client_id)
    prefix = "/api" if version == "V2" else f"/api/{service.apiKey}"
    listed = httpx.post(
        f"{base_url}{prefix}/client/authorization/get/list",
        json={"subject": "alice", "developer": None, "start": 0, "end": 5},
        auth=(str(service.apiKey), service.apiSecret),
    ).json()
    assert [c["clientId"] for c in listed["clients"]] == [client_id]


# --- A v3 service deletes itself -------------------------------------------------------------


async def test_a_service_deletes_itself_with_its_basic_credentials(http: AsyncClient) -> None:
    world = await World.create(http)
    other = await World.create(http)
    await world.token()
    path = f"/api/{world.api_key}/service/delete"
    # Another service's credentials do not fit the path, and delete nothing.
    assert (await http.delete(path, auth=other.auth)).status_code == 401
    assert (await http.delete(path)).status_code == 401
    deleted = await http.delete(path, auth=world.auth)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await http.get(f"/api/{world.api_key}/service/get", auth=world.auth)).status_code == 401
    gone = await http.get(f"/api/service/get/{world.api_key}", auth=OPERATOR)
    assert gone.status_code == 404
    assert (await http.get(f"/api/{other.api_key}/service/get", auth=other.auth)).status_code == 200


def test_a_service_deletes_itself_through_authletes_v3_client(base_url: str) -> None:
    service, basic, client_id = service_with_client(base_url)
    authlete = v3(base_url, service.apiKey)
    new_token(authlete, client_id)
    authlete.deleteService(service.apiKey)
    with pytest.raises(AuthleteApiException) as refused:
        authlete.getTokenList()
    assert refused.value.response.status_code == 401
    with pytest.raises(AuthleteApiException) as basic_refused:
        basic.getTokenList()
    assert basic_refused.value.response.status_code == 401
    operator = api(base_url, serviceOwnerApiKey=OPERATOR[0], serviceOwnerApiSecret=OPERATOR[1])
    with pytest.raises(AuthleteApiException) as missing:
        operator.getService(service.apiKey)
    assert missing.value.response.status_code == 404
