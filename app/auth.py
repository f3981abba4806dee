"""Credentials: the operator's admin key and secret, and each service's API key and secret.

Both travel as HTTP Basic (docs/api.md, "Parties and credentials"). Secrets are compared in
constant time (`hmac.compare_digest`), and a service's secret is stored only as a keyed
digest. Service credentials are checked against the process's replica of them
(app.credentials), without a database round trip. An unknown API key takes the same path
and the same digest computation as a known one, so response times do not tell which keys
exist.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.credentials import CredentialReplica
from app.errors import Unauthenticated
from app.events.changes import Origin
from app.kit.hashing import secret_digest, service_token_key
from app.logs import request_id

# Compared against when the API key is unknown, so that path does the same work.
_UNKNOWN_DIGEST = "0" * 64


@dataclass(frozen=True, slots=True)
class ServiceCaller:
    """The authorization server of one service, authenticated, and what its changes are
    recorded as (app.events): `service:<apiKey>`, or `service-token:<id>` when it came
    with an API v3 service access token."""

    api_key: int
    actor: str

    @property
    def origin(self) -> Origin:
        return Origin(self.actor, request_id.get())


def operator_origin() -> Origin:
    """What the operator's changes are recorded as."""
    return Origin("operator", request_id.get())


def basic_credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated("Send credentials: HTTP Basic, or a Bearer service access token.")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthenticated("Send credentials with HTTP Basic authentication.")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        # ValueError: bytes outside ASCII in the header (Starlette decodes it as Latin-1).
        raise Unauthenticated("The Basic credentials are not valid base64 of UTF-8.") from None
    user, colon, password = decoded.partition(":")
    if not colon:
        raise Unauthenticated("The Basic credentials have no ':' between key and secret.")
    return user, password


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def require_operator(request: Request) -> None:
    """Any of the valid operator key pairs (several during a rotation). Every pair is
    compared, in constant time, whichever matches: the time tells nothing of which."""
    key, secret = basic_credentials(request)
    matched = False
    for expected_key, expected_secret in request.app.state.operators:
        key_ok = hmac.compare_digest(key.encode(), expected_key.encode())
        secret_ok = hmac.compare_digest(secret.encode(), expected_secret.encode())
        matched |= key_ok & secret_ok
    if not matched:
        raise Unauthenticated("The operator credentials are wrong.")


def replica_of(request: Request) -> CredentialReplica:
    replica: CredentialReplica = request.app.state.credentials
    return replica


async def require_service(request: Request) -> ServiceCaller:
    """The service whose credentials the request carries; no database round trip while the
    replica is trusted (app.credentials), and no database resource held meanwhile."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return await _bearer_service(request, credential.strip())
    key, secret = basic_credentials(request)
    api_key = int(key) if key.isascii() and key.isdigit() and len(key) <= 18 else 0
    # An unparsable key is looked up as 0, which no service has: the same path as an
    # unknown one.
    stored = await replica_of(request).digest_of(api_key)
    given = secret_digest(secret, settings_of(request).hash_key)
    matches = hmac.compare_digest(given, stored or _UNKNOWN_DIGEST)
    if stored is None or not matches:
        raise Unauthenticated("The service credentials are wrong.")
    return _for_path(request, api_key, f"service:{api_key}")


async def _bearer_service(request: Request, token: str) -> ServiceCaller:
    """Authlete API v3: a service access token that the operator created."""
    if not token:
        raise Unauthenticated("The Bearer credential is empty.")
    key = service_token_key(token, settings_of(request).hash_key)
    owner = await replica_of(request).service_of_token(key)
    if owner is None:
        raise Unauthenticated("The service access token is unknown or revoked.")
    return _for_path(request, owner.api_key, f"service-token:{owner.token_id}")


def _for_path(request: Request, api_key: int, actor: str) -> ServiceCaller:
    # The v3-style path names its service; credentials of another service do not fit.
    path_service = request.path_params.get("serviceId")
    if path_service is not None and str(path_service) != str(api_key):
        raise Unauthenticated(f"These credentials are not those of service {path_service}.")
    return ServiceCaller(api_key, actor)


OperatorDep = Annotated[None, Depends(require_operator)]
ServiceDep = Annotated[ServiceCaller, Depends(require_service)]
