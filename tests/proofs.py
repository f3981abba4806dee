"""DPoP proofs and certificates made without the project's JOSE library.

Keys, signatures and thumbprints come from `cryptography` and the RFCs' own formulas, so
the tests do not check joserfc against itself.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64_int(value: int, length: int | None = None) -> str:
    size = length or (value.bit_length() + 7) // 8
    return b64(value.to_bytes(size, "big"))


class ProofMaker:
    """A client key pair that signs DPoP proofs (RFC 9449 section 4.2)."""

    def __init__(self, kind: str = "EC") -> None:
        self.kind = kind
        self.key: Any
        if kind == "EC":
            self.key = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"
        elif kind in ("RSA", "RSA-PSS"):
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256" if kind == "RSA" else "PS256"
        elif kind == "OKP":
            self.key = ed25519.Ed25519PrivateKey.generate()
            self.alg = "EdDSA"
        else:
            raise ValueError(kind)

    def public_jwk(self) -> dict[str, str]:
        public = self.key.public_key()
        if self.kind == "EC":
            numbers = public.public_numbers()
            return {"kty": "EC", "crv": "P-256", "x": b64_int(numbers.x, 32),
                    "y": b64_int(numbers.y, 32)}  # fmt: skip
        if self.kind == "OKP":
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
        numbers = public.public_numbers()
        return {"kty": "RSA", "n": b64_int(numbers.n), "e": b64_int(numbers.e)}

    def private_jwk(self) -> dict[str, str]:
        jwk = self.public_jwk()
        if self.kind == "EC":
            jwk["d"] = b64_int(self.key.private_numbers().private_value, 32)
        elif self.kind in ("RSA", "RSA-PSS"):
            jwk["d"] = b64_int(self.key.private_numbers().d)
        return jwk

    def jkt(self) -> str:
        """RFC 7638 section 3: SHA-256 over the required members, sorted, no whitespace."""
        jwk = self.public_jwk()
        required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"),
                    "OKP": ("crv", "kty", "x")}[jwk["kty"]]  # fmt: skip
        canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"),
                               sort_keys=True)  # fmt: skip
        return b64(hashlib.sha256(canonical.encode()).digest())

    def sign(self, signing_input: bytes, alg: str) -> bytes:
        if alg.startswith("ES"):
            r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if alg.startswith("RS"):
            return bytes(self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))
        if alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            return bytes(self.key.sign(signing_input, pss, hashes.SHA256()))
        if alg == "EdDSA":
            return bytes(self.key.sign(signing_input))
        return b""

    def proof(
        self,
        *,
        token: str,
        htm: str = "GET",
        htu: str = "https://rs.example.com/resource",
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        signature: bytes | None = None,
    ) -> str:
        head: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk()}
        head.update(header or {})
        body: dict[str, Any] = {
            "jti": secrets.token_urlsafe(12),
            "htm": htm,
            "htu": htu,
            "iat": int(time.time()),
            "ath": b64(hashlib.sha256(token.encode()).digest()),
        }
        body.update(claims or {})
        for name in drop:
            head.pop(name, None)
            body.pop(name, None)
        signing_input = (
            b64(json.dumps(head).encode()) + "." + b64(json.dumps(body).encode())
        ).encode()
        sig = self.sign(signing_input, self.alg) if signature is None else signature
        return signing_input.decode() + "." + b64(sig)


def self_signed_certificate(common_name: str = "client.example.com") -> tuple[str, str]:
    """A real self-signed certificate in PEM, and its RFC 8705 x5t#S256 thumbprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    der = certificate.public_bytes(serialization.Encoding.DER)
    return pem, b64(hashlib.sha256(der).digest())
