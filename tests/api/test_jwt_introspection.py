"""RFC 7662 answers with the token's properties, RFC 9701 JWT answers signed with the
service's key, and the service's published keys: checked with joserfc against the keys the
jwks endpoint publishes, never against the keys the test configured."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from authlete.dto.service import Service
from authlete.dto.standard_introspection_action import StandardIntrospectionAction
from authlete.dto.standard_introspection_request import StandardIntrospectionRequest
from authlete.types.jws_alg import JWSAlg
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_native
from httpx import AsyncClient
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, KeySet, OctKey, OKPKey, RSAKey

from tests.api.test_authlete_client import api, new_token, service_with_client
from tests.api.world import World, ok
from tests.conftest import OPERATOR

pytestmark = pytest.mark.anyio

RS = "https://rs.example.com/api"
JWT_TYPE = "application/token-introspection+jwt"
PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def private_set(*keys: Any) -> str:
    return json.dumps({"keys": [key.as_dict(private=True) for key in keys]})


def small_rsa() -> dict[str, str]:
    """A 1024-bit RSA private JWK (joserfc refuses to make one without a warning)."""
    numbers = rsa_native.generate_private_key(65537, 1024).private_numbers()  # noqa: S505

    def b64(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    public = numbers.public_numbers
    members = {"n": public.n, "e": public.e, "d": numbers.d, "p": numbers.p, "q": numbers.q,
               "dp": numbers.dmp1, "dq": numbers.dmq1, "qi": numbers.iqmp}  # fmt: skip
    return {"kty": "RSA", **{name: b64(value) for name, value in members.items()}}


def rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"}, private=True)


def ec(kid: str, curve: str = "P-256") -> ECKey:
    return ECKey.generate_key(curve, parameters={"kid": kid}, private=True)


async def configure(world: World, **fields: Any) -> dict[str, Any]:
    response = await world.http.post(
        f"/api/service/update/{world.api_key}", json=fields, auth=OPERATOR
    )
    return ok(response)


async def standard(world: World, **fields: Any) -> dict[str, Any]:
    answer = ok(
        await world.http.post("/api/auth/introspection/standard", json=fields, auth=world.auth)
    )
    assert set(answer) >= {"action", "resultCode", "resultMessage", "responseContent"}
    return answer


async def published(world: World, path: str = "/api/service/jwks/get") -> KeySet:
    response = await world.http.get(path, auth=world.auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert_public(document["keys"])
    return KeySet.import_key_set(document)


def assert_public(keys: list[dict[str, Any]]) -> None:
    assert keys
    for key in keys:
        assert not set(PRIVATE) & set(key), key


def verified(token: str, keys: KeySet) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JWT's header and claims, its signature checked with the published keys."""
    compact = jws.extract_compact(token.encode())
    header = compact.headers()
    key = keys.get_by_kid(header["kid"])
    checked = jws.deserialize_compact(token, key, algorithms=[header["alg"]])
    return dict(checked.headers()), json.loads(checked.payload)


# --- Properties in the RFC 7662 answer -------------------------------------------------------


async def test_properties_are_members_of_the_answer_and_hidden_ones_only_when_asked(
    world: World,
) -> None:
    token = await world.token(
        properties=[
            {"key": "shown", "value": "1"},
            {"key": "secret", "value": "2", "hidden": True},
            {"key": "sub", "value": "mallory"},  # never replaces a standard member
            {"key": "active", "value": "no", "hidden": True},
        ]
    )
    parameters = f"token={token['accessToken']}"
    plain = json.loads((await standard(world, parameters=parameters))["responseContent"])
    assert plain["active"] is True
    assert plain["shown"] == "1"
    assert "secret" not in plain
    assert plain["sub"] == "alice"
    hidden = await standard(world, parameters=parameters, withHiddenProperties=True)
    content = json.loads(hidden["responseContent"])
    assert (content["shown"], content["secret"], content["sub"]) == ("1", "2", "alice")
    assert content["active"] is True
    refresh = await standard(
        world, parameters=f"token={token['refreshToken']}", withHiddenProperties=False
    )
    assert json.loads(refresh["responseContent"])["shown"] == "1"


async def test_a_token_for_other_resource_servers_is_inactive_for_this_one(
    world: World,
) -> None:
    token = await world.token(resources=[RS])
    parameters = f"token={token['accessToken']}"
    mine = json.loads((await standard(world, parameters=parameters, rsUri=RS))["responseContent"])
    assert mine["active"] is True
    assert mine["aud"] == [RS]
    other = await standard(world, parameters=parameters, rsUri="https://other.example.com/")
    assert json.loads(other["responseContent"]) == {"active": False}
    # A token without audiences is for every resource server.
    free = await world.token()
    anywhere = await standard(world, parameters=f"token={free['accessToken']}", rsUri=RS)
    assert json.loads(anywhere["responseContent"])["active"] is True


