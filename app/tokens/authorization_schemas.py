"""Wire models of the connected-apps endpoints (`/client/authorization/*`,
`/client/granted_scopes/*`), in Authlete's shapes and field names."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from app.clients.schemas import ClientOut
from app.tokens.rules import GrantedScopes
from app.wire import MAX_ITEMS, Envelope, PageEnvelope, WireRequest

# As stored (tokens.subject is 255 characters at most); empty is still a subject.
Subject = Annotated[str, Field(max_length=255)]
PageBound = Annotated[int, Field(ge=0, le=2**31)]


class SubjectIn(WireRequest):
    """Authlete's `client_authorization_delete_request` and the granted-scopes bodies."""

    subject: Subject


class AuthorizationListIn(WireRequest):
    """Authlete's `client_authorization_get_list_request`."""

    subject: Subject
    developer: Annotated[str, Field(max_length=255)] | None = None
    start: PageBound | None = None
    end: PageBound | None = None


class AuthorizationUpdateIn(WireRequest):
    """Authlete's `client_authorization_update_request`: `scopes` null leaves them."""

    subject: Subject
    scopes: Annotated[list[str], Field(max_length=MAX_ITEMS)] | None = None


class AuthorizedClientListOut(PageEnvelope):
    """Authlete's `client_authorization_get_list_response`; `clients` is absent when
    `end - start <= 0`."""

    developer: str | None = None
    subject: str
    clients: list[ClientOut] | None = None


class AuthorizationResultOut(Envelope):
    """Authlete's `{resultCode, resultMessage}`, with how many tokens were touched."""

    count: int


class GrantedScopesOut(Envelope):
    """Authlete's `GrantedScopesGetResponse`, computed from the live tokens."""

    service_api_key: int
    client_id: int
    subject: str
    latest_granted_scopes: list[str] | None = None
    merged_granted_scopes: list[str] | None = None
    modified_at: int

    @classmethod
    def of(
        cls, granted: GrantedScopes, *, service_api_key: int, client_id: int, subject: str
    ) -> GrantedScopesOut:
        def listed(scopes: tuple[str, ...] | None) -> list[str] | None:
            return None if scopes is None else list(scopes)

        return cls(
            result_code="GRANTED_SCOPES_OK",
            result_message="The scopes granted, as the live tokens carry them.",
            service_api_key=service_api_key,
            client_id=client_id,
            subject=subject,
            latest_granted_scopes=listed(granted.latest),
            merged_granted_scopes=listed(granted.merged),
            modified_at=granted.modified_at,
        )
