"""A service's JWK set (RFC 7517): checked when it is stored, published without its private
parts, and the key that signs JWT introspection responses (RFC 9701) picked from it. Pure:
no I/O, no clock.

The set is kept as the JSON text the operator gave (Authlete's `Service.jwks` is a string).
Parsing it costs more than an introspection (an RSA private key is checked on import), so
parsed sets are cached per process by their text: a changed set is a new text.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from app.errors import InvalidValue

# The JWS algorithms a service key may sign with (RFC 7518 section 3.1; RFC 9864 for the
# Edwards curves, whose polymorphic "EdDSA" it deprecates: not used), each with the key type and
# curve it needs. Never "none", never an HMAC: a secret key has no public part to publish.
SIGNING_ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "Ed25519": ("OKP", "Ed25519"), "Ed448": ("OKP", "Ed448"),
}  # fmt: skip
# The algorithm a key signs with when neither the request nor the key's `alg` names one.
_DEFAULT_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "Ed25519",
                     "Ed448": "Ed448"}  # fmt: skip
# Members that carry private key material (RFC 7518 sections 6.2.2, 6.3.2 and 6.4; RFC 8037
# section 2): never shown back, whatever the key type says of them.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "r", "t", "k"})
MAX_KEYS = 100
MIN_RSA_BITS = 2048
_PROBE = b"tokenstore"


class KeySetError(ValueError):
    """The text is not a JWK set tokenstore can keep; the message says why (never a value)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    key: Key
    algorithm: str

    @property
    def key_id(self) -> str | None:
        return self.key.kid


def check(jwks: str | None, key_id: str | None) -> None:
    """What a service may store (VALUE_INVALID otherwise): a JWK set of asymmetric keys,
    each well formed, ids unique, with at least one private key that signs; and the
    introspection key id, if set, names one of its private signing keys."""
    if jwks is None:
        if key_id is not None:
            raise InvalidValue("introspectionSignatureKeyId names a key, but there is no jwks.")
        return
    try:
        keys = parse(jwks)
    except KeySetError as error:
        raise InvalidValue(f"jwks: {error}") from None
    signers = [key for key in keys if _signs(key)]
    if not signers:
        raise InvalidValue("jwks holds no private key that can sign.")
    if key_id is not None and not any(key.kid == key_id for key in signers):
        raise InvalidValue("introspectionSignatureKeyId names no private signing key of jwks.")


@functools.lru_cache(maxsize=256)
def parse(jwks: str) -> tuple[Key, ...]:
    """The keys of a JWK set (RFC 7517 section 5); KeySetError when it is not one we keep."""
    try:
        document = json.loads(jwks)
    except (ValueError, RecursionError):
        raise KeySetError("not JSON.") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetError('not a JWK set: a JSON object with a "keys" array.')
    members = document["keys"]
    if len(members) > MAX_KEYS:
        raise KeySetError(f"more than {MAX_KEYS} keys.")
    keys = tuple(_key(index, member) for index, member in enumerate(members))
    ids = [key.kid for key in keys if key.kid is not None]
    if len(set(ids)) != len(ids):
        raise KeySetError("two keys have the same kid.")
    return keys


def _key(index: int, member: object) -> Key:
    """One key of the set: asymmetric, well formed, and if private and for signatures, one
    that signs (tried once)."""
    if not isinstance(member, dict):
        raise KeySetError(f"keys[{index}] is not a JSON object.")
    if member.get("kty") == "oct":
        raise KeySetError(f"keys[{index}] is a symmetric key, which cannot be published.")
    # Before the import, which warns of small RSA keys.
    if member.get("kty") == "RSA" and _bits(member.get("n")) < MIN_RSA_BITS:
        raise KeySetError(f"keys[{index}] is an RSA key under {MIN_RSA_BITS} bits.")
    try:
        key = JWKRegistry.import_key(member)
    except (JoseError, ValueError, TypeError, OverflowError):
        # The library's message may quote the key's members: not repeated.
        raise KeySetError(f"keys[{index}] is not a usable JWK.") from None
    if not _signs(key):
        return key
    algorithm = default_algorithm(key)
    if algorithm is None:
        raise KeySetError(f"keys[{index}] cannot sign with any algorithm tokenstore uses.")
    try:
        jws.serialize_compact({"alg": algorithm}, _PROBE, key, algorithms=[algorithm])
    except (JoseError, ValueError, TypeError):
        raise KeySetError(f"keys[{index}] does not sign with {algorithm}.") from None
    return key


def _bits(modulus: object) -> int:
    """The size of an RSA modulus given as base64url (RFC 7518 section 6.3.1.1)."""
    if not isinstance(modulus, str):
        return 0
    try:
        value = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except (ValueError, binascii.Error):
        return 0
    return int.from_bytes(value, "big").bit_length()


def public_set(jwks: str | None) -> dict[str, Any] | None:
    """The JWK set to publish: each key's public members only, None when there is none."""
    if jwks is None:
        return None
    try:
        keys = parse(jwks)
    except KeySetError:
        return None  # never stored: `check` guards every write
    published = []
    for key in keys:
        member = dict(key.as_dict(private=False))
        published.append({k: v for k, v in member.items() if k not in PRIVATE_MEMBERS})
    return {"keys": published}


def public_text(jwks: str | None) -> str | None:
    document = public_set(jwks)
    return None if document is None else json.dumps(document)


def default_algorithm(key: Key) -> str | None:
    """The key's own `alg`, else the one its type implies (RS256 for RSA, by Authlete's
    default of `introspectionSignAlg`)."""
    if key.alg is not None:
        return key.alg if fits(key, key.alg) else None
    if key.key_type == "RSA":
        return "RS256"
    curve = key.get("crv")
    return _DEFAULT_BY_CURVE.get(curve) if isinstance(curve, str) else None


def fits(key: Key, algorithm: str) -> bool:
    """The key can sign with the algorithm: its type and curve, and its own `alg` if any."""
    wanted = SIGNING_ALGORITHMS.get(algorithm)
    if wanted is None:
        return False
    # A key marked with another `alg` (or with "EdDSA", which the library signs with only
    # under its deprecation warning) is not used for this one.
    if key.alg is not None and key.alg != algorithm:
        return False
    key_type, curve = wanted
    return key.key_type == key_type and (curve is None or key.get("crv") == curve)


class NoSigningKey(Exception):
    """The service has no key for the signature asked; the message says why."""


def signing_key(keys: tuple[Key, ...], *, key_id: str | None, algorithm: str | None) -> SigningKey:
    """The key that signs: the one `key_id` names, else the first private signing key (that
    fits `algorithm`, when the request names one)."""
    candidates = [key for key in keys if _signs(key)]
    if key_id is not None:
        candidates = [key for key in candidates if key.kid == key_id]
    for key in candidates:
        chosen = algorithm or default_algorithm(key)
        if chosen is not None and fits(key, chosen):
            return SigningKey(key, chosen)
    if key_id is not None:
        raise NoSigningKey(f"The key {key_id!r} cannot sign with {algorithm}.")
    raise NoSigningKey(f"The service has no private key that signs with {algorithm}.")


def _signs(key: Key) -> bool:
    """A private key meant for signatures (RFC 7517 sections 4.2 and 4.3)."""
    if not key.is_private or key.get("use") not in (None, "sig"):
        return False
    operations = key.get("key_ops")
    return operations is None or "sign" in operations
