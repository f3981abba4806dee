"""Token values, their hashes and thumbprints. Pure: the random bytes are passed in.

- A token value is 256 random bits, base64url without padding (43 characters).
- `accessTokenHash` is base64url(SHA-256(value)) without padding (docs/api.md, "Data model").
- At rest, the lookup key is HMAC-SHA-256(server secret, hash): a copy of the database
  neither reveals a usable token nor lets someone who can write to it plant a token,
  because computing a lookup key needs the server secret.
- Thumbprints (RFC 7638 `jkt`, RFC 8705 `x5t#S256`) are base64url(SHA-256) as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

VALUE_BYTES = 32

# 32 bytes in unpadded base64url are 43 characters. The last character carries only four
# bits of data and two zero bits, so in the canonical encoding it is one of 16 characters
# (RFC 4648 section 3.5: pad bits set to zero). Anything else is not a SHA-256 digest.
_SHA256_B64URL = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_value(random_bytes: bytes) -> str:
    """The wire form of a new token value, made from `VALUE_BYTES` random bytes."""
    if len(random_bytes) != VALUE_BYTES:
        raise ValueError(f"a token value needs {VALUE_BYTES} random bytes")
    return b64url(random_bytes)


def token_hash(value: str) -> str:
    """`accessTokenHash`: base64url(SHA-256(value)) without padding."""
    return b64url(hashlib.sha256(value.encode("utf-8")).digest())


def lookup_key(service_api_key: int, hash_: str, secret: bytes) -> str:
    """The at-rest lookup key of a token hash: hex HMAC-SHA-256 under the server secret,
    over the owning service and the hash. Binding the service in makes one service's keys
    meaningless to another: a token is found only through its own service."""
    message = f"{service_api_key}:{hash_}".encode("ascii")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def refresh_lookup_key(service_api_key: int, hash_: str, secret: bytes) -> str:
    """The lookup key of a refresh token hash: a separate key domain from access tokens, so
    an access token's value can never be taken for a refresh token's, or the reverse."""
    return lookup_key(service_api_key, "refresh:" + hash_, secret)


def is_sha256_b64url(text: str) -> bool:
    """True for a canonical unpadded base64url SHA-256 digest (43 characters)."""
    return _SHA256_B64URL.fullmatch(text) is not None


def secret_digest(secret: str, key: bytes) -> str:
    """The stored form of an API secret. Secrets are 256 random bits, so a keyed fast hash
    is enough; a password hash (bcrypt, argon2) protects low-entropy input, not this."""
    return hmac.new(key, b"api-secret:" + secret.encode("utf-8"), hashlib.sha256).hexdigest()


def service_token_key(value: str, key: bytes) -> str:
    """The stored form of a service access token (API v3 credentials): a keyed digest in a
    key domain of its own."""
    message = b"service-access-token:" + value.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()
