"""Stored form of tokens: one row per access token, with its optional refresh token.

No token value is ever stored. `access_hash` is the wire `accessTokenHash` (shown in lists);
lookups go through `access_key`, a keyed digest of the hash (see `hashing.lookup_key`).
"""

from __future__ import annotations

import secrets
from dataclasses import MISSING, Field, fields
from typing import Any, Protocol

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JsonDocument
from app.kit.hashing import lookup_key, refresh_lookup_key
from app.kit.keys import (
    LEGACY_KEY_ID,
    NONCE_BYTES,
    HashKey,
    KeyRing,
    is_sealed,
    open_sealed,
    seal,
)
from app.tokens.rules import Property, TokenState, element_document, element_from

# SQLite only auto-increments an INTEGER PRIMARY KEY; elsewhere the id is 64-bit.
RowId = BigInteger().with_variant(Integer(), "sqlite")


class TokenRow(Base):
    __tablename__ = "tokens"
    __table_args__ = (
        Index("ix_tokens_service_created", "service_api_key", "created_at", "id"),
        Index("ix_tokens_service_subject", "service_api_key", "subject", "created_at"),
        Index("ix_tokens_client_created", "client_id", "created_at", "id"),
        # The purge looks for tokens whose access token has expired first.
        Index("ix_tokens_access_expires_at", "access_expires_at"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    token_id: Mapped[str] = mapped_column(String(64), unique=True)
    service_api_key: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("services.api_key", ondelete="CASCADE")
    )
    client_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("clients.client_id", ondelete="CASCADE")
    )
    subject: Mapped[str | None] = mapped_column(String(255))
    grant_type: Mapped[str | None] = mapped_column(String(40))
    access_key: Mapped[str] = mapped_column(String(64), unique=True)
    # Sealed (AES-GCM, app.kit.keys), or a plain hash in rows not yet re-keyed.
    access_hash: Mapped[str] = mapped_column(String(128))
    refresh_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    refresh_hash: Mapped[str | None] = mapped_column(String(128))
    # The hash secret that made the lookup keys and sealed the hashes of this row.
    key_id: Mapped[str] = mapped_column(String(16), server_default=LEGACY_KEY_ID)
    scopes: Mapped[list[str]] = mapped_column(JsonDocument)
    access_expires_at: Mapped[int] = mapped_column(BigInteger)
    refresh_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    persistent: Mapped[bool] = mapped_column(Boolean)
    properties: Mapped[list[dict[str, Any]]] = mapped_column(JsonDocument)
    authorization_details: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonDocument)
    certificate_thumbprint: Mapped[str | None] = mapped_column(String(43))
    dpop_key_thumbprint: Mapped[str | None] = mapped_column(String(43))
    for_external_attachment: Mapped[bool] = mapped_column(Boolean)
    # Every other field of the state, by its name (see `DOCUMENT_FIELDS`); NULL in rows
    # written before the column existed, read as {}.
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)

    def state(self, keys: KeyRing) -> TokenState:
        return state_of(self, keys)

    def store(self, state: TokenState, *, refresh_hash: str | None, key: HashKey) -> None:
        """Write a state decided by the rules, and its keyed columns under `key` (the row's
        service and `token_id` are set)."""
        for name, value in stored_columns(state).items():
            setattr(self, name, value)
        keyed = keyed_columns(
            state.access_hash, refresh_hash, key=key, service_api_key=self.service_api_key,
            token_id=self.token_id,
        )  # fmt: skip
        for name, value in keyed.items():
            setattr(self, name, value)


