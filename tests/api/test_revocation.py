"""Client credentials (type, method, secret, TLS subject, JWK set, durations) and RFC 7009
revocation as an authorization server's revocation endpoint calls it (`/auth/revocation`)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from authlete.api.authlete_api_impl import AuthleteApiImpl
from authlete.conf.authlete_configuration import AuthleteConfiguration
from authlete.dto.client import Client
from authlete.dto.revocation_action import RevocationAction
from authlete.dto.revocation_request import RevocationRequest
from authlete.dto.service import Service
from authlete.dto.token_create_request import TokenCreateRequest
from authlete.types.client_auth_method import ClientAuthMethod
from authlete.types.client_type import ClientType
from authlete.types.grant_type import GrantType
from httpx import AsyncClient
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.api.world import World, ok
from tests.conftest import OPERATOR
from tests.proofs import self_signed_certificate

pytestmark = pytest.mark.anyio
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


async def new_client(world: World, **fields: Any) -> dict[str, Any]:
    return ok(await world.http.post("/api/client/create", json=fields, auth=world.auth))


async def token_for(world: World, client_id: int) -> dict[str, Any]:
    return await world.token(clientId=client_id)


async def revoke(world: World, parameters: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"parameters": urlencode(parameters), **fields}
    return ok(await world.http.post("/api/auth/revocation", json=body, auth=world.auth))


async def introspected(world: World, token: str) -> str:
    answer = ok(
        await world.http.post("/api/auth/introspection", json={"token": token}, auth=world.auth)
    )
    action: str = answer["action"]
    return action


# --- Client fields and secrets ---------------------------------------------------------------


async def test_a_confidential_client_gets_a_secret_shown_once(world: World) -> None:
    created = await new_client(world, clientName="web")
    assert created["clientType"] == "CONFIDENTIAL"
    assert created["tokenAuthMethod"] == "CLIENT_SECRET_BASIC"
    secret = created["clientSecret"]
    assert len(secret) == 43  # 256 bits, base64url
    shown = ok(await world.http.get(f"/api/client/get/{created['clientId']}", auth=world.auth))
    assert "clientSecret" not in shown
    assert secret not in json.dumps(shown)
    listed = ok(await world.http.get("/api/client/get/list?end=100", auth=world.auth))
    assert secret not in json.dumps(listed)


async def test_a_public_client_has_no_secret(world: World) -> None:
    created = await new_client(world, clientType="PUBLIC")
    assert created["tokenAuthMethod"] == "NONE"
    assert "clientSecret" not in created
    refreshed = await world.http.get(
        f"/api/client/secret/refresh/{created['clientId']}", auth=world.auth
    )
    assert refreshed.status_code == 400


@pytest.mark.parametrize(
    "fields",
    [
        {"clientType": "PUBLIC", "tokenAuthMethod": "CLIENT_SECRET_BASIC"},
        {"clientType": "CONFIDENTIAL", "tokenAuthMethod": "NONE"},
        {"tokenAuthMethod": "TLS_CLIENT_AUTH"},  # no subject DN
        {"tokenAuthMethod": "PRIVATE_KEY_JWT"},  # no jwks
        {"tokenAuthMethod": "PRIVATE_KEY_JWT", "jwks": "not json"},
        {"tokenAuthMethod": "TLS_CLIENT_AUTH", "tlsClientAuthSubjectDn": "not a DN"},
        {"tokenAuthMethod": "CLIENT_SECRET_JWT"},  # not offered
        {"extension": {"accessTokenDuration": -1}},
    ],
)
async def test_client_settings_that_cannot_work_are_refused(
    world: World, fields: dict[str, Any]
) -> None:
    response = await world.http.post("/api/client/create", json=fields, auth=world.auth)
    assert response.status_code == 400, response.text


async def test_the_secret_is_refreshed_or_set_and_only_the_new_one_works(world: World) -> None:
    created = await new_client(world, clientIdAlias="rotating")
    first = created["clientSecret"]
    token = await token_for(world, created["clientId"])

    refreshed = ok(await world.http.get("/api/client/secret/refresh/rotating", auth=world.auth))
    second = refreshed["newClientSecret"]
    assert second != first
    assert refreshed["oldClientSecret"] is None  # only a digest of the old one was kept
    old = await revoke(
        world, {"token": token["accessToken"]}, clientId="rotating", clientSecret=first
    )
    assert old["action"] == "INVALID_CLIENT"

    chosen = "my-own_Secret-42"
    updated = ok(
        await world.http.post(
            f"/api/client/secret/update/{created['clientId']}",
            json={"clientSecret": chosen},
            auth=world.auth,
        )
    )
    assert updated["newClientSecret"] == chosen
    stale = await revoke(
        world, {"token": token["accessToken"]}, clientId="rotating", clientSecret=second
    )
    assert stale["action"] == "INVALID_CLIENT"
    fresh = await revoke(
        world, {"token": token["accessToken"]}, clientId="rotating", clientSecret=chosen
    )
    assert fresh["action"] == "OK"
    assert await introspected(world, token["accessToken"]) == "UNAUTHORIZED"


@pytest.mark.parametrize("secret", ["", "has space", "x" * 87, "é"])
async def test_a_chosen_secret_of_the_wrong_form_is_refused(world: World, secret: str) -> None:
    response = await world.http.post(
        f"/api/client/secret/update/{world.client_id}",
        json={"clientSecret": secret},
        auth=world.auth,
    )
    assert response.status_code == 400


async def test_the_secret_endpoints_of_an_unknown_client_answer_404(world: World) -> None:
    refresh = await world.http.get("/api/client/secret/refresh/nobody", auth=world.auth)
    update = await world.http.post(
        "/api/client/secret/update/123", json={"clientSecret": "abc"}, auth=world.auth
    )
    assert (refresh.status_code, update.status_code) == (404, 404)


async def test_a_client_becoming_public_loses_its_secret_and_back_gets_a_new_one(
    world: World,
) -> None:
    created = await new_client(world)
    path = f"/api/client/update/{created['clientId']}"
    public = ok(await world.http.post(path, json={"clientType": "PUBLIC"}, auth=world.auth))
    assert (public["tokenAuthMethod"], "clientSecret" in public) == ("NONE", False)
    back = ok(
        await world.http.post(path, json={"tokenAuthMethod": "CLIENT_SECRET_POST"}, auth=world.auth)
    )
    assert back["clientType"] == "CONFIDENTIAL"
    assert back["clientSecret"] != created["clientSecret"]
    token = await token_for(world, created["clientId"])
    params = {"token": token["accessToken"], "client_id": str(created["clientId"])}
    assert (await revoke(world, params | {"client_secret": created["clientSecret"]}))[
        "action"
    ] == "INVALID_CLIENT"
    assert (await revoke(world, params | {"client_secret": back["clientSecret"]}))["action"] == "OK"


async def test_a_clients_durations_shorten_its_tokens(world: World) -> None:
    created = await new_client(
        world, extension={"accessTokenDuration": 120, "refreshTokenDuration": 240}
    )
    assert created["extension"]["accessTokenDuration"] == 120
    before = int(time.time() * 1000)
    token = await world.token(clientId=created["clientId"], scopes=[])
    assert token["expiresIn"] == 120
    assert before + 120_000 <= token["expiresAt"] <= before + 130_000
    assert before + 240_000 <= token["refreshTokenExpiresAt"] <= before + 250_000
    # Longer than the service's (86400 s): the service's applies.
    longer = await new_client(world, extension={"accessTokenDuration": 10**6})
    assert (await world.token(clientId=longer["clientId"], scopes=[]))["expiresIn"] == 86400


# --- Revocation ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["accessToken", "refreshToken"])
@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token"])
async def test_a_client_revokes_its_own_token_by_either_value(
    world: World, which: str, hint: str | None
) -> None:
    client = await new_client(world)
    token = await token_for(world, client["clientId"])
    parameters = {"token": token[which]} | ({"token_type_hint": hint} if hint else {})
    answer = await revoke(
        world, parameters, clientId=str(client["clientId"]), clientSecret=client["clientSecret"]
    )
    assert answer["action"] == "OK"
    assert answer["responseContent"] is None
    assert await introspected(world, token["accessToken"]) == "UNAUTHORIZED"


async def test_another_clients_token_is_left_alone_and_the_answer_is_ok(world: World) -> None:
    mine = await new_client(world)
    theirs = await token_for(world, world.client_id)
    answer = await revoke(
        world,
        {"token": theirs["accessToken"]},
        clientId=str(mine["clientId"]),
        clientSecret=mine["clientSecret"],
    )
    assert answer["action"] == "OK"
    assert await introspected(world, theirs["accessToken"]) == "OK"


async def test_an_unknown_token_is_ok(world: World) -> None:
    client = await new_client(world)
    answer = await revoke(
        world,
        {"token": "never-issued"},
        clientId=str(client["clientId"]),
        clientSecret=client["clientSecret"],
    )
    assert answer["action"] == "OK"


async def test_a_client_of_another_service_is_unknown(world: World, http: AsyncClient) -> None:
    other = await World.create(http)
    client = await new_client(other)
    token = await token_for(other, client["clientId"])
    answer = await revoke(
        world,
        {"token": token["accessToken"]},
        clientId=str(client["clientId"]),
        clientSecret=client["clientSecret"],
    )
    assert answer["action"] == "INVALID_CLIENT"
    assert await introspected(other, token["accessToken"]) == "OK"


@pytest.mark.parametrize(
    ("parameters", "fields"),
    [
        ({}, {"clientSecret": "wrong"}),  # wrong secret
        ({}, {"clientSecret": None}),  # no secret
        ({"client_secret": "{secret}"}, {"clientSecret": None}),  # POST for a BASIC client
        ({"client_id": "someone-else"}, {}),  # two names
        ({}, {"clientId": "999999", "clientSecret": "{secret}"}),  # unknown client
        ({}, {"clientId": None, "clientSecret": None}),  # nobody
    ],
)
async def test_failed_client_authentication_is_invalid_client(
    world: World, parameters: dict[str, str], fields: dict[str, Any]
) -> None:
    client = await new_client(world)
    token = await token_for(world, client["clientId"])
    secret = client["clientSecret"]
    body = {"clientId": str(client["clientId"]), "clientSecret": secret} | fields
    body = {k: v.replace("{secret}", secret) if isinstance(v, str) else v for k, v in body.items()}
    params = {"token": token["accessToken"]} | {
        k: v.replace("{secret}", secret) for k, v in parameters.items()
    }
    answer = await revoke(world, params, **body)
    assert answer["action"] == "INVALID_CLIENT"
    assert json.loads(answer["responseContent"])["error"] == "invalid_client"
    assert await introspected(world, token["accessToken"]) == "OK"


@pytest.mark.parametrize(
    "parameters",
    ["", "token_type_hint=access_token", "token=", "token=a&token=b", "token=a&&b=%"],
)
async def test_a_request_without_one_token_is_bad_request(world: World, parameters: str) -> None:
    client = await new_client(world)
    answer = ok(
        await world.http.post(
            "/api/auth/revocation",
            json={
                "parameters": parameters,
                "clientId": str(client["clientId"]),
                "clientSecret": client["clientSecret"],
            },
            auth=world.auth,
        )
    )
    assert answer["action"] == "BAD_REQUEST", parameters
    assert json.loads(answer["responseContent"])["error"] == "invalid_request"


@pytest.mark.parametrize(
    "body",
    [{}, {"parameters": 1}, {"parameters": "token=x", "clientId": 5}, []],
)
async def test_a_malformed_call_is_400(world: World, body: Any) -> None:
    response = await world.http.post("/api/auth/revocation", json=body, auth=world.auth)
    assert response.status_code == 400


async def test_a_public_client_names_itself_in_the_form(world: World) -> None:
    client = await new_client(world, clientType="PUBLIC", clientIdAlias="spa")
    token = await token_for(world, client["clientId"])
    with_secret = await revoke(
        world, {"token": token["accessToken"], "client_id": "spa", "client_secret": "guess"}
    )
    assert with_secret["action"] == "INVALID_CLIENT"
    answer = await revoke(world, {"token": token["accessToken"], "client_id": "spa"})
    assert answer["action"] == "OK"
    assert await introspected(world, token["accessToken"]) == "UNAUTHORIZED"


async def test_a_tls_client_authenticates_with_its_certificate(world: World) -> None:
    pem, _ = self_signed_certificate("mtls.example.com")
    intruder, _ = self_signed_certificate("intruder.example.com")
    client = await new_client(
        world, tokenAuthMethod="TLS_CLIENT_AUTH", tlsClientAuthSubjectDn="CN=mtls.example.com"
    )
    assert client["tlsClientAuthSubjectDn"] == "CN=mtls.example.com"
    token = await token_for(world, client["clientId"])
    params = {"token": token["accessToken"], "client_id": str(client["clientId"])}
    for bad in ({"clientCertificate": intruder}, {}, {"clientSecret": client["clientSecret"]}):
        assert (await revoke(world, params, **bad))["action"] == "INVALID_CLIENT"
    answer = await revoke(world, params, clientCertificate=pem, clientCertificatePath=[pem])
    assert answer["action"] == "OK"
    assert await introspected(world, token["accessToken"]) == "UNAUTHORIZED"


def client_assertion(key: ECKey, client_id: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": "https://as.example.com/revoke",
        "exp": now + 60,
        "iat": now,
        "jti": f"jti-{time.time_ns()}",
    } | overrides
    return jwt.encode({"alg": "ES256", "kid": key.kid or ""}, claims, key)


async def test_a_private_key_jwt_client_authenticates_once_per_assertion(world: World) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "client-key"})
    jwks = json.dumps({"keys": [key.as_dict(private=False)]})
    client = await new_client(world, tokenAuthMethod="PRIVATE_KEY_JWT", jwks=jwks)
    assert json.loads(client["jwks"]) == json.loads(jwks)
    client_id = str(client["clientId"])
    token = await token_for(world, client["clientId"])
    stranger = ECKey.generate_key("P-256", parameters={"kid": "client-key"})
    for bad in (
        client_assertion(stranger, client_id),
        client_assertion(key, client_id, exp=int(time.time()) - 10),
        client_assertion(key, client_id, iss="someone"),
    ):
        form = {
            "token": token["accessToken"],
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": bad,
        }
        assert (await revoke(world, form))["action"] == "INVALID_CLIENT"
    good = client_assertion(key, client_id)
    form = {
        "token": token["accessToken"],
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": good,
    }
    assert (await revoke(world, form))["action"] == "OK"
    assert await introspected(world, token["accessToken"]) == "UNAUTHORIZED"
    # The same assertion again: its jti has been used (RFC 7523 section 3, item 7).
    second = await token_for(world, client["clientId"])
    replay = await revoke(world, form | {"token": second["accessToken"]})
    assert replay["action"] == "INVALID_CLIENT"
    assert await introspected(world, second["accessToken"]) == "OK"
    # A secret is not this client's method.
    secret = await revoke(
        world,
        {"token": second["accessToken"]},
        clientId=client_id,
        clientSecret=client["clientSecret"],
    )
    assert secret["action"] == "INVALID_CLIENT"


async def test_revocation_is_served_on_the_v3_path(world: World) -> None:
    client = await new_client(world)
    token = await token_for(world, client["clientId"])
    body = {
        "parameters": urlencode({"token": token["accessToken"]}),
        "clientId": str(client["clientId"]),
        "clientSecret": client["clientSecret"],
    }
    answer = ok(
        await world.http.post(f"/api/{world.api_key}/auth/revocation", json=body, auth=world.auth)
    )
    assert answer["action"] == "OK"
    assert await introspected(world, token["accessToken"]) == "UNAUTHORIZED"


# --- Through Authlete's own client -----------------------------------------------------------


def authlete(base_url: str, **credentials: Any) -> AuthleteApiImpl:
    configuration = AuthleteConfiguration()
    configuration.baseUrl = base_url
    for name, value in credentials.items():
        setattr(configuration, name, value)
    return AuthleteApiImpl(configuration)


def test_revocation_through_authletes_client(base_url: str) -> None:
    operator = authlete(base_url, serviceOwnerApiKey=OPERATOR[0], serviceOwnerApiSecret=OPERATOR[1])
    service = Service()
    service.serviceName = "revocation through the Authlete client"
    created = operator.createService(service)
    api = authlete(base_url, serviceApiKey=str(created.apiKey), serviceApiSecret=created.apiSecret)

    client = Client()
    client.clientName = "web"
    client.clientType = ClientType.CONFIDENTIAL
    client.tokenAuthMethod = ClientAuthMethod.CLIENT_SECRET_POST
    registered = api.createClient(client)
    assert registered.tokenAuthMethod is ClientAuthMethod.CLIENT_SECRET_POST
    assert registered.clientType is ClientType.CONFIDENTIAL
    refreshed = api.refreshClientSecret(registered.clientId)
    assert refreshed.newClientSecret
    assert refreshed.newClientSecret != registered.clientSecret

    request = TokenCreateRequest()
    request.grantType = GrantType.CLIENT_CREDENTIALS
    request.clientId = registered.clientId
    token = api.tokenCreate(request)

    revocation = RevocationRequest()
    revocation.parameters = urlencode(
        {
            "token": token.accessToken,
            "client_id": str(registered.clientId),
            "client_secret": registered.clientSecret,
        }
    )
    assert api.revocation(revocation).action is RevocationAction.INVALID_CLIENT  # old secret
    revocation.parameters = urlencode(
        {
            "token": token.accessToken,
            "client_id": str(registered.clientId),
            "client_secret": refreshed.newClientSecret,
        }
    )
    answer = api.revocation(revocation)
    assert answer.action is RevocationAction.OK
    assert answer.responseContent is None
    revocation.parameters = "token_type_hint=access_token"
    assert api.revocation(revocation).action is RevocationAction.BAD_REQUEST
