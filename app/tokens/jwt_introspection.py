"""JWT responses for token introspection (RFC 9701), signed with the service's key. Pure:
the key, the issuer and `now` are passed in.

Only signed responses: a request for encryption (`introspectionEncryptionAlg`) is refused
before anything is read, as are "none" and the HMAC algorithms (a shared key given in the
request is not a key of the service's, and its signature proves nothing to a third party).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from joserfc import jws

from app.services.keys import SIGNING_ALGORITHMS, SigningKey

MEDIA_TYPE = "application/token-introspection+jwt"
# RFC 9701 section 5: the `typ` header, the media type without "application/".
TYPE = "token-introspection+jwt"


@dataclass(frozen=True, slots=True)
class JwtAsk:
    """What the request says of the JWT it wants (Authlete's request fields)."""

    rs_uri: str | None
    sign_alg: str | None
    encryption_alg: str | None


def wanted(accept: str | None) -> bool:
    """The resource server's `Accept` header names the JWT's media type (RFC 9701 section
    4), with a q-value above 0 if it has one (RFC 9110 section 12.5.1). Wildcards do not
    ask for it: they accept JSON, the default."""
    for media_range in (accept or "").split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        if media_type.lower() != MEDIA_TYPE:
            continue
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    if float(value) <= 0:
                        break
                except ValueError:
                    break
        else:
            return True
    return False


def refusal(ask: JwtAsk) -> str | None:
    """Why the JWT cannot be made, None when it can: checked before any read."""
    if ask.encryption_alg:
        return (
            "Encrypted introspection responses (introspectionEncryptionAlg) are not "
            "supported; ask for a signed one."
        )
    if not ask.rs_uri:
        # RFC 9701 section 5: `aud` identifies the resource server; Authlete requires rsUri.
        return "rsUri is required for a JWT introspection response (its aud claim)."
    if ask.sign_alg and ask.sign_alg not in SIGNING_ALGORITHMS:
        return (
            f"introspectionSignAlg {ask.sign_alg!r} is not supported; use one of "
            + ", ".join(SIGNING_ALGORITHMS)
            + "."
        )
    return None


def sign(
    content: dict[str, Any], *, signer: SigningKey, issuer: str, audience: str, now: int
) -> str:
    """The compact JWS of RFC 9701 section 5: `iss`, `aud`, `iat` and the RFC 7662 object in
    `token_introspection`; no `sub` or `exp` at the top (section 8.1: the response must
    not pass for an access token)."""
    header: dict[str, Any] = {"typ": TYPE, "alg": signer.algorithm}
    if signer.key_id is not None:
        header["kid"] = signer.key_id
    claims = {"iss": issuer, "aud": audience, "iat": now // 1000, "token_introspection": content}
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return jws.serialize_compact(header, payload, signer.key, algorithms=[signer.algorithm])