# --- The JWT of RFC 9701 ----------------------------------------------------------------------


async def test_a_jwt_answer_is_signed_with_the_key_the_service_names_and_publishes(
    world: World,
) -> None:
    signer, other = rsa("rsa-1"), ec("ec-1")
    service = await configure(
        world, jwks=private_set(other, signer), introspectionSignatureKeyId="rsa-1"
    )
    assert service["introspectionSignatureKeyId"] == "rsa-1"
    token = await world.token(properties=[{"key": "tier", "value": "gold"}])
    before = int(time.time())
    answer = await standard(
        world, parameters=f"token={token['accessToken']}", rsUri=RS,
        httpAcceptHeader=f"{JWT_TYPE}, application/json;q=0.5",
    )  # fmt: skip
    assert (answer["action"], answer["resultCode"]) == ("JWT", "STANDARD_INTROSPECTION_JWT")
    keys = await published(world)
    assert {key.kid for key in keys} == {"rsa-1", "ec-1"}
    header, claims = verified(answer["responseContent"], keys)
    assert header == {"typ": "token-introspection+jwt", "alg": "RS256", "kid": "rsa-1"}
    assert claims["iss"] == f"urn:tokenstore:service:{world.api_key}"
    assert claims["aud"] == RS
    assert before - 1 <= claims["iat"] <= int(time.time()) + 1
    assert "sub" not in claims  # RFC 9701 section 8.1
    assert "exp" not in claims
    inner = claims["token_introspection"]
    assert (inner["active"], inner["sub"], inner["scope"]) == (True, "alice", "read")
    assert inner["client_id"] == str(world.client_id)
    assert inner["tier"] == "gold"
    # The same JWT verifies with the keys of the v3 path.
    v3_keys = await published(world, f"/api/{world.api_key}/service/jwks/get")
    verified(answer["responseContent"], v3_keys)
    # Another RSA key does not verify it.
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(answer["responseContent"], rsa("rsa-1"), algorithms=["RS256"])


async def test_the_algorithm_asked_picks_the_key_and_an_inactive_token_is_signed_too(
    world: World,
) -> None:
    await configure(world, jwks=private_set(rsa("r"), ec("e384", "P-384"), ec("e256")))
    answer = await standard(
        world, parameters="token=unknown", rsUri=RS, httpAcceptHeader=JWT_TYPE,
        introspectionSignAlg="ES256",
    )  # fmt: skip
    assert answer["action"] == "JWT"
    header, claims = verified(answer["responseContent"], await published(world))
    assert (header["alg"], header["kid"]) == ("ES256", "e256")
    assert claims["token_introspection"] == {"active": False}
    # No algorithm asked: the first signing key, with the algorithm its type implies.
    default = await standard(world, parameters="token=unknown", rsUri=RS, httpAcceptHeader=JWT_TYPE)
    header, _ = verified(default["responseContent"], await published(world))
    assert (header["alg"], header["kid"]) == ("RS256", "r")
    # The named key cannot sign with the algorithm asked: the service's fault.
    await configure(world, introspectionSignatureKeyId="r")
    mismatch = await standard(
        world, parameters="token=unknown", rsUri=RS, httpAcceptHeader=JWT_TYPE,
        introspectionSignAlg="ES384",
    )  # fmt: skip
    assert mismatch["action"] == "INTERNAL_SERVER_ERROR"
    assert json.loads(mismatch["responseContent"])["error"] == "server_error"


