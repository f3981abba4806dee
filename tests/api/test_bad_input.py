"""Bad input gets a precise answer and loses nothing (docs/api.md, "Responses").

Each case checks the HTTP status, the `action` where there is one, a readable message, and
that the stored token row is exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient

from app.tokens import schemas
from tests.api.world import World, ok
from tests.conftest import OPERATOR

pytestmark = pytest.mark.anyio

THUMB = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def token(world: World) -> dict[str, Any]:
    return await world.token(scopes=["read"], properties=[{"key": "k", "value": "v"}])


def envelope(response: Any, status: int, result_code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["resultCode"] == result_code
    assert body["resultMessage"].strip()
    return body


# --- Not a well-formed call: HTTP 400 --------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        (b'{"accessToken": ', "application/json", "not valid JSON"),
        (b"", "application/json", "empty"),
        (b"[1, 2]", "application/json", "object"),
        (b"\xff\xfe", "application/json", "JSON"),
        (b"accessToken=x", "text/plain", "Content-Type"),
        (b'{"scopes": "read"}', "application/json", "scopes"),
        (b'{"accessTokenExpiresAt": "123"}', "application/json", "accessTokenExpiresAt"),
        (b'{"accessTokenExpiresAt": 1.5}', "application/json", "accessTokenExpiresAt"),
        (b'{"accessTokenPersistent": "true"}', "application/json", "accessTokenPersistent"),
        (b'{"properties": {"key": "k"}}', "application/json", "properties"),
        (b'{"properties": [{"key": 1, "value": "v"}]}', "application/json", "properties"),
        (b'{"authorizationDetails": [{"type": "t"}]}', "application/json", "authorizationDetails"),
        (b"properties=x", "application/x-www-form-urlencoded", "JSON bodies only"),
        (b"accessTokenPersistent=yes", "application/x-www-form-urlencoded", "true or false"),
        (b"accessTokenExpiresAt=soon", "application/x-www-form-urlencoded", "integer"),
    ],
    ids=[
        "truncated JSON",
        "empty body",
        "JSON array",
        "not UTF-8",
        "unknown content type",
        "scopes as a string",
        "expiry as a string",
        "expiry as a float",
        "boolean as a string",
        "properties as an object",
        "property key as a number",
        "authorization details as a bare RFC 9396 array",
        "properties in a form",
        "form boolean that is not one",
        "form integer that is not one",
    ],
)
async def test_a_malformed_update_is_http_400_and_changes_nothing(
    world: World,
    token: dict[str, Any],
    stored: Any,
    content: bytes,
    content_type: str,
    message: str,
) -> None:
    before = stored(token["tokenId"])
    # The token is named in the query too, in vain: nothing reaches the rules.
    response = await world.http.post(
        "/auth/token/update",
        content=content,
        headers={"Content-Type": content_type},
        auth=world.auth,
    )
    body = envelope(response, 400, "REQUEST_MALFORMED")
    assert message in body["resultMessage"]
    assert stored(token["tokenId"]) == before


async def test_an_oversized_body_is_413_whether_or_not_its_length_is_announced(
    world: World, token: dict[str, Any], stored: Any
) -> None:
    before = stored(token["tokenId"])
    big = (
        b'{"accessToken": "'
        + token["accessToken"].encode()
        + b'", "scopes": ["'
        + (b"x" * 70_000)
        + b'"]}'
    )
    announced = await world.http.post(
        "/auth/token/update",
        content=big,
        headers={"Content-Type": "application/json"},
        auth=world.auth,
    )
    envelope(announced, 413, "REQUEST_TOO_LARGE")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    streamed = await world.http.post(
        "/auth/token/update",
        content=chunks(),
        headers={"Content-Type": "application/json"},
        auth=world.auth,
    )
    envelope(streamed, 413, "REQUEST_TOO_LARGE")
    assert stored(token["tokenId"]) == before


async def test_out_of_range_numbers_in_paths_and_queries_are_400(world: World) -> None:
    envelope(
        await world.http.get(f"/api/client/get/{2**64}", auth=world.auth), 400, "REQUEST_MALFORMED"
    )
    envelope(
        await world.http.get("/api/auth/token/get/list?start=abc", auth=world.auth),
        400,
        "REQUEST_MALFORMED",
    )
    envelope(
        await world.http.get("/api/client/get/list?start=9&end=2", auth=world.auth),
        400,
        "VALUE_INVALID",
    )
    # The token list answers `end - start <= 0` with the count alone (docs/api.md).
    counted = ok(await world.http.get("/api/auth/token/get/list?start=9&end=2", auth=world.auth))
    assert "accessTokens" not in counted
    assert counted["totalCount"] == 0
    # A v3 serviceId longer than any API key is no route (Python's int() refuses over
    # 4,300 digits: that was a 500).
    for digits in (20, 5_000):
        path = f"/api/{'1' * digits}/client/get/list"
        envelope(await world.http.get(path, auth=world.auth), 404, "ENDPOINT_NOT_FOUND")
    own = await world.http.get(f"/api/{world.api_key}/client/get/list", auth=world.auth)
    assert own.status_code == 200


async def test_unknown_routes_and_methods_answer_in_the_envelope(http: AsyncClient) -> None:
    envelope(await http.get("/no/such/thing"), 404, "ENDPOINT_NOT_FOUND")
    envelope(await http.get("/auth/token/update"), 405, "METHOD_NOT_ALLOWED")


# --- Credentials: HTTP 401 with WWW-Authenticate ---------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer abc",
        "Basic !!!not-base64!!!",
        "Basic " + "bm9jb2xvbg==",  # "nocolon"
        "Basic " + "MTIzOnNlY3JldA==",  # "123:secret": no such service
        "Basic " + "YWJjOnNlY3JldA==",  # "abc:secret": not a number
    ],
    ids=["missing", "wrong scheme", "bad base64", "no colon", "unknown key", "non-numeric key"],
)
async def test_missing_or_wrong_service_credentials_are_401(
    world: World, token: dict[str, Any], stored: Any, authorization: str | None
) -> None:
    before = stored(token["tokenId"])
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await world.http.post(
        "/auth/token/update",
        json={"accessToken": token["accessToken"], "accessTokenPersistent": True},
        headers=headers,
    )
    envelope(response, 401, "CREDENTIALS_INVALID")
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert stored(token["tokenId"]) == before


async def test_a_wrong_secret_for_a_real_service_is_401(
    world: World, token: dict[str, Any]
) -> None:
    response = await world.http.post(
        "/auth/token/update",
        json={"accessToken": token["accessToken"]},
        auth=(str(world.api_key), world.api_secret + "x"),
    )
    envelope(response, 401, "CREDENTIALS_INVALID")


async def test_service_credentials_do_not_open_the_operator_api(world: World) -> None:
    response = await world.http.get("/api/service/get/list", auth=world.auth)
    envelope(response, 401, "CREDENTIALS_INVALID")
    operator_on_service_api = await world.http.get("/api/client/get/list", auth=OPERATOR)
    envelope(operator_on_service_api, 401, "CREDENTIALS_INVALID")


# --- Business outcomes: HTTP 200 with an action ----------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scopes": ["write"], "dpopKeyThumbprint": "abc"}, "thumbprint"),
        ({"scopes": ["write"], "certificateThumbprint": "a" * 64}, "thumbprint"),
        ({"scopes": ["write"], "properties": [{"value": "v"}]}, "no key"),
        (
            {"properties": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]},
            "repeats the key",
        ),
        ({"scopes": [], "authorizationDetails": {"elements": [{"actions": ["x"]}]}}, "no type"),
        (
            {"authorizationDetails": {"elements": [{"type": "t", "otherFields": "{oops"}]}},
            "otherFields",
        ),
        ({"scopes": ["write"], "accessTokenExpiresAt": 2**62}, "year 9999"),
    ],
    ids=[
        "bad dpop thumbprint",
        "hex certificate thumbprint",
        "property without key",
        "duplicate property keys",
        "element without type",
        "otherFields not JSON",
        "expiry beyond 9999",
    ],
)
async def test_an_invalid_value_is_bad_request_and_changes_nothing(
    world: World, token: dict[str, Any], stored: Any, fields: dict[str, Any], message: str
) -> None:
    before = stored(token["tokenId"])
    answer = await world.update(accessToken=token["accessToken"], **fields)
    assert answer["action"] == "BAD_REQUEST"
    assert message in answer["resultMessage"]
    assert stored(token["tokenId"]) == before


@pytest.mark.parametrize(
    ("fields", "action"),
    [
        ({}, "BAD_REQUEST"),
        ({"accessToken": None, "accessTokenHash": "", "tokenId": None}, "BAD_REQUEST"),
        ({"accessTokenHash": "not-a-hash"}, "BAD_REQUEST"),
        ({"accessToken": "no-such-token"}, "NOT_FOUND"),
        ({"accessTokenHash": THUMB}, "NOT_FOUND"),
        ({"tokenId": "no-such-id"}, "NOT_FOUND"),
    ],
)
async def test_a_request_that_names_no_known_token(
    world: World, fields: dict[str, Any], action: str
) -> None:
    answer = await world.update(**fields, scopes=["read"])
    assert answer["action"] == action
    assert answer["resultCode"] in {"TOKEN_REQUEST_INVALID", "TOKEN_NOT_FOUND"}


async def test_unknown_fields_are_ignored_and_authlete_style_defaults_change_nothing(
    world: World, token: dict[str, Any], stored: Any
) -> None:
    before = stored(token["tokenId"])
    # What Authlete's client sends for a request whose caller set only the token.
    answer = await world.update(
        accessToken=token["accessToken"],
        accessTokenExpiresAt=0,
        refreshTokenExpiresAt=0,
        scopes=None,
        properties=None,
        accessTokenExpiresAtUpdatedOnScopeUpdate=False,
        refreshTokenExpiresAtUpdatedOnScopeUpdate=False,
        accessTokenPersistent=False,
        accessTokenHash=None,
        accessTokenValueUpdated=False,
        certificateThumbprint=None,
        dpopKeyThumbprint=None,
        authorizationDetails=None,
        forExternalAttachment=False,
        tokenId=None,
        someFutureAuthleteField={"x": 1},
    )
    assert answer["action"] == "OK"
    after = stored(token["tokenId"])
    assert after is not None
    assert before is not None
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }


async def test_an_unexpected_failure_is_500_and_rolls_the_update_back(
    world: World, token: dict[str, Any], stored: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = stored(token["tokenId"])

    def explode(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("boom after the row was written and flushed")

    # Fails after the service wrote and flushed the row, before the commit.
    monkeypatch.setattr(schemas.TokenUpdateOut, "of", explode)
    response = await world.http.post(
        "/auth/token/update",
        json={"accessToken": token["accessToken"], "scopes": [], "accessTokenPersistent": True},
        auth=world.auth,
    )
    body = envelope(response, 500, "INTERNAL_ERROR")
    assert body["action"] == "INTERNAL_SERVER_ERROR"
    assert "boom" not in body["resultMessage"]
    assert stored(token["tokenId"]) == before


async def test_an_unexpected_failure_is_answered_and_not_raised_to_the_server(
    app: Any, world: World, token: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once answered 500 (and logged without database text, app.http), the error goes no
    further: the server would log its whole traceback again."""

    def explode(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(schemas.TokenUpdateOut, "of", explode)
    transport = ASGITransport(app=app, raise_app_exceptions=True)
    async with AsyncClient(transport=transport, base_url="http://tokenstore") as client:
        response = await client.post(
            "/auth/token/update", json={"accessToken": token["accessToken"]}, auth=world.auth
        )
    envelope(response, 500, "INTERNAL_ERROR")


async def test_token_creation_rejects_bad_input_without_writing(
    world: World, stored: Any, engine: Any
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"clientId": 1}, "BAD_REQUEST"),
        ({"grantType": None}, "BAD_REQUEST"),
        ({"subject": None}, "BAD_REQUEST"),
        ({"dpopKeyThumbprint": "nope"}, "BAD_REQUEST"),
        ({"properties": [{"key": "", "value": "v"}]}, "BAD_REQUEST"),
    ]
    listing_before = ok(await world.http.get("/api/auth/token/get/list", auth=world.auth))
    for fields, action in cases:
        body = {
            "grantType": "PASSWORD",
            "clientId": world.client_id,
            "subject": "alice",
            **fields,
        }
        answer = ok(await world.http.post("/api/auth/token/create", json=body, auth=world.auth))
        assert answer["action"] == action, (fields, answer)
    listing_after = ok(await world.http.get("/api/auth/token/get/list", auth=world.auth))
    assert listing_after["totalCount"] == listing_before["totalCount"] == 0

    wrong_enum = await world.http.post(
        "/api/auth/token/create",
        json={"grantType": "authorization_code", "clientId": world.client_id},
        auth=world.auth,
    )
    envelope(wrong_enum, 400, "REQUEST_MALFORMED")


