"""The pure pieces of JWT introspection: what asks for a JWT, what is refused before any
read, and which key and algorithm sign."""

from __future__ import annotations

import json

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, RSAKey

from app.errors import InvalidValue
from app.services import keys
from app.tokens.jwt_introspection import JwtAsk, refusal, sign, wanted

JWT = "application/token-introspection+jwt"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (JWT, True),
        (f"application/json;q=0.9, {JWT}", True),
        (f"{JWT.upper()}; q=0.5", True),
        (f"{JWT};q=0", False),
        (f"{JWT};q=0.000", False),
        (f"{JWT};q=abc", False),
        ("*/*", False),
        ("application/*", False),
        ("application/json", False),
        ("", False),
        (None, False),
    ],
)
def test_only_the_jwt_media_type_with_a_positive_q_asks_for_a_jwt(
    accept: str | None, expected: bool
) -> None:
    assert wanted(accept) is expected


@pytest.mark.parametrize(
    ("ask", "says"),
    [
        (JwtAsk(rs_uri="https://rs", sign_alg=None, encryption_alg="RSA-OAEP"), "Encrypted"),
        (JwtAsk(rs_uri=None, sign_alg=None, encryption_alg=None), "rsUri"),
        (JwtAsk(rs_uri="", sign_alg=None, encryption_alg=None), "rsUri"),
        (JwtAsk(rs_uri="https://rs", sign_alg="HS256", encryption_alg=None), "HS256"),
        (JwtAsk(rs_uri="https://rs", sign_alg="none", encryption_alg=None), "none"),
        (JwtAsk(rs_uri="https://rs", sign_alg="EdDSA", encryption_alg=None), "EdDSA"),
    ],
)
def test_what_cannot_be_signed_is_refused(ask: JwtAsk, says: str) -> None:
    problem = refusal(ask)
    assert problem is not None
    assert says in problem


def test_a_supported_algorithm_with_an_audience_is_not_refused() -> None:
    assert refusal(JwtAsk(rs_uri="https://rs", sign_alg="PS256", encryption_alg=None)) is None
    assert refusal(JwtAsk(rs_uri="https://rs", sign_alg=None, encryption_alg="")) is None


def key_set(*generated: object) -> str:
    return json.dumps({"keys": [key.as_dict(private=True) for key in generated]})  # type: ignore[attr-defined]


def test_the_key_and_algorithm_follow_the_id_the_request_and_the_key_type() -> None:
    rsa = RSAKey.generate_key(2048, {"kid": "r"}, private=True)
    p384 = ECKey.generate_key("P-384", {"kid": "e"}, private=True)
    ed = OKPKey.generate_key("Ed25519", {"kid": "o"}, private=True)
    parsed = keys.parse(key_set(rsa, p384, ed))
    chosen = keys.signing_key(parsed, key_id=None, algorithm=None)
    assert (chosen.key_id, chosen.algorithm) == ("r", "RS256")
    chosen = keys.signing_key(parsed, key_id=None, algorithm="ES384")
    assert (chosen.key_id, chosen.algorithm) == ("e", "ES384")
    chosen = keys.signing_key(parsed, key_id="o", algorithm=None)
    assert (chosen.key_id, chosen.algorithm) == ("o", "Ed25519")
    with pytest.raises(keys.NoSigningKey):
        keys.signing_key(parsed, key_id="r", algorithm="ES256")
    with pytest.raises(keys.NoSigningKey):
        keys.signing_key(parsed, key_id=None, algorithm="ES512")


def test_a_signed_answer_carries_the_claims_of_rfc_9701() -> None:
    key = ECKey.generate_key("P-256", {"kid": "k"}, private=True)
    signer = keys.signing_key(keys.parse(key_set(key)), key_id=None, algorithm=None)
    token = sign({"active": False}, signer=signer, issuer="https://as", audience="https://rs",
                 now=1_700_000_000_123)  # fmt: skip
    checked = jws.deserialize_compact(token, key, algorithms=["ES256"])
    assert checked.headers() == {"typ": "token-introspection+jwt", "alg": "ES256", "kid": "k"}
    assert json.loads(checked.payload) == {
        "iss": "https://as", "aud": "https://rs", "iat": 1_700_000_000,
        "token_introspection": {"active": False},
    }  # fmt: skip


def test_the_published_set_has_no_private_member() -> None:
    rsa = RSAKey.generate_key(2048, {"kid": "r"}, private=True)
    ec = ECKey.generate_key("P-256", {"kid": "e", "use": "enc"}, private=True)
    published = keys.public_set(key_set(rsa, ec))
    assert published is not None
    for member in published["keys"]:
        assert not set(member) & keys.PRIVATE_MEMBERS
    assert keys.public_set(None) is None


def test_an_id_needs_a_set_and_a_set_needs_a_signer() -> None:
    with pytest.raises(InvalidValue):
        keys.check(None, "k")
    keys.check(None, None)
    public = ECKey.generate_key("P-256", {"kid": "p"}, private=False)
    with pytest.raises(InvalidValue, match="no private key"):
        keys.check(json.dumps({"keys": [public.as_dict()]}), None)