async def test_a_jwt_asked_of_a_service_without_keys_is_a_server_error(world: World) -> None:
    token = await world.token()
    answer = await standard(
        world, parameters=f"token={token['accessToken']}", rsUri=RS, httpAcceptHeader=JWT_TYPE
    )
    assert answer["action"] == "INTERNAL_SERVER_ERROR"
    assert answer["resultCode"] == "STANDARD_INTROSPECTION_NO_SIGNING_KEY"
    content = json.loads(answer["responseContent"])
    assert content["error"] == "server_error"
    assert "jwks" in content["error_description"]
    # A wildcard or JSON Accept header, or a q of 0, asks for JSON: no key needed.
    for accept in ("*/*", "application/json", f"{JWT_TYPE};q=0", None):
        plain = await standard(
            world, parameters=f"token={token['accessToken']}", httpAcceptHeader=accept
        )
        assert plain["action"] == "OK", accept


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"introspectionEncryptionAlg": "RSA_OAEP_256"}, "Encrypted"),
        ({"introspectionEncryptionAlg": "RSA-OAEP", "introspectionEncryptionEnc": "A128GCM"},
         "Encrypted"),
        ({"rsUri": None}, "rsUri"),
        ({"introspectionSignAlg": "HS256", "sharedKeyForSign": "s" * 32}, "HS256"),
        ({"introspectionSignAlg": "NONE"}, "NONE"),
    ],
)  # fmt: skip
async def test_what_tokenstore_does_not_sign_is_refused_before_any_read(
    world: World, fields: dict[str, Any], says: str
) -> None:
    await configure(world, jwks=private_set(rsa("r")))
    token = await world.token()
    body = {"parameters": f"token={token['accessToken']}", "rsUri": RS,
            "httpAcceptHeader": JWT_TYPE, **fields}  # fmt: skip
    answer = await standard(world, **body)
    assert answer["action"] == "BAD_REQUEST"
    assert answer["resultCode"] == "STANDARD_INTROSPECTION_JWT_UNSUPPORTED"
    content = json.loads(answer["responseContent"])
    assert content["error"] == "invalid_request"
    assert says in content["error_description"]


# --- The keys: checked on write, never shown back -------------------------------------------


async def test_no_answer_ever_shows_private_key_material(world: World, http: AsyncClient) -> None:
    jwks = private_set(rsa("r"), ec("e"), OKPKey.generate_key("Ed25519", {"kid": "o"}, True))
    updated = await configure(world, jwks=jwks, introspectionSignatureKeyId="o")
    created = ok(
        await http.post(
            "/api/service/create", json={"serviceName": "keys", "jwks": jwks}, auth=OPERATOR
        )
    )
    own = ok(await http.get(f"/api/{world.api_key}/service/get", auth=world.auth))
    got = ok(await http.get(f"/api/service/get/{world.api_key}", auth=OPERATOR))
    listed = ok(await http.get("/api/service/get/list?start=0&end=1000", auth=OPERATOR))
    mine = [s for s in listed["services"] if s["apiKey"] in (world.api_key, created["apiKey"])]
    assert len(mine) == 2
    for service in (updated, created, own, got, *mine):
        keys = json.loads(service["jwks"])["keys"]
        assert_public(keys)
        assert {key["kid"] for key in keys} == {"r", "e", "o"}
    for query in ("", "?includePrivateKeys=true", "?includePrivateKeys=true&pretty=true"):
        for path in ("/api/service/jwks/get", f"/api/{world.api_key}/service/jwks/get"):
            response = await http.get(path + query, auth=world.auth)
            assert response.status_code == 200
            assert_public(response.json()["keys"])
            for member in PRIVATE:
                assert f'"{member}"' not in response.text
    pretty = await http.get("/api/service/jwks/get?pretty=true", auth=world.auth)
    assert "\n" in pretty.text
    # The published set verifies what the keys sign: the public parts are the right ones.
    assert {key.kid for key in await published(world)} == {"r", "e", "o"}


async def test_a_service_without_keys_publishes_none(world: World) -> None:
    for path in ("/api/service/jwks/get", f"/api/{world.api_key}/service/jwks/get"):
        response = await world.http.get(path, auth=world.auth)
        assert (response.status_code, response.content) == (204, b"")
    assert "jwks" not in ok(await world.http.get(f"/api/{world.api_key}/service/get",
                                                   auth=world.auth))  # fmt: skip
    operator = await world.http.get("/api/service/jwks/get", auth=OPERATOR)
    assert operator.status_code == 401


