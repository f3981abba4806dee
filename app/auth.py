"""Credentials: the operator's admin key and secret, and each service's API key and secret.

Both travel as HTTP Basic (docs/api.md, "Parties and credentials"). Secrets are compared in
constant time (`hmac.compare_digest`), and a service's secret is stored only as a keyed
digest. Service credentials are checked against the process's replica of them
(app.credentials), without a database round trip. An unknown API key takes the same path
and the same digest computation as a known one, so response times do not tell which keys
exist.

Key rotation (app.kit.keys): a service secret is verified under the hash secret its row
names, and a service access token is looked up under every listed one. A credential that
verified under an older key moves to the current one at once, in a small transaction of its
own before the request's work (the request's own, a read perhaps, stays as it was): its
secret or value is known only while a request carries it. The move runs here, where no
transaction of the request is open yet: routes declare their unit of work after their
credentials (app.transactions).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.credentials import CredentialReplica
from app.errors import Unauthenticated
from app.events.changes import Origin
from app.kit.hashing import secret_digest, service_token_key
from app.kit.keys import HashKey, KeyRing
from app.logs import request_id
from app.services import repository as services
from app.services.repository import StoredSecret
from app.transactions import Database

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
    keys = settings_of(request).key_ring
    stored = await replica_of(request).digest_of(api_key)
    # The key the digest was made with. One no longer listed fails as an unknown API key
    # does, after the same work: one digest, one comparison against a stand-in.
    hash_key = None if stored is None else keys.get(stored.key_id)
    known = None if hash_key is None else stored
    given = secret_digest(secret, (hash_key or keys.current).secret)
    matches = hmac.compare_digest(given, _UNKNOWN_DIGEST if known is None else known.digest)
    if known is None or hash_key is None or not matches:
        raise Unauthenticated("The service credentials are wrong.")
    if hash_key != keys.current:
        moved = StoredSecret(secret_digest(secret, keys.current.secret), keys.current.id)
        await _move(request, ("service", api_key), services.rekey_secret, api_key,
                    old=known, new=moved)  # fmt: skip
    return _for_path(request, api_key, f"service:{api_key}")


async def _bearer_service(request: Request, token: str) -> ServiceCaller:
    """Authlete API v3: a service access token that the operator created."""
    if not token:
        raise Unauthenticated("The Bearer credential is empty.")
    keys = settings_of(request).key_ring
    # Its key under every listed hash secret, the current one first: against the replica
    # (a dict) an older key costs one more HMAC, not a round trip.
    candidates = [service_token_key(token, key.secret) for key in keys.keys]
    found = await replica_of(request).service_of_token(candidates)
    hash_key = _found_under(keys, candidates, found)
    if found is None or hash_key is None:
        raise Unauthenticated("The service access token is unknown or revoked.")
    token_key, owner = found
    if hash_key != keys.current:
        await _move(request, ("service-token", owner.token_id), services.rekey_access_token,
                    old_key=token_key, old_key_id=hash_key.id, new_key=candidates[0],
                    new_key_id=keys.current.id)  # fmt: skip
    return _for_path(request, owner.api_key, f"service-token:{owner.token_id}")


def _found_under(
    keys: KeyRing, candidates: list[str], found: tuple[str, services.BearerOwner] | None
) -> HashKey | None:
    """The listed key a service access token was found under, if its row names that key
    (a key found under another than its row's was not made with it)."""
    if found is None:
        return None
    token_key, owner = found
    key = keys.keys[candidates.index(token_key)]
    return key if key.id == owner.key_id else None


async def _move(
    request: Request, credential: tuple[str, object], write: Callable[..., bool],
    *args: object, **kwargs: object,
) -> None:  # fmt: skip
    """Moves a credential that verified under an older key to the current one: `write`
    (guarded: it changes the row only if it is still under the old key, and announces the
    change, so every process's replica reloads) in a transaction of its own."""
    database: Database = request.app.state.database

    async def in_own_transaction() -> None:
        async with database.transaction() as work:
            await work.run_sync(write, *args, **kwargs)

    await replica_of(request).move(credential, in_own_transaction)


def _for_path(request: Request, api_key: int, actor: str) -> ServiceCaller:
    # The v3-style path names its service; credentials of another service do not fit.
    path_service = request.path_params.get("serviceId")
    if path_service is not None and str(path_service) != str(api_key):
        raise Unauthenticated(f"These credentials are not those of service {path_service}.")
    return ServiceCaller(api_key, actor)


OperatorDep = Annotated[None, Depends(require_operator)]
ServiceDep = Annotated[ServiceCaller, Depends(require_service)]
