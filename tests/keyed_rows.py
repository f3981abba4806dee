"""Keyed rows written straight into a database under chosen hash secrets, as a deployment
that rotates its secrets holds them (app.keyring): tokens sealed under a key, or plain as
written before sealing, and a service whose API secret verifies under a key."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.clients.models import ClientRow
from app.kit.hashing import lookup_key, refresh_lookup_key, secret_digest, token_hash
from app.kit.keys import HashKey, KeyRing
from app.services.models import ServiceAccessTokenRow, ServiceRow
from app.tokens.models import TokenRow, keyed_columns

K1 = HashKey.of("k1", b"first-hash-secret-" + b"1" * 32)
K2 = HashKey.of("k2", b"second-hash-secret-" + b"2" * 32)
DEFAULT = HashKey.of("default", b"the-single-hash-secret-" + b"d" * 32)
SERVICE_SECRET = "service-secret-" + "s" * 32
FAR = 4_000_000_000_000
NOW = 1_900_000_000_000
_API_KEYS = itertools.count(7_000_000_001)


def environment_value(*keys: HashKey) -> str:
    """TOKENSTORE_HASH_SECRETS for these keys, the first current."""
    return ",".join(f"{key.id}:{key.secret.decode()}" for key in keys)


@dataclass(frozen=True, slots=True)
class Tenant:
    api_key: int
    client_id: int

    @property
    def auth(self) -> tuple[str, str]:
        return str(self.api_key), SERVICE_SECRET


def seed_tenant(engine: Engine, *, key: HashKey) -> Tenant:
    """A service whose secret (`SERVICE_SECRET`) is under `key`, and a client of it."""
    api_key = next(_API_KEYS)
    with Session(engine) as session, session.begin():
        session.add(
            ServiceRow(
                api_key=api_key,
                secret_digest=secret_digest(SERVICE_SECRET, key.secret),
                secret_key_id=key.id,
                name="rotation",
                access_token_duration=86_400,
                refresh_token_duration=864_000,
                created_at=NOW,
                modified_at=NOW,
            )
        )
        session.flush()
        session.add(
            ClientRow(
                client_id=api_key + 1,
                service_api_key=api_key,
                requestable_scopes_enabled=False,
                requestable_scopes=[],
                client_type="PUBLIC",
                token_auth_method="NONE",
                created_at=NOW,
                modified_at=NOW,
            )
        )
    return Tenant(api_key, api_key + 1)


def seed_credentials(
    engine: Engine, tenant: Tenant, *, key: HashKey, access_tokens: int, client_secrets: int
) -> None:
    """Service access tokens and confidential clients of the tenant, keyed under `key` (the
    values are never used: these rows are counted, not presented)."""
    with Session(engine) as session, session.begin():
        for n in range(access_tokens):
            session.add(
                ServiceAccessTokenRow(
                    token_id=f"{tenant.api_key}-{key.id}-{n}",
                    service_api_key=tenant.api_key,
                    token_key=f"{tenant.api_key}-{key.id}-{n}",
                    key_id=key.id,
                    created_at=NOW,
                )
            )
        for n in range(client_secrets):
            session.add(
                ClientRow(
                    client_id=tenant.api_key * 10 + n + 2,
                    service_api_key=tenant.api_key,
                    requestable_scopes_enabled=False,
                    requestable_scopes=[],
                    client_type="CONFIDENTIAL",
                    token_auth_method="CLIENT_SECRET_BASIC",
                    client_secret_digest=f"{key.id}-{n}",
                    secret_key_id=key.id,
                    created_at=NOW,
                    modified_at=NOW,
                )
            )


@dataclass(frozen=True, slots=True)
class SeededToken:
    token_id: str
    access: str
    refresh: str | None


def seed_tokens(
    engine: Engine,
    tenant: Tenant,
    *,
    key: HashKey,
    count: int,
    prefix: str,
    sealed: bool = True,
    refresh: bool = True,
    values: Sequence[tuple[str, str | None]] = (),
) -> list[SeededToken]:
    """`count` tokens whose keyed columns are under `key`: sealed, or (`sealed=False`) the
    plain hashes of a row written before sealing. Their values are made up, or `values`
    (access, refresh) in turn."""
    seeded = []
    with Session(engine) as session, session.begin():
        for n in range(count):
            access, refresh_value = (
                values[n]
                if n < len(values)
                else (f"{prefix}-access-{n}", f"{prefix}-refresh-{n}" if refresh else None)
            )
            token = SeededToken(f"{prefix}-{n}", access, refresh_value)
            session.add(TokenRow(**_columns(tenant, token, key, sealed=sealed)))
            seeded.append(token)
    return seeded


def _columns(tenant: Tenant, token: SeededToken, key: HashKey, *, sealed: bool) -> dict[str, Any]:
    access = token_hash(token.access)
    refresh = None if token.refresh is None else token_hash(token.refresh)
    if sealed:
        keyed = keyed_columns(
            access, refresh, key=key, service_api_key=tenant.api_key, token_id=token.token_id
        )
    else:
        keyed = {
            "access_key": lookup_key(tenant.api_key, access, key.secret),
            "access_hash": access,
            "refresh_key": None
            if refresh is None
            else refresh_lookup_key(tenant.api_key, refresh, key.secret),
            "refresh_hash": refresh,
            "key_id": key.id,
        }
    return {
        "token_id": token.token_id, "service_api_key": tenant.api_key,
        "client_id": tenant.client_id, "subject": "s", "grant_type": "PASSWORD", "scopes": [],
        "access_expires_at": FAR, "refresh_expires_at": FAR if refresh else None,
        "persistent": False, "properties": [], "for_external_attachment": False,
        "created_at": NOW, "updated_at": NOW, **keyed,
    }  # fmt: skip


def stored_tokens(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every token row, by token id."""
    with engine.connect() as connection:
        rows = connection.execute(select(TokenRow.__table__)).mappings()
        return {row["token_id"]: dict(row) for row in rows}


def ring(*keys: HashKey) -> KeyRing:
    return KeyRing(keys)