async def test_a_caller_chosen_value_already_in_use_is_refused(world: World) -> None:
    first = await world.token(accessToken="my-own-value-1")
    assert first["accessToken"] == "my-own-value-1"
    again = ok(
        await world.http.post(
            "/api/auth/token/create",
            json={
                "grantType": "PASSWORD",
                "clientId": world.client_id,
                "subject": "x",
                "accessToken": "my-own-value-1",
            },
            auth=world.auth,
        )
    )
    assert again["action"] == "BAD_REQUEST"
    assert "already in use" in again["resultMessage"]


# --- Values the database could not store: refused at the edge, never a 500 -----------------


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"subject": "x" * 256}, 400, "REQUEST_MALFORMED"),
        ({"subject": "a\u0000b"}, 400, "REQUEST_MALFORMED"),
        ({"subject": "\ud800"}, 400, "REQUEST_MALFORMED"),
        ({"properties": [{"key": "k", "value": "\u0000"}]}, 400, "REQUEST_MALFORMED"),
        ({"clientId": 2**70}, 400, "REQUEST_MALFORMED"),
        ({"clientId": -1}, 400, "REQUEST_MALFORMED"),
        ({"accessTokenDuration": 2**64}, 400, "REQUEST_MALFORMED"),
        ({"scopes": [f"s{i}" for i in range(1001)]}, 400, "REQUEST_MALFORMED"),
        ({"accessTokenDuration": 10**17}, 200, "TOKEN_REQUEST_INVALID"),
    ],
    ids=[
        "subject too long",
        "NUL in subject",
        "lone surrogate",
        "NUL in a property",
        "client id beyond 64 bits",
        "negative client id",
        "duration beyond 64 bits",
        "too many scopes",
        "duration overflowing milliseconds",
    ],
)
async def test_unstorable_values_in_a_creation_are_refused(
    world: World, fields: dict[str, Any], status: int, code: str
) -> None:
    body = {"grantType": "PASSWORD", "clientId": world.client_id, "subject": "s", **fields}
    # As a client would send them: JSON escapes (\u0000, \ud800) in an ASCII body.
    response = await world.http.post(
        "/api/auth/token/create", content=json.dumps(body), headers=JSON, auth=world.auth
    )
    envelope(response, status, code)
    listing = ok(await world.http.get("/api/auth/token/get/list", auth=world.auth))
    assert listing["totalCount"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/auth/token/get/list?subject=%00"),
        ("GET", "/api/auth/token/get/list?clientIdentifier=%ED%A0%80"),
        ("GET", "/api/auth/token/get/list?subject=%FF"),
        ("DELETE", "/api/auth/token/delete/a%00b"),
    ],
    ids=["NUL in query", "surrogate in query", "invalid UTF-8", "NUL in path"],
)
async def test_unstorable_text_in_paths_and_queries_is_400(
    world: World, method: str, path: str
) -> None:
    response = await world.http.request(method, path, auth=world.auth)
    envelope(response, 400, "REQUEST_MALFORMED")