@pytest.mark.parametrize(
    ("jwks", "key_id"),
    [
        ("not json", None),
        ("[]", None),
        ('{"keys": {}}', None),
        ('{"keys": [1]}', None),
        ('{"keys": []}', None),  # no private key that signs
        ('{"keys": [{"kty": "EC", "crv": "P-256", "x": "abc", "y": "def"}]}', None),
        ("public-only", None),
        ("symmetric", None),
        ("small-rsa", None),
        ("encryption-only", None),
        ("duplicate-kid", None),
        ("good", "missing"),
        ("good", "public"),  # the id of a key that cannot sign
        (None, "anything"),  # an id without a set
    ],
)
async def test_a_jwk_set_that_cannot_sign_is_refused(
    world: World, jwks: str | None, key_id: str | None
) -> None:
    public = ec("public").as_dict(private=False)
    made = {
        "public-only": json.dumps({"keys": [public]}),
        "symmetric": json.dumps({"keys": [OctKey.generate_key(256, private=True).as_dict()]}),
        "small-rsa": json.dumps({"keys": [small_rsa()]}),
        "encryption-only": json.dumps({"keys": [{**ec("x").as_dict(private=True), "use": "enc"}]}),
        "duplicate-kid": private_set(ec("same"), rsa("same")),
        "good": json.dumps({"keys": [ec("e").as_dict(private=True), public]}),
    }
    body: dict[str, Any] = {"jwks": made.get(jwks, jwks) if jwks else jwks}
    if key_id is not None:
        body["introspectionSignatureKeyId"] = key_id
    for path, auth in (
        (f"/api/service/update/{world.api_key}", OPERATOR),
        (f"/api/{world.api_key}/service/update", world.auth),
        ("/api/service/create", OPERATOR),
    ):
        response = await world.http.post(path, json=body, auth=auth)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["resultCode"] == "VALUE_INVALID"
        assert "d" not in response.json()["resultMessage"].split('"')  # no key member quoted
    # Nothing was stored.
    assert "jwks" not in ok(await world.http.get(f"/api/service/get/{world.api_key}",
                                                   auth=OPERATOR))  # fmt: skip


async def test_the_key_set_and_its_id_are_kept_changed_and_removed(world: World) -> None:
    first = await configure(world, jwks=private_set(rsa("a"), ec("b")),
                            introspectionSignatureKeyId="b")  # fmt: skip
    renamed = await configure(world, serviceName="still keyed")
    assert renamed["jwks"] == first["jwks"]
    assert renamed["introspectionSignatureKeyId"] == "b"
    # A new set without the key named: refused until the id changes with it.
    refused = await world.http.post(
        f"/api/service/update/{world.api_key}", json={"jwks": private_set(rsa("c"))},
        auth=OPERATOR,
    )  # fmt: skip
    assert refused.status_code == 400
    moved = await configure(world, jwks=private_set(rsa("c")), introspectionSignatureKeyId="c")
    assert [key["kid"] for key in json.loads(moved["jwks"])["keys"]] == ["c"]
    cleared = await configure(world, jwks="", introspectionSignatureKeyId="")
    assert "jwks" not in cleared
    assert "introspectionSignatureKeyId" not in cleared
    response = await world.http.get("/api/service/jwks/get", auth=world.auth)
    assert response.status_code == 204


# --- Authlete's Python client ---------------------------------------------------------------


def test_jwt_introspection_and_the_service_keys_through_authletes_client(base_url: str) -> None:
    created, authlete, client_id = service_with_client(base_url)
    operator = api(base_url, serviceOwnerApiKey=OPERATOR[0], serviceOwnerApiSecret=OPERATOR[1])
    update = Service()
    update.apiKey = created.apiKey
    update.jwks = private_set(rsa("rsa"), ec("ec"))
    update.introspectionSignatureKeyId = "ec"
    updated = operator.updateService(update)
    assert updated.introspectionSignatureKeyId == "ec"
    assert_public(json.loads(updated.jwks)["keys"])

    published_text = authlete.getServiceJwks(pretty=True, includePrivateKeys=True)
    document = json.loads(published_text)
    assert_public(document["keys"])
    keys = KeySet.import_key_set(document)

    token = new_token(authlete, client_id, properties=[])
    request = StandardIntrospectionRequest()
    request.parameters = f"token={token.accessToken}"
    request.rsUri = RS
    request.httpAcceptHeader = JWT_TYPE
    request.introspectionSignAlg = JWSAlg.ES256
    answer = authlete.standardIntrospection(request)
    assert answer.action is StandardIntrospectionAction.JWT
    header, claims = verified(answer.responseContent, keys)
    assert (header["kid"], header["alg"], header["typ"]) == (
        "ec",
        "ES256",
        "token-introspection+jwt",
    )
    assert claims["aud"] == RS
    assert claims["token_introspection"]["sub"] == "alice"

    plain = StandardIntrospectionRequest()
    plain.parameters = f"token={token.accessToken}"
    plain_answer = authlete.standardIntrospection(plain)
    assert plain_answer.action is StandardIntrospectionAction.OK
    assert json.loads(plain_answer.responseContent)["active"] is True

    bare = httpx.get(f"{base_url}/api/service/jwks/get",
                     auth=(str(created.apiKey), created.apiSecret))  # fmt: skip
    assert bare.status_code == 200
