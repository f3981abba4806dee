"""DPoP nonces (RFC 9449 sections 8 and 9), without storage. Pure: `now` is passed in.

A nonce is HMAC-SHA-256 over the service and a time step, base64url: the step is
`floor(now / duration)`, the duration the service's `dpopNonceDuration`. Every process on
every host that shares the server's hash key computes the same nonce for the same step, so
nothing is stored, shared or cleaned up, and no client can compute one ahead of time.

A proof may carry the nonce of the current step, of the previous one (issued just before
the step ended: it stays good for at least one duration), or of the next one (issued by a
host whose clock runs a little ahead). The replay check on `jti` (section 11.1) still
applies on top: a nonce bounds when a proof was made, not how often it is used.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass

from app.kit.hashing import b64url

# Authlete documents no default for `dpopNonceDuration`; a service that leaves it unset
# (or 0) gets five minutes (docs/decisions.md).
DEFAULT_NONCE_DURATION = 300


@functools.lru_cache(maxsize=8)  # one hash key per server: derived once, not per request
def nonce_key(hash_key: bytes) -> bytes:
    """The nonces' own key, derived from the server's hash key in a key domain of its own:
    a nonce, which is public, never equals a digest computed for anything else."""
    return hmac.new(hash_key, b"dpop-nonce-key", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class NonceClock:
    """The nonces of one service: its key, and how long each nonce is the current one."""

    key: bytes
    service_api_key: int
    duration_seconds: int

    @classmethod
    def of(cls, key: bytes, service_api_key: int, duration: int | None) -> NonceClock:
        seconds = duration if duration is not None and duration > 0 else DEFAULT_NONCE_DURATION
        return cls(key, service_api_key, seconds)

    def _at(self, step: int) -> str:
        message = f"dpop-nonce:{self.service_api_key}:{step}".encode("ascii")
        return b64url(hmac.new(self.key, message, hashlib.sha256).digest())

    def _step(self, now_ms: int) -> int:
        return (now_ms // 1000) // self.duration_seconds

    def current(self, now_ms: int) -> str:
        """The nonce to hand out now (the `DPoP-Nonce` header's value)."""
        return self._at(self._step(now_ms))

    def accepts(self, nonce: str, now_ms: int) -> bool:
        """The nonce of the previous, the current or the next step (constant time)."""
        step = self._step(now_ms)
        given = nonce.encode("utf-8", "replace")
        matches = [
            hmac.compare_digest(given, self._at(step + offset).encode("ascii"))
            for offset in (-1, 0, 1)
        ]
        return any(matches)