async def test_unstorable_values_in_an_update_change_nothing(
    world: World, token: dict[str, Any], stored: Any
) -> None:
    before = stored(token["tokenId"])
    for fields in (
        {"tokenId": "a\u0000"},
        {"scopes": ["\u0000"]},
        {"authorizationDetails": {"elements": [{"type": "\ud800"}]}},
        {"accessTokenExpiresAt": 2**64},
    ):
        response = await world.http.post(
            "/auth/token/update",
            content=json.dumps({"accessToken": token["accessToken"], **fields}),
            headers=JSON,
            auth=world.auth,
        )
        envelope(response, 400, "REQUEST_MALFORMED")
    assert stored(token["tokenId"]) == before


async def test_unstorable_service_durations_are_refused(http: AsyncClient) -> None:
    response = await http.post(
        "/api/service/create", json={"accessTokenDuration": 10**17}, auth=OPERATOR
    )
    envelope(response, 400, "VALUE_INVALID")


async def test_a_refused_form_never_echoes_the_values_it_carried(world: World) -> None:
    secret_value = "sEcR3t"  # short: pydantic abbreviates long values it echoes
    response = await world.http.post(
        "/auth/token/update",
        content=f"accessToken={secret_value}&tokenId=%00&accessTokenExpiresAt=" + "9" * 30,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=world.auth,
    )
    body = envelope(response, 400, "REQUEST_MALFORMED")
    assert secret_value not in body["resultMessage"]
    assert "9" * 30 not in body["resultMessage"]


