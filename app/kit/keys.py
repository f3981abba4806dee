"""The server's hash secrets as a key ring, and what is derived from them.

`TOKENSTORE_HASH_SECRETS` is a comma-separated list of `id:secret`: the first is current
(every new keyed value is made with it), and every listed one verifies. A single
`TOKENSTORE_HASH_SECRET` is the ring of one key with the id `default`, which is also the
id that rows written before key ids existed carry.

From each secret come two keys in separate domains (HKDF-SHA-256, RFC 5869):

- the HMAC key of the lookup keys and of the stored secret digests: the secret itself, as
  before key ids, so a deployment that upgrades keeps every stored value valid;
- an AES-256-GCM key that seals the stored token hashes (`access_hash`, `refresh_hash`): a
  copy of the database cannot test a guessed token value against them without the secret.

Pure: the random nonce of a seal is passed in.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LEGACY_KEY_ID = "default"
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")
NONCE_BYTES = 12
# A sealed value: "s1." + base64url(nonce | ciphertext | tag), without padding.
SEALED_PREFIX = "s1."


class KeyListError(ValueError):
    """A key list that cannot be used; the message says why (never the secrets)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class HashKey:
    id: str
    secret: bytes = field(repr=False)
    # The AES-256-GCM cipher under the sealing key derived from the secret, made once per
    # key (not per seal: introspection opens a hash on every call).
    sealer: AESGCM = field(repr=False, compare=False)

    @classmethod
    def of(cls, key_id: str, secret: bytes) -> HashKey:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"tokenstore:seal:v1"
        ).derive(secret)
        return cls(key_id, secret, AESGCM(derived))


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The listed keys, the current one first."""

    keys: tuple[HashKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyListError("the key list is empty")
        ids = [key.id for key in self.keys]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise KeyListError(f"key ids are listed more than once: {', '.join(repeated)}")

    @property
    def current(self) -> HashKey:
        return self.keys[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key.id for key in self.keys)

    @property
    def lookup_order(self) -> tuple[HashKey, ...]:
        """The keys to look a value up under, one lookup each: the current key first, each
        older one, then the current key again. A row moves only to the current key (an
        update, `tokenstore rekey`), so one that moved between two lookups of the same
        request is found by the last; without it, a lookup blocked on the row lock under
        an older key finds nothing once the mover commits."""
        if len(self.keys) == 1:
            return self.keys
        return (*self.keys, self.current)

    def get(self, key_id: str) -> HashKey | None:
        for key in self.keys:
            if key.id == key_id:
                return key
        return None

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """`id:secret,id:secret,...`, the current key first."""
        keys = []
        for number, entry in enumerate(text.split(","), start=1):
            key_id, colon, secret = entry.strip().partition(":")
            if not colon or not secret:
                raise KeyListError(f"entry {number} is not id:secret")
            if not KEY_ID.fullmatch(key_id):
                raise KeyListError(f"entry {number}: a key id is 1 to 16 of A-Z a-z 0-9 _ -")
            keys.append(HashKey.of(key_id, secret.encode("utf-8")))
        return cls(tuple(keys))

    @classmethod
    def single(cls, secret: bytes) -> KeyRing:
        return cls((HashKey.of(LEGACY_KEY_ID, secret),))


def seal(key: HashKey, plaintext: str, *, nonce: bytes, context: str) -> str:
    """AES-256-GCM under the key's sealing key; `context` (the row it belongs in) is
    authenticated, so a sealed value moved to another row does not open."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a seal needs a {NONCE_BYTES}-byte nonce")
    sealed = key.sealer.encrypt(nonce, plaintext.encode("utf-8"), context.encode())
    return SEALED_PREFIX + _b64(nonce + sealed)


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


class Unopenable(Exception):
    """A sealed value that the key does not open (another key, another row, tampering)."""


def open_sealed(key: HashKey, stored: str, *, context: str) -> str:
    """The plaintext of `seal`; a value stored before sealing (a plain hash) as it is."""
    if not is_sealed(stored):
        return stored
    try:
        raw = _unb64(stored[len(SEALED_PREFIX) :])
        nonce, sealed = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        return key.sealer.decrypt(nonce, sealed, context.encode()).decode("utf-8")
    except (InvalidTag, binascii.Error, ValueError) as error:
        raise Unopenable("the sealed value does not open under its key") from error
