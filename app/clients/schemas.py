"""Wire models of the client API, in Authlete's shapes (`Client`, `ClientExtension`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from app.clients.models import ClientRow
from app.clients.service import ClientSpec
from app.wire import MAX_ITEMS, PageEnvelope, WireRequest, WireResponse


class ClientExtensionIn(WireRequest):
    requestable_scopes_enabled: bool | None = None
    requestable_scopes: Annotated[list[str], Field(max_length=MAX_ITEMS)] | None = None


class ClientIn(WireRequest):
    """Authlete's `Client`; the fields tokenstore does not use are ignored."""

    client_name: str | None = Field(default=None, max_length=255)
    client_id_alias: str | None = Field(default=None, max_length=255)
    description: str | None = None
    extension: ClientExtensionIn | None = None

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
        )


class ClientExtensionOut(WireResponse):
    requestable_scopes_enabled: bool
    requestable_scopes: list[str]


class ClientOut(WireResponse):
    client_id: int
    client_id_alias: str | None = None
    client_id_alias_enabled: bool
    client_name: str | None = None
    description: str | None = None
    extension: ClientExtensionOut
    created_at: int
    modified_at: int

    @classmethod
    def of(cls, row: ClientRow) -> ClientOut:
        return cls(
            client_id=row.client_id,
            client_id_alias=row.client_id_alias,
            client_id_alias_enabled=row.client_id_alias is not None,
            client_name=row.client_name,
            description=row.description,
            extension=ClientExtensionOut(
                requestable_scopes_enabled=row.requestable_scopes_enabled,
                requestable_scopes=row.requestable_scopes,
            ),
            created_at=row.created_at,
            modified_at=row.modified_at,
        )


class ClientListOut(PageEnvelope):
    clients: list[ClientOut]