# --- Inputs that once answered 500 -----------------------------------------------------------


def nested_other_fields(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "other_fields",
    [nested_other_fields(1_000), nested_other_fields(5_000), '{"a": NaN}', '{"a": -Infinity}'],
    ids=["1,000 deep", "5,000 deep", "NaN", "-Infinity"],
)
async def test_deep_or_non_finite_other_fields_are_bad_request_on_create_and_update(
    world: World, token: dict[str, Any], stored: Any, other_fields: str
) -> None:
    details = {"elements": [{"type": "t", "otherFields": other_fields}]}
    before = stored(token["tokenId"])
    answer = await world.update(accessToken=token["accessToken"], authorizationDetails=details)
    assert answer["action"] == "BAD_REQUEST"
    assert "otherFields" in answer["resultMessage"]
    assert stored(token["tokenId"]) == before
    created = await world.http.post(
        "/api/auth/token/create",
        json={"grantType": "PASSWORD", "clientId": world.client_id, "subject": "s",
              "authorizationDetails": details},
        auth=world.auth,
    )  # fmt: skip
    assert ok(created)["action"] == "BAD_REQUEST"


async def test_other_fields_nested_within_the_bound_are_kept(
    world: World, token: dict[str, Any]
) -> None:
    fine = nested_other_fields(31)
    details = {"elements": [{"type": "t", "otherFields": fine}]}
    answer = await world.update(accessToken=token["accessToken"], authorizationDetails=details)
    assert answer["action"] == "OK"


