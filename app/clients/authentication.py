"""Client authentication (RFC 6749 section 2.3), decided pure: from what a client presented
and the client as registered, without I/O or a clock of its own (`now` is passed in).

Methods (Authlete's `ClientAuthMethod` names):
- NONE: a public client names itself (`client_id`) and proves nothing.
- CLIENT_SECRET_BASIC / CLIENT_SECRET_POST (RFC 6749 section 2.3.1): the secret from the
  `Authorization: Basic` header (passed to the API as `clientId`/`clientSecret`) or from the
  form (`client_id`/`client_secret`). Compared as keyed digests, in constant time, under the
  hash secret the stored digest names (app.kit.keys); one verified under an older key is
  answered with its digest under the current key, for the shell to store.
- TLS_CLIENT_AUTH (RFC 8705 section 2.1.1): the certificate's subject DN is the one registered.
- PRIVATE_KEY_JWT (RFC 7523 section 3, OpenID Connect Core section 9): a JWT signed with a
  key of the client's JWK set; the shell records its `jti` so that it is used once.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from cryptography import x509
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.kit.keys import KeyRing

if TYPE_CHECKING:
    from joserfc.jwk import KeySetSerialization

SECRET_BYTES = 32  # 256 random bits, base64url: 43 characters
# Authlete's `client_secret_update_request`: only A-Z a-z 0-9 - _, at most 86 characters.
_SECRET_FORM = re.compile(r"[A-Za-z0-9_-]{1,86}")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 2.2
# Compared against when there is no digest to verify under (its key is no longer listed),
# so that a refusal does the same work as a wrong secret.
_NO_DIGEST = "0" * 64
# Asymmetric algorithms only: PRIVATE_KEY_JWT is signed with a private key (the HMAC
# algorithms belong to CLIENT_SECRET_JWT, which tokenstore does not offer).
ASSERTION_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
# An assertion may live at most this long from now: its jti is remembered until it expires.
MAX_ASSERTION_LIFETIME_MS = 24 * 3600 * 1000
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class ClientType(enum.StrEnum):
    PUBLIC = "PUBLIC"
    CONFIDENTIAL = "CONFIDENTIAL"


class AuthMethod(enum.StrEnum):
    NONE = "NONE"
    CLIENT_SECRET_BASIC = "CLIENT_SECRET_BASIC"  # noqa: S105 - a name
    CLIENT_SECRET_POST = "CLIENT_SECRET_POST"  # noqa: S105 - a name
    PRIVATE_KEY_JWT = "PRIVATE_KEY_JWT"
    TLS_CLIENT_AUTH = "TLS_CLIENT_AUTH"


# What a client without stored values (a row written before these columns) is: Authlete's
# default method is CLIENT_SECRET_BASIC, for a confidential client.
DEFAULT_TYPE = ClientType.CONFIDENTIAL
DEFAULT_METHOD = AuthMethod.CLIENT_SECRET_BASIC


class InvalidRegistration(ValueError):
    """A client's authentication settings that cannot work together."""


def settle(
    client_type: ClientType | None, method: AuthMethod | None
) -> tuple[ClientType, AuthMethod]:
    """The type and method of a client from what was given: a missing one follows from the
    other (PUBLIC goes with NONE), both missing is Authlete's default. A public client
    cannot authenticate (RFC 6749 section 2.1), a confidential one must."""
    if client_type is None:
        client_type = ClientType.PUBLIC if method is AuthMethod.NONE else ClientType.CONFIDENTIAL
    if method is None:
        method = AuthMethod.NONE if client_type is ClientType.PUBLIC else DEFAULT_METHOD
    if (client_type is ClientType.PUBLIC) != (method is AuthMethod.NONE):
        raise InvalidRegistration(
            "A PUBLIC client uses tokenAuthMethod NONE, and a CONFIDENTIAL client any other."
        )
    return client_type, method


def secret_digest(client_id: int, secret: str, key: bytes) -> str:
    """The stored form of a client secret: HMAC-SHA-256 under the server's hash key, in a
    key domain of its own and bound to the client (one client's digest is no other's)."""
    message = f"client-secret:{client_id}:".encode("ascii") + secret.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def is_secret_form(secret: str) -> bool:
    return _SECRET_FORM.fullmatch(secret) is not None


