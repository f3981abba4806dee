"""Introspection as a resource server uses it: Authlete's form and RFC 7662's, with tokens
bound to real EC and RSA keys and real self-signed certificates. Proofs are made with
`cryptography` (tests/proofs.py), not with the project's JOSE library."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import Engine, func, insert, select

from app.config import Settings
from app.main import create_app
from app.tokens.models import DpopProofRow, TokenRow
from tests.api.world import World, ok
from tests.proofs import ProofMaker, self_signed_certificate

pytestmark = pytest.mark.anyio

HTU = "https://rs.example.com/accounts"


async def introspect(world: World, **fields: Any) -> dict[str, Any]:
    return ok(await world.http.post("/api/auth/introspection", json=fields, auth=world.auth))


async def standard(world: World, parameters: str) -> dict[str, Any]:
    return ok(
        await world.http.post(
            "/api/auth/introspection/standard", json={"parameters": parameters}, auth=world.auth
        )
    )


async def test_a_bearer_token_is_ok_and_hidden_properties_stay_hidden(world: World) -> None:
    token = await world.token(
        scopes=["read", "write"],
        properties=[
            {"key": "shown", "value": "1"},
            {"key": "secret", "value": "2", "hidden": True},
        ],
    )
    answer = await introspect(world, token=token["accessToken"], scopes=["read"], subject="alice")
    assert answer["action"] == "OK"
    assert (answer["existent"], answer["usable"], answer["sufficient"]) == (True, True, True)
    assert answer["refreshable"] is True
    assert answer["clientId"] == world.client_id
    assert answer["subject"] == "alice"
    assert answer["scopes"] == ["read", "write"]
    assert answer["properties"] == [{"key": "shown", "value": "1", "hidden": False}]
    assert answer["expiresAt"] == token["expiresAt"]
    assert answer["grantType"] == "AUTHORIZATION_CODE"


@pytest.mark.parametrize(
    ("fields", "action", "content"),
    [
        ({}, "BAD_REQUEST", 'Bearer error="invalid_request"'),
        ({"token": "no-such-token"}, "UNAUTHORIZED", 'Bearer error="invalid_token"'),
        ({"scopes": ["read", "admin"]}, "FORBIDDEN", 'Bearer error="insufficient_scope"'),
        ({"subject": "mallory"}, "FORBIDDEN", 'Bearer error="insufficient_scope"'),
    ],
    ids=["no token", "unknown token", "missing scope", "other subject"],
)
async def test_refusals_carry_the_www_authenticate_value_for_the_resource_server(
    world: World, fields: dict[str, Any], action: str, content: str
) -> None:
    token = await world.token(scopes=["read"])
    body = {"token": token["accessToken"], **fields} if fields else {}
    answer = await introspect(world, **body)
    assert answer["action"] == action
    assert answer["responseContent"].startswith(content)
    if action == "FORBIDDEN" and "scopes" in fields:
        assert 'scope="read admin"' in answer["responseContent"]


async def test_an_expired_access_token_is_unauthorized_though_its_refresh_token_lives(
    world: World,
) -> None:
    token = await world.token()
    await world.update(accessToken=token["accessToken"], accessTokenExpiresAt=1)
    answer = await introspect(world, token=token["accessToken"])
    assert answer["action"] == "UNAUTHORIZED"
    assert "expired" in answer["responseContent"]
    assert (answer["existent"], answer["usable"], answer["refreshable"]) == (True, False, True)


async def test_another_services_token_does_not_exist_for_this_service(http: AsyncClient) -> None:
    owner, stranger = await World.create(http), await World.create(http)
    token = await owner.token()
    answer = await introspect(stranger, token=token["accessToken"])
    assert (answer["action"], answer["existent"]) == ("UNAUTHORIZED", False)


@pytest.mark.parametrize("kind", ["EC", "RSA"])
async def test_a_dpop_bound_token_needs_a_valid_proof_by_its_key(world: World, kind: str) -> None:
    maker = ProofMaker(kind)
    token = await world.token(dpopKeyThumbprint=maker.jkt())
    assert token["tokenType"] == "DPoP"
    value = token["accessToken"]

    ok_answer = await introspect(
        world, token=value, dpop=maker.proof(token=value, htu=HTU), htm="GET", htu=HTU
    )
    assert ok_answer["action"] == "OK", ok_answer

    missing = await introspect(world, token=value, htm="GET", htu=HTU)
    assert missing["action"] == "UNAUTHORIZED"
    assert missing["responseContent"].startswith('DPoP error="invalid_token"')
    assert 'algs="ES256' in missing["responseContent"]


@pytest.mark.parametrize(
    ("proof_args", "code"),
    [
        ({"htm": "POST"}, "INTROSPECTION_DPOP_METHODMISMATCH"),
        ({"htu": "https://rs.example.com/other"}, "INTROSPECTION_DPOP_URIMISMATCH"),
        ({"claims": {"ath": "A" * 43}}, "INTROSPECTION_DPOP_ACCESSTOKENHASHMISMATCH"),
        ({"claims": {"iat": int(time.time()) - 3600}}, "INTROSPECTION_DPOP_STALEPROOF"),
        ({"header": {"typ": "JWT"}}, "INTROSPECTION_DPOP_WRONGTYPE"),
        ({"signature": b"\x00" * 64}, "INTROSPECTION_DPOP_BADSIGNATURE"),
    ],
    ids=["htm", "htu", "ath", "iat", "typ", "signature"],
)
async def test_a_proof_broken_in_one_check_is_refused_with_invalid_dpop_proof(
    world: World, proof_args: dict[str, Any], code: str
) -> None:
    maker = ProofMaker("EC")
    token = await world.token(dpopKeyThumbprint=maker.jkt())
    value = token["accessToken"]
    proof = maker.proof(token=value, **{"htu": HTU, **proof_args})
    answer = await introspect(world, token=value, dpop=proof, htm="GET", htu=HTU)
    assert (answer["action"], answer["resultCode"]) == ("UNAUTHORIZED", code)
    assert answer["responseContent"].startswith('DPoP error="invalid_dpop_proof"')


async def test_a_proof_by_another_key_is_an_invalid_key_binding(world: World) -> None:
    bound, other = ProofMaker("EC"), ProofMaker("EC")
    token = await world.token(dpopKeyThumbprint=bound.jkt())
    value = token["accessToken"]
    answer = await introspect(
        world, token=value, dpop=other.proof(token=value, htu=HTU), htm="GET", htu=HTU
    )
    assert answer["resultCode"] == "INTROSPECTION_DPOP_KEYMISMATCH"
    assert answer["responseContent"].startswith('DPoP error="invalid_token"')


async def test_a_replayed_proof_is_refused(world: World) -> None:
    maker = ProofMaker("EC")
    token = await world.token(dpopKeyThumbprint=maker.jkt())
    value = token["accessToken"]
    proof = maker.proof(token=value, htu=HTU)
    first = await introspect(world, token=value, dpop=proof, htm="GET", htu=HTU)
    again = await introspect(world, token=value, dpop=proof, htm="GET", htu=HTU)
    assert first["action"] == "OK"
    assert (again["action"], again["resultCode"]) == (
        "UNAUTHORIZED",
        "INTROSPECTION_DPOP_REPLAYEDPROOF",
    )


async def test_a_proof_recorded_before_a_forbidden_answer_still_counts_as_used(
    world: World,
) -> None:
    maker = ProofMaker("EC")
    token = await world.token(dpopKeyThumbprint=maker.jkt(), scopes=["read"])
    value = token["accessToken"]
    proof = maker.proof(token=value, htu=HTU)
    forbidden = await introspect(
        world, token=value, dpop=proof, htm="GET", htu=HTU, scopes=["admin"]
    )
    assert forbidden["action"] == "FORBIDDEN"
    replay = await introspect(world, token=value, dpop=proof, htm="GET", htu=HTU)
    assert replay["resultCode"] == "INTROSPECTION_DPOP_REPLAYEDPROOF"


@pytest.fixture
async def second_process(settings: Settings) -> AsyncIterator[FastAPI]:
    """Another server instance on the same database, with its own engine and pool."""
    app = create_app(settings)
    yield app
    await app.state.database.dispose()


async def test_the_replay_cache_is_shared_by_every_process_on_the_database(
    world: World, second_process: FastAPI
) -> None:
    maker = ProofMaker("EC")
    token = await world.token(dpopKeyThumbprint=maker.jkt())
    value = token["accessToken"]
    proof = maker.proof(token=value, htu=HTU)
    assert (await introspect(world, token=value, dpop=proof, htm="GET", htu=HTU))["action"] == "OK"
    transport = ASGITransport(app=second_process)
    async with AsyncClient(transport=transport, base_url="http://second") as other:
        replay = ok(
            await other.post(
                "/api/auth/introspection",
                json={"token": value, "dpop": proof, "htm": "GET", "htu": HTU},
                auth=world.auth,
            )
        )
    assert replay["resultCode"] == "INTROSPECTION_DPOP_REPLAYEDPROOF"


async def test_a_certificate_bound_token_needs_its_certificate(world: World) -> None:
    pem, thumbprint = self_signed_certificate()
    other_pem, _ = self_signed_certificate("someone-else")
    token = await world.token(certificateThumbprint=thumbprint)
    value = token["accessToken"]
    good = await introspect(world, token=value, clientCertificate=pem)
    assert (good["action"], good["certificateThumbprint"]) == ("OK", thumbprint)
    for presented in (None, other_pem, "not a certificate"):
        refused = await introspect(world, token=value, clientCertificate=presented)
        assert refused["action"] == "UNAUTHORIZED"
        assert refused["responseContent"].startswith('Bearer error="invalid_token"')


# --- RFC 7662 ------------------------------------------------------------------------------


async def test_standard_introspection_reports_an_active_token_with_its_confirmation(
    world: World,
) -> None:
    maker = ProofMaker("EC")
    token = await world.token(scopes=["read", "write"], dpopKeyThumbprint=maker.jkt())
    answer = await standard(world, f"token={token['accessToken']}&token_type_hint=access_token")
    assert answer["action"] == "OK"
    content = json.loads(answer["responseContent"])
    assert content == {
        "active": True,
        "scope": "read write",
        "client_id": str(world.client_id),
        "sub": "alice",
        "iat": content["iat"],
        "exp": token["expiresAt"] // 1000,
        "token_type": "DPoP",
        "cnf": {"jkt": maker.jkt()},
    }


async def test_standard_introspection_of_a_certificate_bound_and_a_refresh_token(
    world: World,
) -> None:
    _, thumbprint = self_signed_certificate()
    token = await world.token(certificateThumbprint=thumbprint)
    access = json.loads((await standard(world, f"token={token['accessToken']}"))["responseContent"])
    assert access["cnf"] == {"x5t#S256": thumbprint}
    refresh = json.loads(
        (await standard(world, f"token={token['refreshToken']}&token_type_hint=refresh_token"))[
            "responseContent"
        ]
    )
    assert refresh["active"] is True
    assert "token_type" not in refresh
    # The hint is only a hint: the refresh token is found without it too.
    unhinted = await standard(world, f"token={token['refreshToken']}")
    assert json.loads(unhinted["responseContent"])["active"] is True


@pytest.mark.parametrize("which", ["unknown", "expired", "other service"])
async def test_standard_introspection_says_only_inactive(
    http: AsyncClient, world: World, which: str
) -> None:
    token = await world.token(grantType="CLIENT_CREDENTIALS", subject=None)
    asker = world
    if which == "expired":
        await world.update(accessToken=token["accessToken"], accessTokenExpiresAt=1)
    elif which == "other service":
        asker = await World.create(http)
    value = "nope" if which == "unknown" else token["accessToken"]
    answer = await standard(asker, f"token={value}")
    assert (answer["action"], json.loads(answer["responseContent"])) == ("OK", {"active": False})


@pytest.mark.parametrize(
    "parameters", ["", "token=", "token_type_hint=access_token", "token=a&token=b"]
)
async def test_standard_introspection_without_one_token_is_a_bad_request(
    world: World, parameters: str
) -> None:
    answer = await standard(world, parameters)
    assert answer["action"] == "BAD_REQUEST"
    assert json.loads(answer["responseContent"])["error"] == "invalid_request"


async def test_recording_proofs_removes_expired_ones_so_the_replay_table_stays_bounded(
    world: World, engine: Engine
) -> None:
    """No operator action: each proof recorded removes a few expired records (the purge job
    is off by default), on either database's path (the driver's on PostgreSQL)."""
    now_ms = int(time.time() * 1000)
    expired = [{"key": f"expired-{uuid.uuid4().hex}", "expires_at": 1_000 + n} for n in range(12)]
    with engine.begin() as connection:
        connection.execute(insert(DpopProofRow), expired)
    maker = ProofMaker("EC")
    token = await world.token(dpopKeyThumbprint=maker.jkt())
    value = token["accessToken"]
    for _ in range(3):
        answer = await introspect(
            world, token=value, dpop=maker.proof(token=value, htu=HTU), htm="GET", htu=HTU
        )
        assert answer["action"] == "OK"
    with engine.connect() as connection:
        left = connection.execute(
            select(func.count()).where(DpopProofRow.expires_at < now_ms)
        ).scalar_one()
        fresh = connection.execute(
            select(func.count()).where(DpopProofRow.expires_at >= now_ms)
        ).scalar_one()
    assert left == 0  # 3 proofs remove up to 12 expired records (other tests' ones too)
    assert fresh >= 3


async def test_resources_acr_and_auth_time_given_at_creation_are_introspected(
    world: World, engine: Engine
) -> None:
    token = await world.token(
        resources=["https://api.example.com/", "urn:example:ledger"], acr="urn:mace:mfa",
        authTime=1_700_000_000, sessionId="session-1",
    )  # fmt: skip
    # An update keeps them (the rules change other fields).
    assert (await world.update(accessToken=token["accessToken"], scopes=[]))["action"] == "OK"
    answer = await introspect(world, token=token["accessToken"])
    assert answer["action"] == "OK"
    assert answer["resources"] == ["https://api.example.com/", "urn:example:ledger"]
    assert answer["accessTokenResources"] == answer["resources"]
    assert (answer["acr"], answer["authTime"]) == ("urn:mace:mfa", 1_700_000_000)
    with engine.connect() as connection:
        stored = connection.execute(
            select(TokenRow.attributes).where(TokenRow.token_id == token["tokenId"])
        ).scalar_one()
    assert stored == {
        "resources": ["https://api.example.com/", "urn:example:ledger"],
        "acr": "urn:mace:mfa", "auth_time": 1_700_000_000, "session_id": "session-1",
    }  # fmt: skip


async def test_a_token_without_them_introspects_empty_and_stores_nothing_extra(
    world: World, engine: Engine
) -> None:
    token = await world.token()
    answer = await introspect(world, token=token["accessToken"])
    assert (answer["resources"], answer.get("acr"), answer["authTime"]) == ([], None, 0)
    with engine.connect() as connection:
        stored = connection.execute(
            select(TokenRow.attributes).where(TokenRow.token_id == token["tokenId"])
        ).scalar_one()
    assert stored == {}


@pytest.mark.parametrize(
    "fields",
    [{"resources": ["not a uri"]}, {"authTime": -1}, {"acr": 5}, {"resources": "https://x/"}],
)
async def test_malformed_resources_acr_or_auth_time_are_400(
    world: World, fields: dict[str, Any]
) -> None:
    body = {"grantType": "PASSWORD", "clientId": world.client_id, "subject": "s", **fields}
    response = await world.http.post("/api/auth/token/create", json=body, auth=world.auth)
    assert response.status_code == 400