@pytest.mark.parametrize(
    "content",
    [
        b'{"accessToken": "x", "ignored": NaN}',
        b'{"accessToken": "x", "ignored": [Infinity]}',
        b'{"accessToken": "x", "ignored": -Infinity}',
        b'{"accessToken": "x", "ignored": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        b'{"accessToken": "x", "ignored": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
    ],
    ids=["NaN", "Infinity in a list", "-Infinity", "deep arrays", "deep objects"],
)
async def test_non_finite_numbers_and_deep_nesting_in_any_body_are_400(
    world: World, token: dict[str, Any], stored: Any, content: bytes
) -> None:
    before = stored(token["tokenId"])
    for path in ("/auth/token/update", "/api/auth/introspection", "/api/auth/token/create"):
        response = await world.http.post(path, content=content, headers=JSON, auth=world.auth)
        body = envelope(response, 400, "REQUEST_MALFORMED")
        assert "JSON" in body["resultMessage"]
    service = await world.http.post(
        "/api/service/create", content=content, headers=JSON, auth=OPERATOR
    )
    envelope(service, 400, "REQUEST_MALFORMED")
    assert stored(token["tokenId"]) == before


async def test_nan_inside_a_string_is_only_text(world: World, token: dict[str, Any]) -> None:
    answer = await world.update(
        accessToken=token["accessToken"], properties=[{"key": "NaN", "value": "Infinity"}]
    )
    assert answer["action"] == "OK"


@pytest.mark.parametrize(
    "authorization",
    [b"Basic \xff\xff", b"Basic \xc3\xa9t\xc3\xa9", b"Basic " + b"/w==", b"Bearer \xff\xfe"],
    ids=["Latin-1 bytes", "UTF-8 bytes", "base64 of 0xff", "Bearer with Latin-1 bytes"],
)
async def test_credentials_outside_ascii_or_utf8_are_401(
    world: World, token: dict[str, Any], authorization: bytes
) -> None:
    headers = {b"Authorization": authorization, b"Content-Type": b"application/json"}
    update = await world.http.post(
        "/auth/token/update", content=json.dumps({"accessToken": token["accessToken"]}),
        headers=headers,
    )  # fmt: skip
    envelope(update, 401, "CREDENTIALS_INVALID")
    envelope(
        await world.http.get("/api/service/get/list", headers=headers), 401, "CREDENTIALS_INVALID"
    )
