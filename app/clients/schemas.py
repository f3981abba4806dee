"""Wire models of the client API, in Authlete's shapes (`Client`, `ClientExtension`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from app.clients.authentication import AuthMethod, ClientType
from app.clients.models import ClientRow
from app.clients.service import ClientSpec, Saved, client_type_of
from app.kit.durations import MAX_DURATION_SECONDS
from app.wire import MAX_ITEMS, Envelope, PageEnvelope, WireRequest, WireResponse

# Seconds; 0 (what Authlete's clients send when unset): the service's duration applies.
ClientDuration = Annotated[int, Field(ge=0, le=MAX_DURATION_SECONDS)]
MAX_JWKS_LENGTH = 65_536


class ClientExtensionIn(WireRequest):
    requestable_scopes_enabled: bool | None = None
    requestable_scopes: Annotated[list[str], Field(max_length=MAX_ITEMS)] | None = None
    access_token_duration: ClientDuration | None = None
    refresh_token_duration: ClientDuration | None = None


class ClientIn(WireRequest):
    """Authlete's `Client`; the fields tokenstore does not use are ignored."""

    client_name: str | None = Field(default=None, max_length=255)
    client_id_alias: str | None = Field(default=None, max_length=255)
    description: str | None = None
    extension: ClientExtensionIn | None = None
    # Client authentication. `clientSecret` is read-only (Authlete): it is ignored here and
    # set with /client/secret/refresh or /client/secret/update.
    client_type: ClientType | None = None
    token_auth_method: AuthMethod | None = None
    tls_client_auth_subject_dn: str | None = Field(default=None, max_length=1024)
    jwks: str | None = Field(default=None, max_length=MAX_JWKS_LENGTH)

    def spec(self) -> ClientSpec:
        extension = self.extension
        return ClientSpec(
            name=self.client_name,
            alias=self.client_id_alias,
            description=self.description,
            requestable_scopes_enabled=None
            if extension is None
            else extension.requestable_scopes_enabled,
            requestable_scopes=None
            if extension is None or extension.requestable_scopes is None
            else tuple(extension.requestable_scopes),
            client_type=self.client_type,
            token_auth_method=self.token_auth_method,
            tls_client_auth_subject_dn=self.tls_client_auth_subject_dn,
            jwks=self.jwks,
            access_token_duration=None if extension is None else extension.access_token_duration,
            refresh_token_duration=None if extension is None else extension.refresh_token_duration,
        )


class ClientExtensionOut(WireResponse):
    requestable_scopes_enabled: bool
    requestable_scopes: list[str]
    access_token_duration: int | None = None  # absent: the service's applies
    refresh_token_duration: int | None = None


class ClientOut(WireResponse):
    client_id: int
    client_id_alias: str | None = None
    client_id_alias_enabled: bool
    client_name: str | None = None
    description: str | None = None
    extension: ClientExtensionOut
    client_type: ClientType
    token_auth_method: AuthMethod
    # Shown once: in the answer of the request that generated it (never a digest).
    client_secret: str | None = None
    tls_client_auth_subject_dn: str | None = None
    jwks: str | None = None
    created_at: int
    modified_at: int

    @classmethod
    def saved(cls, saved: Saved) -> ClientOut:
        """A client just written, with the secret the request generated, if any."""
        out = cls.of(saved.row)
        out.client_secret = saved.secret
        return out

    @classmethod
    def of(cls, row: ClientRow) -> ClientOut:
        client_type, method = client_type_of(row)
        return cls(
            client_id=row.client_id,
            client_id_alias=row.client_id_alias,
            client_id_alias_enabled=row.client_id_alias is not None,
            client_name=row.client_name,
            description=row.description,
            extension=ClientExtensionOut(
                requestable_scopes_enabled=row.requestable_scopes_enabled,
                requestable_scopes=row.requestable_scopes,
                access_token_duration=row.access_token_duration or None,
                refresh_token_duration=row.refresh_token_duration or None,
            ),
            client_type=client_type,
            token_auth_method=method,
            tls_client_auth_subject_dn=row.tls_client_auth_subject_dn,
            jwks=row.jwks,
            created_at=row.created_at,
            modified_at=row.modified_at,
        )


class ClientListOut(PageEnvelope):
    clients: list[ClientOut]


class ClientSecretIn(WireRequest):
    """Authlete's `client_secret_update_request`."""

    client_secret: str = Field(max_length=86)


class ClientSecretOut(Envelope):
    """Authlete's `client_secret_refresh_response` / `client_secret_update_response`.
    `oldClientSecret` is always null: only a digest of the old secret was kept."""

    new_client_secret: str
    old_client_secret: str | None = None
