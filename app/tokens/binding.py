"""Proof of possession: DPoP proofs (RFC 9449) and client certificates (RFC 8705). Pure.

No I/O, no clock: `now` is passed in. The one check that needs storage, "the jti has not
been seen before" (RFC 9449 section 11.1), is the caller's: `verify_dpop_proof` returns the
`jti` and how long it must be remembered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from app.kit.hashing import b64url

# RFC 9449 section 4.3 step 5: registered asymmetric algorithms only (never "none", never
# an HMAC, whose key the proof cannot carry), each with the key type (and curve) it needs.
# "EdDSA" (RFC 8037) is what clients send today; RFC 9864 names it "Ed25519" from now on.
DPOP_ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "EdDSA": ("OKP", None), "Ed25519": ("OKP", "Ed25519"),
}  # fmt: skip
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class _DPoPRegistry(jws.JWSRegistry):
    # A 4096-bit RSA jwk makes a header of about 1 KB; joserfc's default limit is 512 bytes.
    max_header_length = 4096


_REGISTRY = _DPoPRegistry(algorithms=list(DPOP_ALGORITHMS), strict_check_header=False)
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class ProofError(Exception):
    """A DPoP proof or a client certificate that does not prove possession."""

    error = "invalid_dpop_proof"  # RFC 9449 section 7.1


class MalformedProof(ProofError):
    pass


class MissingClaim(ProofError):
    pass


class WrongType(ProofError):
    pass


class UnacceptableAlgorithm(ProofError):
    pass


class BadSignature(ProofError):
    pass


class PrivateKeyInProof(ProofError):
    pass


class MethodMismatch(ProofError):
    pass


class UriMismatch(ProofError):
    pass


class StaleProof(ProofError):
    pass


class AccessTokenHashMismatch(ProofError):
    pass


class KeyMismatch(ProofError):
    """The proof is sound but signed by another key than the token is bound to."""

    error = "invalid_token"  # RFC 9449 section 7.1's example: "Invalid DPoP key binding"


class ReplayedProof(ProofError):
    pass


class MissingNonce(ProofError):
    """A nonce is required and the proof has none (RFC 9449 section 9)."""

    error = "use_dpop_nonce"


class BadNonce(ProofError):
    """The proof's nonce is not one the server handed out lately (RFC 9449 section 9)."""

    error = "use_dpop_nonce"


class CertificateMismatch(ProofError):
    error = "invalid_token"  # RFC 8705 section 3


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    jkt: str  # RFC 7638 thumbprint of the proof's key
    jti: str
    remember_until: int  # milliseconds; after this the iat check alone rejects a replay


@dataclass(frozen=True, slots=True)
class ProofPolicy:
    max_age_seconds: int = 60  # how old an iat may be
    clock_skew_seconds: int = 5  # how far in the future an iat may be


def access_token_hash(token: str) -> str:
    """RFC 9449 section 4.2 `ath`: base64url(SHA-256(ASCII(token))), not a hex digest."""
    return b64url(hashlib.sha256(token.encode("ascii", "replace")).digest())


def normalize_uri(uri: str) -> str:
    """RFC 9449 section 4.3 step 9 by RFC 3986 sections 6.2.2 and 6.2.3: scheme and host
    in lower case, no default port, an empty path as "/", percent-encoding normalized,
    and the query and fragment left out."""
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(scheme)
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port in (None, default) else f"{host}:{port}"
    path = quote(unquote(parts.path), safe="/:@!$&'()*+,;=-._~") or "/"
    return urlunsplit((scheme, netloc, path, "", ""))


def verify_dpop_proof(
    proof: str,
    *,
    htm: str,
    htu: str,
    access_token: str,
    bound_jkt: str,
    now_ms: int,
    policy: ProofPolicy,
    nonce_accepted: Callable[[str], bool] | None = None,
) -> VerifiedProof:
    """Checks a DPoP proof presented with an access token, per RFC 9449 section 4.3:

    1. one proof, 2. a well-formed JWT, 3. the required claims (jti, htm, htu, iat, ath),
    4. typ "dpop+jwt", 5. an asymmetric, supported alg, 6. a signature by the embedded jwk,
    7. no private key in that jwk, 8. htm, 9. htu (no query or fragment), 10. when
    `nonce_accepted` is given (nonces required), a nonce it accepts (sections 8 and 9),
    11. iat within the window, 12. ath equal to the
    token's hash and the key's RFC 7638 thumbprint equal to the bound jkt. Replay (the
    jti, section 11.1) is checked by the caller with the returned `jti`.
    """
    header, claims = _parse(proof.strip())  # steps 1 to 4
    key = _verify_signature(proof.strip(), header)  # steps 5 to 7
    # Step 8: htm is the method of the request.
    if claims["htm"] != htm:
        raise MethodMismatch("The DPoP proof's htm is not the request's method.")
    # Step 9: htu is the request's URI, query and fragment ignored.
    if not isinstance(claims["htu"], str) or normalize_uri(claims["htu"]) != normalize_uri(htu):
        raise UriMismatch("The DPoP proof's htu is not the request's URI.")
    # Step 10: the nonce the server handed out, when it requires one.
    if nonce_accepted is not None:
        nonce = claims.get("nonce")
        if nonce is None:
            raise MissingNonce("The resource server requires a nonce in the DPoP proof.")
        if not isinstance(nonce, str) or not nonce_accepted(nonce):
            raise BadNonce("The DPoP proof's nonce is not the current one.")
    # Step 11: iat within the acceptable window (section 11.1).
    now_s = now_ms // 1000
    if claims["iat"] > now_s + policy.clock_skew_seconds:
        raise StaleProof("The DPoP proof was issued in the future.")
    if claims["iat"] < now_s - policy.max_age_seconds:
        raise StaleProof("The DPoP proof is too old.")
    # Step 12: ath is the hash of this access token, and the key is the one it is bound to.
    if claims["ath"] != access_token_hash(access_token):
        raise AccessTokenHashMismatch("The DPoP proof's ath is not the hash of the token.")
    jkt = key.thumbprint()
    if jkt != bound_jkt:
        raise KeyMismatch("The DPoP proof is signed by another key than the token's.")
    remember_until = claims["iat"] + policy.max_age_seconds + policy.clock_skew_seconds + 1
    return VerifiedProof(jkt=jkt, jti=claims["jti"], remember_until=remember_until * 1000)