def subject_dn(text: str) -> str:
    """An RFC 4514 distinguished name in cryptography's canonical spelling; ValueError if it
    is none."""
    return x509.Name.from_rfc4514_string(text).rfc4514_string()


def check_jwks(text: str) -> None:
    """A client's JWK set as registered: a JSON object with public keys only."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidRegistration("jwks is not JSON.") from error
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise InvalidRegistration('jwks is a JSON object with a "keys" array (RFC 7517 section 5).')
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & set(jwk):
            raise InvalidRegistration("jwks holds public keys only.")
    try:
        KeySet.import_key_set(cast("KeySetSerialization", document))
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise InvalidRegistration("jwks holds a key that cannot be read.") from error


# --- What was presented --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Presented:
    """What a request carries for client authentication: the API's `clientId` and
    `clientSecret` (the AS's Basic credentials), the form's parameters and the TLS
    certificate."""

    basic_id: str | None = None
    basic_secret: str | None = None
    form_id: str | None = None
    form_secret: str | None = None
    assertion_type: str | None = None
    assertion: str | None = None
    certificate: str | None = None


class Refused(Exception):
    """Client authentication failed (`invalid_client`, RFC 6749 section 5.2). The message
    names the reason, never a presented value."""


@dataclass(frozen=True, slots=True)
class Claim:
    """Who the request says the client is, and by which method it tries to prove it."""

    identifier: str
    method: AuthMethod | None  # None: no secret nor assertion (NONE or TLS_CLIENT_AUTH)


def claim(presented: Presented) -> Claim:
    """The client the request names and the method it uses. RFC 6749 section 2.3: a client
    uses one method per request; every place that names the client names the same one."""
    methods = [
        method
        for method, used in (
            (AuthMethod.CLIENT_SECRET_BASIC, presented.basic_secret is not None),
            (AuthMethod.CLIENT_SECRET_POST, presented.form_secret is not None),
            (
                AuthMethod.PRIVATE_KEY_JWT,
                presented.assertion is not None or presented.assertion_type is not None,
            ),
        )
        if used
    ]
    if len(methods) > 1:
        raise Refused("The request uses more than one client authentication method.")
    names = {n for n in (presented.basic_id, presented.form_id) if n is not None}
    if presented.assertion is not None:
        subject = _unverified_claims(presented.assertion).get("sub")
        if not isinstance(subject, str):
            raise Refused("The client assertion has no sub claim.")
        names.add(subject)
    if len(names) > 1:
        raise Refused("The request names more than one client.")
    if not names or "" in names:
        raise Refused("The request names no client.")
    return Claim(names.pop(), methods[0] if methods else None)


def _unverified_claims(assertion: str) -> dict[str, Any]:
    """The payload of a compact JWS, read before the signature is checked, only to learn
    which client's keys to check it with."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise Refused("The client assertion is not a compact JWS.")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError, binascii.Error) as error:
        raise Refused("The client assertion's payload is not JSON.") from error
    if not isinstance(claims, dict):
        raise Refused("The client assertion's payload is not a JSON object.")
    return claims


# --- The decision --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registered:
    """A client as registered, as the decision needs it."""

    client_id: int
    alias: str | None
    client_type: ClientType
    method: AuthMethod
    secret_digest: str | None
    secret_key_id: str  # the hash secret the digest was made with
    tls_subject_dn: str | None
    jwks: str | None


@dataclass(frozen=True, slots=True)
class AssertionUse:
    """A verified client assertion: the shell records `key` until `expires_at` (ms) and
    refuses the request if it was recorded before (RFC 7523 section 3, item 7)."""

    key: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class SecretRekey:
    """A client secret verified under an older key: the shell stores its digest under the
    current key (`digest`, `key_id`) in place of the one verified (`old_digest`), if the row
    still holds that one."""

    old_digest: str
    old_key_id: str
    digest: str
    key_id: str


def authenticate(
    client: Registered, presented: Presented, claimed: Claim, *, keys: KeyRing, now: int
) -> AssertionUse | SecretRekey | None:
    """Raises Refused unless the client proved who it is by its registered method. Answers
    what the shell must write: the assertion to record as used (PRIVATE_KEY_JWT), or the
    secret's digest under the current key when it verified under an older one."""
    if client.method is AuthMethod.NONE:
        if claimed.method is not None:
            raise Refused("This client is public: it has no credentials to present.")
        return None
    if client.method is AuthMethod.TLS_CLIENT_AUTH:
        if claimed.method is not None:
            raise Refused("This client authenticates with its TLS certificate.")
        _check_certificate(client, presented.certificate)
        return None
    if claimed.method is not client.method:
        raise Refused(f"This client authenticates with {client.method.value}.")
    if client.method is AuthMethod.PRIVATE_KEY_JWT:
        return _check_assertion(client, presented, claimed, now=now)
    secret = presented.basic_secret if client.method is AuthMethod.CLIENT_SECRET_BASIC else None
    if client.method is AuthMethod.CLIENT_SECRET_POST:
        secret = presented.form_secret
    if secret is None or client.secret_digest is None:
        raise Refused("The client secret is wrong.")
    # Under the key the digest names; one no longer listed refuses the secret as a wrong
    # one, after the same work.
    key = keys.get(client.secret_key_id)
    stored = None if key is None else client.secret_digest
    presented_digest = secret_digest(client.client_id, secret, (key or keys.current).secret)
    matches = hmac.compare_digest(presented_digest, _NO_DIGEST if stored is None else stored)
    if key is None or stored is None or not matches:
        raise Refused("The client secret is wrong.")
    if key == keys.current:
        return None
    current = keys.current
    return SecretRekey(
        old_digest=stored,
        old_key_id=key.id,
        digest=secret_digest(client.client_id, secret, current.secret),
        key_id=current.id,
    )


def _check_certificate(client: Registered, pem: str | None) -> None:
    """RFC 8705 section 2.1.2: the certificate's subject DN is the registered one."""
    if not pem:
        raise Refused("This client authenticates with a TLS certificate, and none came.")
    if not client.tls_subject_dn:
        raise Refused("This client has no tlsClientAuthSubjectDn to match.")
    try:
        certificate = x509.load_pem_x509_certificate(pem.strip().encode("ascii"))
        expected = subject_dn(client.tls_subject_dn)
    except (ValueError, UnicodeEncodeError) as error:
        raise Refused("The client certificate is not a PEM certificate.") from error
    if certificate.subject.rfc4514_string() != expected:
        raise Refused("The client certificate's subject is not the registered one.")


def _check_assertion(
    client: Registered, presented: Presented, claimed: Claim, *, now: int
) -> AssertionUse:
    """RFC 7523 section 3 (and section 2.2 for the form), in its order."""
    if presented.assertion_type != ASSERTION_TYPE:
        raise Refused(f"client_assertion_type must be {ASSERTION_TYPE}.")
    if not presented.assertion:
        raise Refused("client_assertion is missing.")
    if not client.jwks:
        raise Refused("This client has no jwks to verify its assertion with.")
    try:
        keys = KeySet.import_key_set(json.loads(client.jwks))
        token = jwt.decode(presented.assertion, keys, algorithms=list(ASSERTION_ALGORITHMS))
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise Refused("The client assertion does not verify with the client's keys.") from error
    claims = token.claims
    names = {str(client.client_id)} | ({client.alias} if client.alias else set())
    # Items 1 and 2: iss and sub are the client's client_id.
    if claims.get("iss") != claimed.identifier or claims.get("sub") != claimed.identifier:
        raise Refused("The client assertion's iss and sub must be the client_id.")
    if claimed.identifier not in names:
        raise Refused("The client assertion's sub is not this client.")
    # Item 3: aud names the authorization server. tokenstore knows no issuer URL of the
    # service, so it requires an audience without matching it (docs/decisions.md).
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if not audiences or not all(isinstance(a, str) and a for a in audiences):
        raise Refused("The client assertion has no aud claim.")
    # Item 4: exp, in the future, and not so far that its jti must be kept for long.
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise Refused("The client assertion has no exp claim.")
    if exp * 1000 <= now:
        raise Refused("The client assertion has expired.")
    if exp * 1000 > now + MAX_ASSERTION_LIFETIME_MS:
        raise Refused("The client assertion expires more than a day from now.")
    # Item 5: not before.
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int) or nbf * 1000 > now):
        raise Refused("The client assertion is not valid yet.")
    # Item 7: a jti, used once (the shell records it).
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise Refused("The client assertion has no jti claim.")
    key = hashlib.sha256(f"client-assertion:{client.client_id}:{jti}".encode()).hexdigest()
    return AssertionUse(key=key, expires_at=exp * 1000)
