"""Durations (seconds) and timestamps (milliseconds since 1970), as Authlete sends them."""

from __future__ import annotations

import re

from app.errors import ApiError, BadRequestAction

# The last millisecond of the year 9999. Larger timestamps are rejected: they overflow
# 64-bit columns soon after and no real token lives that long.
MAX_TIMESTAMP_MS = 253_402_300_799_999
MAX_DURATION_SECONDS = 99_999_999_999
_DECIMAL = re.compile(r"[0-9]{1,11}")  # at most 11 digits: about 3,000 years in seconds


def parse_duration(value: str | None) -> int | None:
    """A duration written as a decimal string of seconds (a scope attribute), else None."""
    if value is None or _DECIMAL.fullmatch(value) is None:
        return None
    seconds = int(value)
    return seconds if seconds <= MAX_DURATION_SECONDS else None


def duration_or(
    value: int | None, default: int, *, error: type[ApiError] = BadRequestAction
) -> int:
    """A duration in seconds as a request gives it, or `default` when it is not set:
    Authlete's clients send 0 for "not set", so 0 or less keeps the default. A duration
    too long to turn into a timestamp is refused with `error`."""
    if value is not None and value > MAX_DURATION_SECONDS:
        raise error(f"A duration may be {MAX_DURATION_SECONDS} seconds at the most.")
    return value if value is not None and value > 0 else default


def client_duration(service_seconds: int, client_seconds: int | None) -> int:
    """A token duration from the service's and its client's (Authlete's ClientExtension
    `accessTokenDuration` / `refreshTokenDuration`): the client's is used only when it is
    above 0 and below the service's, so a client can shorten its tokens, never lengthen
    them."""
    if client_seconds is not None and 0 < client_seconds < service_seconds:
        return client_seconds
    return service_seconds


def expiry_after(now: int, seconds: int) -> int:
    return now + seconds * 1000


def is_expired(expires_at: int, now: int) -> bool:
    """The one definition of "expired": `now >= expiresAt` (docs/api.md, "Data model")."""
    return now >= expires_at
