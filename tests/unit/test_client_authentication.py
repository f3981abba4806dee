"""Client authentication decided pure (app/clients/authentication.py): no database, a fixed
`now`, real keys and certificates."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from app.clients.authentication import (
    ASSERTION_TYPE,
    AssertionUse,
    AuthMethod,
    ClientType,
    InvalidRegistration,
    Presented,
    Refused,
    Registered,
    SecretRekey,
    authenticate,
    check_jwks,
    claim,
    is_secret_form,
    secret_digest,
    settle,
)
from app.kit.durations import client_duration
from app.kit.keys import LEGACY_KEY_ID, HashKey, KeyRing
from tests.proofs import self_signed_certificate

NOW = 1_700_000_000_000
KEY = b"k" * 32
KEYS = KeyRing.single(KEY)
CLIENT_ID = 4242


def registered(method: AuthMethod, **fields: Any) -> Registered:
    base = Registered(
        client_id=CLIENT_ID,
        alias="app",
        client_type=ClientType.PUBLIC if method is AuthMethod.NONE else ClientType.CONFIDENTIAL,
        method=method,
        secret_digest=secret_digest(CLIENT_ID, "s3cret", KEY),
        secret_key_id=LEGACY_KEY_ID,
        tls_subject_dn=None,
        jwks=None,
    )
    return replace(base, **fields)


def decide(client: Registered, presented: Presented) -> AssertionUse | None:
    proved = authenticate(client, presented, claim(presented), keys=KEYS, now=NOW)
    assert not isinstance(proved, SecretRekey)  # every secret here is under the current key
    return proved


@pytest.mark.parametrize(
    ("given", "settled"),
    [
        ((None, None), (ClientType.CONFIDENTIAL, AuthMethod.CLIENT_SECRET_BASIC)),
        ((ClientType.PUBLIC, None), (ClientType.PUBLIC, AuthMethod.NONE)),
        ((None, AuthMethod.NONE), (ClientType.PUBLIC, AuthMethod.NONE)),
        ((None, AuthMethod.PRIVATE_KEY_JWT), (ClientType.CONFIDENTIAL, AuthMethod.PRIVATE_KEY_JWT)),
        (
            (ClientType.CONFIDENTIAL, None),
            (ClientType.CONFIDENTIAL, AuthMethod.CLIENT_SECRET_BASIC),
        ),
    ],
)
def test_a_missing_type_or_method_follows_from_the_other(
    given: tuple[ClientType | None, AuthMethod | None], settled: tuple[ClientType, AuthMethod]
) -> None:
    assert settle(*given) == settled


@pytest.mark.parametrize(
    ("client_type", "method"),
    [
        (ClientType.PUBLIC, AuthMethod.CLIENT_SECRET_POST),
        (ClientType.CONFIDENTIAL, AuthMethod.NONE),
    ],
)
def test_a_public_client_cannot_authenticate_and_a_confidential_one_must(
    client_type: ClientType, method: AuthMethod
) -> None:
    with pytest.raises(InvalidRegistration):
        settle(client_type, method)


def test_a_secret_digest_is_keyed_and_bound_to_the_client() -> None:
    digest = secret_digest(CLIENT_ID, "s3cret", KEY)
    assert len(digest) == 64
    assert digest != secret_digest(CLIENT_ID + 1, "s3cret", KEY)
    assert digest != secret_digest(CLIENT_ID, "s3cret", b"other key")
    assert "s3cret" not in digest


@pytest.mark.parametrize(
    ("secret", "valid"),
    [("a" * 86, True), ("A-z_09", True), ("", False), ("a" * 87, False), ("no spaces", False)],
)
def test_a_chosen_secret_has_authletes_form(secret: str, valid: bool) -> None:
    assert is_secret_form(secret) is valid


def test_the_basic_secret_authenticates_a_basic_client() -> None:
    client = registered(AuthMethod.CLIENT_SECRET_BASIC)
    assert decide(client, Presented(basic_id="4242", basic_secret="s3cret")) is None


@pytest.mark.parametrize(
    "presented",
    [
        Presented(basic_id="4242", basic_secret="wrong"),
        Presented(basic_id="4242"),  # no secret at all
        Presented(form_id="4242", form_secret="s3cret"),  # the other method
    ],
)
def test_a_basic_client_is_refused_without_its_secret_by_its_method(presented: Presented) -> None:
    with pytest.raises(Refused):
        decide(registered(AuthMethod.CLIENT_SECRET_BASIC), presented)


def test_the_form_secret_authenticates_a_post_client_and_the_header_does_not() -> None:
    client = registered(AuthMethod.CLIENT_SECRET_POST)
    assert decide(client, Presented(form_id="4242", form_secret="s3cret")) is None
    with pytest.raises(Refused):
        decide(client, Presented(basic_id="4242", basic_secret="s3cret"))


# --- Secrets across a rotation of the hash secret (app.kit.keys) ----------------------------

NEW = HashKey.of("new", b"n" * 32)
OLD = HashKey.of("old", b"o" * 32)


def under(key: HashKey) -> Registered:
    """A CLIENT_SECRET_BASIC client whose secret "s3cret" is stored under `key`."""
    return registered(
        AuthMethod.CLIENT_SECRET_BASIC,
        secret_digest=secret_digest(CLIENT_ID, "s3cret", key.secret),
        secret_key_id=key.id,
    )


def prove(client: Registered, secret: str, keys: KeyRing) -> AssertionUse | SecretRekey | None:
    presented = Presented(basic_id="4242", basic_secret=secret)
    return authenticate(client, presented, claim(presented), keys=keys, now=NOW)


def test_a_secret_under_the_current_key_authenticates_with_nothing_to_write() -> None:
    assert prove(under(NEW), "s3cret", KeyRing((NEW, OLD))) is None


def test_a_secret_under_an_older_listed_key_authenticates_and_moves_to_the_current_one() -> None:
    client = under(OLD)
    assert prove(client, "s3cret", KeyRing((NEW, OLD))) == SecretRekey(
        old_digest=client.secret_digest or "",
        old_key_id="old",
        digest=secret_digest(CLIENT_ID, "s3cret", NEW.secret),
        key_id="new",
    )


def test_a_wrong_secret_under_an_older_key_is_refused() -> None:
    with pytest.raises(Refused, match="secret is wrong"):
        prove(under(OLD), "wrong", KeyRing((NEW, OLD)))


def test_a_secret_under_a_key_no_longer_listed_is_refused_as_a_wrong_one() -> None:
    with pytest.raises(Refused, match="secret is wrong"):
        prove(under(OLD), "s3cret", KeyRing((NEW,)))
    # Its id listed with another secret is no key of its digest either.
    with pytest.raises(Refused, match="secret is wrong"):
        prove(under(OLD), "s3cret", KeyRing((NEW, HashKey.of("old", b"x" * 32))))


def test_a_confidential_client_without_a_stored_secret_is_refused() -> None:
    client = registered(AuthMethod.CLIENT_SECRET_BASIC, secret_digest=None)
    with pytest.raises(Refused):
        decide(client, Presented(basic_id="4242", basic_secret="s3cret"))


def test_a_public_client_names_itself_and_may_not_present_a_secret() -> None:
    client = registered(AuthMethod.NONE, secret_digest=None)
    assert decide(client, Presented(form_id="app")) is None
    with pytest.raises(Refused):
        decide(client, Presented(form_id="app", form_secret="s3cret"))


@pytest.mark.parametrize(
    "presented",
    [
        Presented(),
        Presented(basic_id="1", form_id="2"),
        Presented(basic_id="1", basic_secret="x", form_id="1", form_secret="x"),
    ],
)
def test_a_request_names_one_client_by_one_method(presented: Presented) -> None:
    with pytest.raises(Refused):
        claim(presented)


def test_a_tls_client_is_known_by_its_certificates_subject() -> None:
    pem, _ = self_signed_certificate("client.example.com")
    other, _ = self_signed_certificate("intruder.example.com")
    client = registered(AuthMethod.TLS_CLIENT_AUTH, tls_subject_dn="CN=client.example.com")
    assert decide(client, Presented(form_id="4242", certificate=pem)) is None
    for presented in (
        Presented(form_id="4242", certificate=other),
        Presented(form_id="4242"),
        Presented(form_id="4242", certificate="not a certificate"),
        Presented(form_id="4242", form_secret="s3cret", certificate=pem),
    ):
        with pytest.raises(Refused):
            decide(client, presented)


# --- PRIVATE_KEY_JWT (RFC 7523) --------------------------------------------------------------

SIGNING_KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"})
JWKS = json.dumps({"keys": [SIGNING_KEY.as_dict(private=False)]})


def assertion(key: ECKey = SIGNING_KEY, **overrides: Any) -> str:
    claims = {
        "iss": "4242",
        "sub": "4242",
        "aud": "https://as.example.com/revoke",
        "exp": NOW // 1000 + 60,
        "jti": "one",
    } | overrides
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode({"alg": "ES256", "kid": "k1"}, claims, key)


def with_assertion(value: str) -> Presented:
    return Presented(assertion_type=ASSERTION_TYPE, assertion=value)


def test_a_signed_assertion_authenticates_and_names_its_jti_for_the_replay_record() -> None:
    client = registered(AuthMethod.PRIVATE_KEY_JWT, jwks=JWKS)
    use = decide(client, with_assertion(assertion()))
    assert use is not None
    other = decide(client, with_assertion(assertion(jti="two")))
    assert other is not None
    assert use.key != other.key
    assert use.expires_at == (NOW // 1000 + 60) * 1000
    # The alias is the client's client_id as well.
    assert decide(client, with_assertion(assertion(iss="app", sub="app"))) is not None


@pytest.mark.parametrize(
    "bad",
    [
        assertion(key=ECKey.generate_key("P-256", parameters={"kid": "k1"})),  # another key
        assertion(iss="9999"),
        assertion(exp=NOW // 1000 - 1),
        assertion(exp=NOW // 1000 + 2 * 24 * 3600),
        assertion(exp=None),
        assertion(jti=None),
        assertion(aud=None),
        assertion(nbf=NOW // 1000 + 600),
    ],
)
def test_a_bad_assertion_is_refused(bad: str) -> None:
    client = registered(AuthMethod.PRIVATE_KEY_JWT, jwks=JWKS)
    with pytest.raises(Refused):
        decide(client, with_assertion(bad))


def test_an_assertion_of_another_client_or_a_wrong_type_is_refused() -> None:
    client = registered(AuthMethod.PRIVATE_KEY_JWT, jwks=JWKS)
    with pytest.raises(Refused):
        decide(client, with_assertion(assertion(iss="other", sub="other", jti="x")))
    with pytest.raises(Refused):
        decide(client, Presented(assertion_type="urn:other", assertion=assertion()))
    with pytest.raises(Refused):
        claim(with_assertion("not.a.jwt"))


def test_a_registered_jwks_holds_public_keys_only() -> None:
    check_jwks(JWKS)
    for bad in ("[]", "{}", "not json", json.dumps({"keys": [SIGNING_KEY.as_dict(private=True)]})):
        with pytest.raises(InvalidRegistration):
            check_jwks(bad)


@pytest.mark.parametrize(
    ("service", "client", "used"),
    [(3600, None, 3600), (3600, 0, 3600), (3600, 600, 600), (3600, 7200, 3600)],
)
def test_a_clients_duration_shortens_the_services_never_lengthens_it(
    service: int, client: int | None, used: int
) -> None:
    assert client_duration(service, client) == used