class SealedHashes(Protocol):
    """The columns a stored hash is opened from (`opened_hash`)."""

    @property
    def service_api_key(self) -> int: ...
    @property
    def token_id(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def access_hash(self) -> str: ...
    @property
    def refresh_hash(self) -> str | None: ...


class StoredToken(SealedHashes, Protocol):
    """The columns a token's state is read from: a `TokenRow`, or a Core row of `tokens`."""

    @property
    def scopes(self) -> list[str]: ...
    @property
    def access_expires_at(self) -> int: ...
    @property
    def persistent(self) -> bool: ...
    @property
    def refresh_key(self) -> str | None: ...
    @property
    def refresh_expires_at(self) -> int | None: ...
    @property
    def properties(self) -> list[dict[str, Any]]: ...
    @property
    def authorization_details(self) -> list[dict[str, Any]] | None: ...
    @property
    def certificate_thumbprint(self) -> str | None: ...
    @property
    def dpop_key_thumbprint(self) -> str | None: ...
    @property
    def for_external_attachment(self) -> bool: ...
    @property
    def attributes(self) -> dict[str, Any] | None: ...


# --- Keyed columns: lookup keys and sealed hashes, under one key of the ring ----------------


def _context(service_api_key: int, token_id: str, kind: str) -> str:
    """What a sealed hash is bound to: its row and which hash it is (AES-GCM's associated
    data), so a sealed value copied into another row or column does not open."""
    return f"{service_api_key}:{token_id}:{kind}"


def keyed_columns(
    access_hash: str,
    refresh_hash: str | None,
    *,
    key: HashKey,
    service_api_key: int,
    token_id: str,
) -> dict[str, Any]:
    """The columns made with the hash secret, all under `key`: the lookup keys (keyed
    digests), the sealed hashes (a fresh nonce each) and the key's id."""

    def sealed(plain: str, kind: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return seal(key, plain, nonce=nonce, context=_context(service_api_key, token_id, kind))

    return {
        "access_key": lookup_key(service_api_key, access_hash, key.secret),
        "access_hash": sealed(access_hash, "access"),
        "refresh_key": None
        if refresh_hash is None
        else refresh_lookup_key(service_api_key, refresh_hash, key.secret),
        "refresh_hash": None if refresh_hash is None else sealed(refresh_hash, "refresh"),
        "key_id": key.id,
    }


KEYED_COLUMNS = ("access_key", "access_hash", "refresh_key", "refresh_hash", "key_id")


def opened_hash(row: SealedHashes, keys: KeyRing, kind: str) -> str | None:
    """A stored hash in the clear (`kind` "access" or "refresh"); "" when the row's key is
    no longer listed (such a token can no longer be found anyway). A plain hash, in a row
    not yet re-keyed, is answered as it is."""
    stored = row.access_hash if kind == "access" else row.refresh_hash
    if stored is None:
        return None
    key = keys.get(row.key_id)
    if key is None:
        return "" if is_sealed(stored) else stored
    return open_sealed(key, stored, context=_context(row.service_api_key, row.token_id, kind))


# The state's fields that have columns of their own: looked up, indexed, or there since the
# first schema. Every other field lives in the `attributes` document under its own name,
# so a new field of `TokenState` needs no column, no migration and no edit here.
COLUMN_FIELDS = frozenset({
    "access_hash", "scopes", "access_expires_at", "persistent", "refresh_expires_at",
    "properties", "authorization_details", "certificate_thumbprint", "dpop_key_thumbprint",
    "for_external_attachment",
})  # fmt: skip
DOCUMENT_FIELDS = tuple(f for f in fields(TokenState) if f.name not in COLUMN_FIELDS)


def _document_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _state_value(field: Field[Any], stored: Any) -> Any:
    if stored is None and field.default is not MISSING:
        return field.default
    return tuple(stored) if isinstance(field.default, tuple) else stored


def state_of(row: StoredToken, keys: KeyRing) -> TokenState:
    document = row.attributes or {}
    return TokenState(
        access_hash=opened_hash(row, keys, "access") or "",
        scopes=tuple(row.scopes),
        access_expires_at=row.access_expires_at,
        persistent=row.persistent,
        refresh_expires_at=row.refresh_expires_at if row.refresh_key else None,
        properties=tuple(
            Property(p["key"], p["value"], bool(p.get("hidden"))) for p in row.properties
        ),
        authorization_details=None
        if row.authorization_details is None
        else tuple(element_from(e) for e in row.authorization_details),
        certificate_thumbprint=row.certificate_thumbprint,
        dpop_key_thumbprint=row.dpop_key_thumbprint,
        for_external_attachment=row.for_external_attachment,
        **{f.name: _state_value(f, document.get(f.name)) for f in DOCUMENT_FIELDS},
    )


def stored_columns(state: TokenState) -> dict[str, Any]:
    """The columns that hold a state, but those made with the hash secret (`keyed_columns`:
    the lookup keys and the sealed hashes)."""
    return {
        "scopes": list(state.scopes),
        "access_expires_at": state.access_expires_at,
        "persistent": state.persistent,
        "refresh_expires_at": state.refresh_expires_at,
        "properties": [
            {"key": p.key, "value": p.value, "hidden": p.hidden} for p in state.properties
        ],
        "authorization_details": None
        if state.authorization_details is None
        else [element_document(e) for e in state.authorization_details],
        "certificate_thumbprint": state.certificate_thumbprint,
        "dpop_key_thumbprint": state.dpop_key_thumbprint,
        "for_external_attachment": state.for_external_attachment,
        "attributes": {
            f.name: _document_value(getattr(state, f.name))
            for f in DOCUMENT_FIELDS
            if getattr(state, f.name) != f.default
        },
    }


class DpopProofRow(Base):
    """The replay cache of DPoP proofs (RFC 9449 section 11.1), shared by every process
    that shares the database. `key` is SHA-256 over the service, the key thumbprint and
    the jti; a row is kept until the proof's iat is out of the acceptable window anyway."""

    __tablename__ = "dpop_proofs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
