"""Introspection's audience (RFC 8707), step-up (RFC 9470) and DPoP nonce (RFC 9449 section
9) checks, on both databases, with real DPoP proofs (tests/proofs.py), and through
Authlete's own Python client where it has the fields."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from authlete.api.authlete_api_impl import AuthleteApiImpl
from authlete.conf.authlete_configuration import AuthleteConfiguration
from authlete.dto.introspection_action import IntrospectionAction
from authlete.dto.introspection_request import IntrospectionRequest
from authlete.dto.service import Service
from httpx import AsyncClient

from app.config import Settings
from app.tokens.nonces import NonceClock, nonce_key
from tests.api.world import World, ok
from tests.conftest import OPERATOR
from tests.proofs import ProofMaker

pytestmark = pytest.mark.anyio

HTU = "https://rs.example.com/accounts"
RS = "https://rs.example.com/"


async def introspect(world: World, **fields: Any) -> dict[str, Any]:
    return ok(await world.http.post("/api/auth/introspection", json=fields, auth=world.auth))


async def set_nonces(world: World, **fields: Any) -> dict[str, Any]:
    return ok(
        await world.http.post(f"/api/service/update/{world.api_key}", json=fields, auth=OPERATOR)
    )


def now_s() -> int:
    return int(time.time())


# --- Resources and responseContent on OK ----------------------------------------------------


async def test_the_token_must_cover_every_resource_the_request_names(world: World) -> None:
    token = await world.token(resources=[RS, "https://other.example.com/"])
    value = token["accessToken"]
    good = await introspect(world, token=value, resources=[RS])
    assert (good["action"], good["resultCode"]) == ("OK", "INTROSPECTION_OK")
    assert good["responseContent"] == 'Bearer error="invalid_request"'
    assert (good["usable"], good["sufficient"]) == (True, True)

    foreign = await introspect(world, token=value, resources=[RS, "https://evil.example.com/"])
    assert (foreign["action"], foreign["resultCode"]) == (
        "FORBIDDEN",
        "INTROSPECTION_RESOURCE_NOT_COVERED",
    )
    assert foreign["responseContent"].startswith('Bearer error="invalid_token"')
    assert "https://evil.example.com/" in foreign["responseContent"]
    assert (foreign["existent"], foreign["usable"], foreign["sufficient"]) == (True, True, False)
    assert foreign["accessTokenResources"] == [RS, "https://other.example.com/"]


async def test_a_token_without_resources_covers_none(world: World) -> None:
    token = await world.token()
    answer = await introspect(world, token=token["accessToken"], resources=[RS])
    assert answer["resultCode"] == "INTROSPECTION_RESOURCE_NOT_COVERED"
    unasked = await introspect(world, token=token["accessToken"], resources=[])
    assert unasked["action"] == "OK"


@pytest.mark.parametrize(
    "fields",
    [{"resources": ["not a uri"]}, {"acrValues": ['a"b']}, {"acrValues": ["two words"]},
     {"maxAge": "5"}, {"dpopNonceRequired": "yes"}],
)  # fmt: skip
async def test_malformed_new_fields_are_400(world: World, fields: dict[str, Any]) -> None:
    response = await world.http.post(
        "/api/auth/introspection", json={"token": "t", **fields}, auth=world.auth
    )
    assert response.status_code == 400, response.text
    assert response.json()["resultCode"] == "REQUEST_MALFORMED"


# --- Step-up (RFC 9470) ---------------------------------------------------------------------


async def test_the_acr_must_be_one_of_the_acr_values(world: World) -> None:
    token = await world.token(acr="urn:mfa", authTime=now_s())
    value = token["accessToken"]
    good = await introspect(world, token=value, acrValues=["urn:pwd", "urn:mfa"])
    assert good["action"] == "OK"
    assert good["acr"] == "urn:mfa"

    weak = await introspect(world, token=value, acrValues=["urn:hwk", "urn:bio"], maxAge=600)
    assert (weak["action"], weak["resultCode"]) == ("FORBIDDEN", "INTROSPECTION_ACR_INSUFFICIENT")
    assert weak["responseContent"] == (
        'Bearer error="insufficient_user_authentication",'
        'error_description="Another kind of login is required.",'
        'acr_values="urn:hwk urn:bio",max_age="600"'
    )
    assert (weak["usable"], weak["sufficient"]) == (True, False)

    unknown = await introspect(world, token=(await world.token())["accessToken"], acrValues=["x"])
    assert unknown["resultCode"] == "INTROSPECTION_ACR_INSUFFICIENT"


async def test_the_authentication_must_be_recent_enough(world: World) -> None:
    token = await world.token(acr="urn:mfa", authTime=now_s() - 3600)
    value = token["accessToken"]
    assert (await introspect(world, token=value, maxAge=7200))["action"] == "OK"
    old = await introspect(world, token=value, maxAge=60)
    assert (old["action"], old["resultCode"]) == ("FORBIDDEN", "INTROSPECTION_AUTH_TOO_OLD")
    assert old["responseContent"].startswith('Bearer error="insufficient_user_authentication"')
    assert old["responseContent"].endswith(',max_age="60"')
    # 0 or less checks nothing (Authlete's clients send 0 when unset).
    assert (await introspect(world, token=value, maxAge=0))["action"] == "OK"
    # An unknown authentication time is never recent enough.
    unknown = await world.token()
    answer = await introspect(world, token=unknown["accessToken"], maxAge=10**9)
    assert answer["resultCode"] == "INTROSPECTION_AUTH_TOO_OLD"


async def test_a_dpop_bound_token_gets_the_step_up_challenge_in_the_dpop_scheme(
    world: World,
) -> None:
    maker = ProofMaker("EC")
    token = await world.token(dpopKeyThumbprint=maker.jkt(), acr="urn:pwd", authTime=now_s())
    value = token["accessToken"]
    answer = await introspect(
        world, token=value, dpop=maker.proof(token=value, htu=HTU), htm="GET", htu=HTU,
        acrValues=["urn:mfa"],
    )  # fmt: skip
    assert answer["resultCode"] == "INTROSPECTION_ACR_INSUFFICIENT"
    assert answer["responseContent"].startswith('DPoP error="insufficient_user_authentication"')
    assert 'acr_values="urn:mfa"' in answer["responseContent"]


# --- DPoP nonces (RFC 9449 section 9) -------------------------------------------------------


def server_nonces(settings: Settings, world: World, duration: int | None) -> NonceClock:
    return NonceClock.of(nonce_key(settings.hash_key), world.api_key, duration)


async def test_the_service_nonce_settings_are_kept_and_shown(http: AsyncClient) -> None:
    created = ok(
        await http.post(
            "/api/service/create",
            json={"dpopNonceRequired": True, "dpopNonceDuration": 120},
            auth=OPERATOR,
        )
    )
    assert (created["dpopNonceRequired"], created["dpopNonceDuration"]) == (True, 120)
    key = created["apiKey"]
    # null and 0 leave them unchanged; false switches nonces off.
    same = ok(await http.post(f"/api/service/update/{key}", json={"dpopNonceDuration": 0},
                              auth=OPERATOR))  # fmt: skip
    assert (same["dpopNonceRequired"], same["dpopNonceDuration"]) == (True, 120)
    off = ok(await http.post(f"/api/service/update/{key}", json={"dpopNonceRequired": False},
                             auth=OPERATOR))  # fmt: skip
    assert (off["dpopNonceRequired"], off["dpopNonceDuration"]) == (False, 120)
    fetched = ok(await http.get(f"/api/service/get/{key}", auth=OPERATOR))
    assert (fetched["dpopNonceRequired"], fetched["dpopNonceDuration"]) == (False, 120)
    plain = ok(await http.post("/api/service/create", json={}, auth=OPERATOR))
    assert (plain["dpopNonceRequired"], plain["dpopNonceDuration"]) == (False, 0)
    too_long = await http.post(
        f"/api/service/update/{key}", json={"dpopNonceDuration": 10**12}, auth=OPERATOR
    )
    assert too_long.status_code == 400


async def test_nonces_required_by_the_service(world: World, settings: Settings) -> None:
    await set_nonces(world, dpopNonceRequired=True, dpopNonceDuration=60)
    nonces = server_nonces(settings, world, 60)
    maker = ProofMaker("EC")
    token = await world.token(dpopKeyThumbprint=maker.jkt())
    value = token["accessToken"]

    first = await introspect(
        world, token=value, dpop=maker.proof(token=value, htu=HTU), htm="GET", htu=HTU
    )
    assert (first["action"], first["resultCode"]) == (
        "UNAUTHORIZED",
        "INTROSPECTION_DPOP_MISSINGNONCE",
    )
    assert first["responseContent"].startswith('DPoP error="use_dpop_nonce",error_description="')
    nonce = first["dpopNonce"]
    assert nonces.accepts(nonce, int(time.time() * 1000))

    retried = await introspect(
        world, token=value, dpop=maker.proof(token=value, htu=HTU, claims={"nonce": nonce}),
        htm="GET", htu=HTU,
    )  # fmt: skip
    assert (retried["action"], retried["dpopNonce"]) == ("OK", nonce)
    assert retried["responseContent"] == 'Bearer error="invalid_request"'

    # The request cannot switch the service's requirement off.
    off = await introspect(
        world, token=value, dpop=maker.proof(token=value, htu=HTU), htm="GET", htu=HTU,
        dpopNonceRequired=False,
    )  # fmt: skip
    assert off["resultCode"] == "INTROSPECTION_DPOP_MISSINGNONCE"

    old = nonces.current(int(time.time() * 1000) - 180_000)  # three steps ago
    for wrong in (old, "not-a-nonce"):
        refused = await introspect(
            world, token=value, dpop=maker.proof(token=value, htu=HTU, claims={"nonce": wrong}),
            htm="GET", htu=HTU,
        )  # fmt: skip
        assert (refused["action"], refused["resultCode"]) == (
            "UNAUTHORIZED",
            "INTROSPECTION_DPOP_BADNONCE",
        )
        assert refused["responseContent"].startswith('DPoP error="use_dpop_nonce"')
        assert nonces.accepts(refused["dpopNonce"], int(time.time() * 1000))

    # A Bearer token of the same service is not asked for a nonce, and gets none.
    bearer = await introspect(world, token=(await world.token())["accessToken"])
    assert bearer["action"] == "OK"
    assert "dpopNonce" not in bearer


async def test_nonces_required_by_the_request_only(world: World, settings: Settings) -> None:
    maker = ProofMaker("EC")
    token = await world.token(dpopKeyThumbprint=maker.jkt())
    value = token["accessToken"]

    plain = await introspect(
        world, token=value, dpop=maker.proof(token=value, htu=HTU), htm="GET", htu=HTU
    )
    assert plain["action"] == "OK"
    assert "dpopNonce" not in plain  # neither the service nor the request requires one

    asked = await introspect(
        world, token=value, dpop=maker.proof(token=value, htu=HTU), htm="GET", htu=HTU,
        dpopNonceRequired=True,
    )  # fmt: skip
    assert asked["resultCode"] == "INTROSPECTION_DPOP_MISSINGNONCE"
    # The service's duration is unset: the default applies.
    assert server_nonces(settings, world, None).accepts(asked["dpopNonce"], int(time.time() * 1000))
    with_nonce = await introspect(
        world, token=value, htm="GET", htu=HTU, dpopNonceRequired=True,
        dpop=maker.proof(token=value, htu=HTU, claims={"nonce": asked["dpopNonce"]}),
    )  # fmt: skip
    assert (with_nonce["action"], with_nonce["dpopNonce"]) == ("OK", asked["dpopNonce"])


async def test_a_refused_answer_about_a_nonce_bound_token_carries_the_nonce(
    world: World,
) -> None:
    await set_nonces(world, dpopNonceRequired=True)
    maker = ProofMaker("EC")
    token = await world.token(dpopKeyThumbprint=maker.jkt())
    value = token["accessToken"]
    missing = await introspect(world, token=value, htm="GET", htu=HTU)
    assert missing["resultCode"] == "INTROSPECTION_DPOP_MISSING"
    nonce = missing["dpopNonce"]
    forbidden = await introspect(
        world, token=value, htm="GET", htu=HTU, scopes=["write"],
        dpop=maker.proof(token=value, htu=HTU, claims={"nonce": nonce}),
    )  # fmt: skip
    assert (forbidden["action"], forbidden["dpopNonce"]) == ("FORBIDDEN", nonce)
    await world.update(accessToken=value, accessTokenExpiresAt=1)
    expired = await introspect(world, token=value)
    assert (expired["resultCode"], expired["dpopNonce"]) == ("INTROSPECTION_TOKEN_EXPIRED", nonce)


# --- Authlete's Python client ---------------------------------------------------------------


def client_api(base_url: str, **credentials: Any) -> AuthleteApiImpl:
    configuration = AuthleteConfiguration()
    configuration.baseUrl = base_url
    for name, value in credentials.items():
        setattr(configuration, name, value)
    return AuthleteApiImpl(configuration)


def test_step_up_resources_and_nonces_through_authletes_client(base_url: str) -> None:
    operator = client_api(
        base_url, serviceOwnerApiKey=OPERATOR[0], serviceOwnerApiSecret=OPERATOR[1]
    )
    service = Service()
    service.serviceName = "nonces"
    service.dpopNonceRequired = True
    service.dpopNonceDuration = 90
    created = operator.createService(service)
    assert (created.dpopNonceRequired, created.dpopNonceDuration) == (True, 90)
    api_key, secret = created.apiKey, created.apiSecret
    with httpx.Client(base_url=base_url) as http:
        client = http.post(
            "/api/client/create", json={"clientName": "a"}, auth=(str(api_key), secret)
        )
        maker = ProofMaker("EC")
        body = {
            "grantType": "AUTHORIZATION_CODE", "clientId": client.json()["clientId"],
            "subject": "alice", "dpopKeyThumbprint": maker.jkt(), "resources": [RS],
            "acr": "urn:mfa", "authTime": now_s(),
        }  # fmt: skip
        value = http.post("/api/auth/token/create", json=body, auth=(str(api_key), secret)).json()[
            "accessToken"
        ]
    authlete = client_api(base_url, serviceApiKey=str(api_key), serviceApiSecret=secret)

    request = IntrospectionRequest()
    request.token = value
    request.dpop = maker.proof(token=value, htu=HTU)
    request.htm, request.htu = "GET", HTU
    first = authlete.introspection(request)
    assert first.action is IntrospectionAction.UNAUTHORIZED
    assert first.responseContent.startswith('DPoP error="use_dpop_nonce"')
    assert first.dpopNonce

    request.dpop = maker.proof(token=value, htu=HTU, claims={"nonce": first.dpopNonce})
    request.resources = [RS]
    request.acrValues = ["urn:mfa"]
    request.maxAge = 600
    good = authlete.introspection(request)
    assert good.action is IntrospectionAction.OK
    assert good.dpopNonce == first.dpopNonce
    assert good.responseContent == 'Bearer error="invalid_request"'
    assert (good.acr, good.usable, good.sufficient) == ("urn:mfa", True, True)

    request.dpop = maker.proof(token=value, htu=HTU, claims={"nonce": first.dpopNonce})
    request.acrValues = ["urn:hwk"]
    stepped = authlete.introspection(request)
    assert stepped.action is IntrospectionAction.FORBIDDEN
    assert 'error="insufficient_user_authentication"' in stepped.responseContent
    assert (stepped.usable, stepped.sufficient) == (True, False)