def _parse(proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """RFC 9449 section 4.3 steps 1 to 4: the header and claims of one well-formed proof."""
    # Step 1: one DPoP header, hence one proof: a list of them is not a proof.
    if "," in proof or len(proof.split()) != 1:
        raise MalformedProof("Send exactly one DPoP proof.")
    # Step 2: a single, well-formed JWT (JWS compact serialization).
    if not _COMPACT_JWS.fullmatch(proof):
        raise MalformedProof("The DPoP proof is not a JWS in compact serialization.")
    try:
        extracted = jws.extract_compact(proof.encode("ascii"), registry=_REGISTRY)
        header: dict[str, Any] = dict(extracted.headers())
        claims = json.loads(extracted.payload)
    except (JoseError, ValueError, binascii.Error, RecursionError) as error:
        # RecursionError: JSON nested about 1,000 deep, which fits in a header.
        raise MalformedProof("The DPoP proof is not a well-formed JWT.") from error
    if not isinstance(claims, dict):
        raise MalformedProof("The DPoP proof's payload is not a JSON object.")
    # Step 3: every required claim (section 4.2), ath included as the proof goes with a token.
    for claim in ("jti", "htm", "htu", "iat", "ath"):
        if claim not in claims:
            raise MissingClaim(f"The DPoP proof has no {claim} claim.")
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise MissingClaim("The DPoP proof's jti is not a non-empty string.")
    if not isinstance(claims["iat"], int) or isinstance(claims["iat"], bool):
        raise MissingClaim("The DPoP proof's iat is not a number of seconds.")
    # Step 4: typ is dpop+jwt.
    if header.get("typ") != "dpop+jwt":
        raise WrongType('The DPoP proof\'s typ is not "dpop+jwt".')
    return header, claims


def _verify_signature(proof: str, header: dict[str, Any]) -> Key:
    """RFC 9449 section 4.3 steps 5 to 7: the proof is signed by the key it carries."""
    # Step 5: an asymmetric algorithm this server supports; never "none" or an HMAC.
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in DPOP_ALGORITHMS:
        raise UnacceptableAlgorithm(
            f"The DPoP proof's alg must be one of {' '.join(DPOP_ALGORITHMS)}."
        )
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise MalformedProof("The DPoP proof has no jwk header.")
    # Step 7 (before the key is used): the jwk holds no private key.
    if _PRIVATE_MEMBERS & set(jwk):
        raise PrivateKeyInProof("The DPoP proof's jwk contains a private key.")
    # Step 6: the signature verifies with the jwk, a key of the type (and curve) alg names.
    kty, crv = DPOP_ALGORITHMS[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise BadSignature(f"The DPoP proof's jwk is not a key for {alg}.")
    signing_input, _, signature = proof.rpartition(".")
    try:
        key = JWKRegistry.import_key(jwk)
        valid = _REGISTRY.algorithms[alg].verify(
            signing_input.encode("ascii"), _b64decode(signature), key
        )
    except (JoseError, ValueError, TypeError, binascii.Error) as error:
        raise BadSignature("The DPoP proof's jwk is not a usable public key.") from error
    if not valid:
        raise BadSignature("The DPoP proof's signature does not verify with its jwk.")
    return key


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def certificate_thumbprint(pem: str) -> str:
    """RFC 8705 section 3.1 `x5t#S256`: base64url(SHA-256(DER of the certificate))."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError) as error:
        raise CertificateMismatch("The client certificate is not a PEM certificate.") from error
    return b64url(hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest())


def check_certificate(pem: str | None, *, bound_thumbprint: str) -> None:
    """RFC 8705 section 3: the presented certificate's thumbprint is the bound one."""
    if not pem:
        raise CertificateMismatch("This token needs the client certificate it is bound to.")
    if certificate_thumbprint(pem) != bound_thumbprint:
        raise CertificateMismatch("The client certificate is not the one the token is bound to.")
