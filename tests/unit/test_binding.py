"""DPoP proofs (RFC 9449 section 4.3) and certificates (RFC 8705): the RFCs' own examples,
then every check broken one at a time, with proofs made by `cryptography`, not joserfc."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import JWKRegistry

from app.tokens import binding
from app.tokens.binding import ProofPolicy, verify_dpop_proof
from tests.proofs import ProofMaker, self_signed_certificate

TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"  # RFC 9449 section 7.1's example token
HTU = "https://rs.example.com/resource"
POLICY = ProofPolicy(max_age_seconds=60, clock_skew_seconds=5)

# RFC 7638 section 3.1: the example RSA key and its thumbprint.
RFC7638_KEY: dict[str, Any] = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJ"
    "ECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Q"
    "vzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6"
    "WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

# RFC 9449 section 5, figure 5: a proof for POST https://server.example.com/token, and the
# jkt its key has in the RFC's examples (section 6.1).
RFC9449_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklD"
    "UkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUw"
    "Q2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Im"
    "h0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0"
    "zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
RFC9449_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
RFC9449_IAT_MS = 1_562_262_616_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_the_rfc7638_example_thumbprint() -> None:
    assert JWKRegistry.import_key(RFC7638_KEY).thumbprint() == RFC7638_THUMBPRINT


def test_the_rfc9449_example_proof_passes_every_check_up_to_the_token_binding() -> None:
    # The RFC's proof goes to a token endpoint, so it has no ath: every check before ath
    # passes, with the signature verified, and only the missing ath stops it.
    with pytest.raises(binding.MissingClaim, match="ath"):
        verify_dpop_proof(
            RFC9449_PROOF, htm="POST", htu="https://server.example.com/token",
            access_token=TOKEN, bound_jkt=RFC9449_JKT, now_ms=RFC9449_IAT_MS, policy=POLICY,
        )  # fmt: skip


def test_the_rfc9449_example_key_has_the_rfcs_jkt() -> None:
    header = jws.extract_compact(RFC9449_PROOF.encode()).headers()
    assert JWKRegistry.import_key(header["jwk"]).thumbprint() == RFC9449_JKT


def test_the_rfc9449_example_signature_verifies() -> None:
    header = jws.extract_compact(RFC9449_PROOF.encode()).headers()
    key = JWKRegistry.import_key(header["jwk"])
    assert jws.deserialize_compact(RFC9449_PROOF, key, algorithms=["ES256"]).payload


def test_ath_is_base64url_of_sha256_not_hex() -> None:
    # RFC 9449 section 7.1: the example token's ath.
    assert binding.access_token_hash(TOKEN) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


@pytest.mark.parametrize("kind", ["EC", "RSA", "RSA-PSS", "OKP"])
def test_a_sound_proof_passes_for_every_key_type(kind: str) -> None:
    maker = ProofMaker(kind)
    verified = verify_dpop_proof(
        maker.proof(token=TOKEN), htm="GET", htu=HTU, access_token=TOKEN,
        bound_jkt=maker.jkt(), now_ms=now_ms(), policy=POLICY,
    )  # fmt: skip
    assert verified.jkt == maker.jkt()
    assert verified.remember_until > now_ms()


MAKER = ProofMaker("EC")


def broken(maker: ProofMaker) -> list[tuple[str, Any, type[binding.ProofError]]]:
    """Each RFC 9449 section 4.3 check, broken alone: (name, proof or maker args, error)."""
    other = ProofMaker("EC")
    good = maker.proof(token=TOKEN)
    head, body, sig = good.split(".")
    bad = binding  # the error classes, short for the table below
    hex_ath = hashlib.sha256(TOKEN.encode()).hexdigest()
    return [
        ("1: two proofs", good + "," + good, bad.MalformedProof),
        ("2: not a JWS", "not.a-jwt", bad.MalformedProof),
        ("2: header not JSON", "bm90LWpzb24." + body + "." + sig, bad.MalformedProof),
        ("3: no jti", {"drop": ("jti",)}, bad.MissingClaim),
        ("3: no htm", {"drop": ("htm",)}, bad.MissingClaim),
        ("3: no htu", {"drop": ("htu",)}, bad.MissingClaim),
        ("3: no iat", {"drop": ("iat",)}, bad.MissingClaim),
        ("3: no ath", {"drop": ("ath",)}, bad.MissingClaim),
        ("3: iat as a string", {"claims": {"iat": str(int(time.time()))}}, bad.MissingClaim),
        ("4: typ JWT", {"header": {"typ": "JWT"}}, bad.WrongType),
        ("4: no typ", {"drop": ("typ",)}, bad.WrongType),
        ("5: alg none", {"header": {"alg": "none"}, "signature": b""}, bad.UnacceptableAlgorithm),
        ("5: alg HS256", {"header": {"alg": "HS256"}}, bad.UnacceptableAlgorithm),
        ("6: signed by another key", {"header": {"jwk": other.public_jwk()}}, bad.BadSignature),
        ("6: signature altered", head + "." + body + "." + sig[::-1], bad.BadSignature),
        ("6: alg of another family", {"header": {"alg": "RS256"}}, bad.BadSignature),
        ("6: no jwk", {"drop": ("jwk",)}, bad.MalformedProof),
        ("7: private key in jwk", {"header": {"jwk": maker.private_jwk()}}, bad.PrivateKeyInProof),
        ("8: htm POST for GET", {"htm": "POST"}, bad.MethodMismatch),
        ("8: htm lower case", {"htm": "get"}, bad.MethodMismatch),
        ("9: another path", {"htu": "https://rs.example.com/other"}, bad.UriMismatch),
        ("9: another host", {"htu": "https://evil.example.com/resource"}, bad.UriMismatch),
        ("9: http for https", {"htu": "http://rs.example.com/resource"}, bad.UriMismatch),
        # Relative to when the case runs, not to when this table was built.
        ("11: iat too old", lambda: {"claims": {"iat": int(time.time()) - 61}}, bad.StaleProof),
        ("11: iat in the future", lambda: {"claims": {"iat": int(time.time()) + 60}},
         bad.StaleProof),
        ("12: ath of another token", {"claims": {"ath": "x" * 43}}, bad.AccessTokenHashMismatch),
        ("12: ath as hex", {"claims": {"ath": hex_ath}}, bad.AccessTokenHashMismatch),
    ]  # fmt: skip


BROKEN = broken(MAKER)


@pytest.mark.parametrize(("case", "error"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_each_check_of_rfc9449_section_4_3_rejects_when_broken_alone(
    case: Any, error: type[binding.ProofError]
) -> None:
    if callable(case):
        case = case()
    proof = case if isinstance(case, str) else MAKER.proof(token=TOKEN, **case)
    with pytest.raises(error):
        verify_dpop_proof(
            proof, htm="GET", htu=HTU, access_token=TOKEN, bound_jkt=MAKER.jkt(),
            now_ms=now_ms(), policy=POLICY,
        )  # fmt: skip


def test_a_proof_by_another_key_than_the_bound_one_is_a_key_mismatch() -> None:
    with pytest.raises(binding.KeyMismatch):
        verify_dpop_proof(
            MAKER.proof(token=TOKEN), htm="GET", htu=HTU, access_token=TOKEN,
            bound_jkt=ProofMaker("EC").jkt(), now_ms=now_ms(), policy=POLICY,
        )  # fmt: skip


@pytest.mark.parametrize(
    "htu",
    [
        "https://rs.example.com/resource?x=1",
        "https://rs.example.com/resource#frag",
        "HTTPS://RS.EXAMPLE.COM/resource",
        "https://rs.example.com:443/resource",
        "https://rs.example.com/%72esource",
    ],
    ids=[
        "query ignored",
        "fragment ignored",
        "case of scheme and host",
        "default port",
        "encoding",
    ],
)
def test_htu_matches_after_rfc3986_normalization(htu: str) -> None:
    verify_dpop_proof(
        MAKER.proof(token=TOKEN, htu=htu), htm="GET", htu=HTU, access_token=TOKEN,
        bound_jkt=MAKER.jkt(), now_ms=now_ms(), policy=POLICY,
    )  # fmt: skip


def test_a_certificate_thumbprint_is_sha256_of_its_der() -> None:
    pem, thumbprint = self_signed_certificate()
    assert binding.certificate_thumbprint(pem) == thumbprint
    binding.check_certificate(pem, bound_thumbprint=thumbprint)


@pytest.mark.parametrize("presented", [None, "", "-----BEGIN CERTIFICATE-----\nnope\n", "other"])
def test_a_missing_wrong_or_broken_certificate_is_refused(presented: str | None) -> None:
    _, thumbprint = self_signed_certificate()
    if presented == "other":
        presented, _ = self_signed_certificate("someone-else")
    with pytest.raises(binding.CertificateMismatch):
        binding.check_certificate(presented, bound_thumbprint=thumbprint)
