"""Token endpoints. Routes translate HTTP to one service call and back, nothing more."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.auth import ServiceDep, SessionDep
from app.clients.schemas import ClientOut
from app.errors import MalformedRequest
from app.http import FORM_TYPE, PageEnd, PageStart, form_fields, json_body, media_type, openapi_body
from app.tokens import service
from app.tokens.models import TokenRow
from app.tokens.rules import response_expires_at
from app.tokens.schemas import (
    AccessTokenOut,
    AuthzDetailsOut,
    GrantType,
    TokenCreateIn,
    TokenCreateOut,
    TokenListOut,
    TokenUpdateIn,
    TokenUpdateOut,
    properties_out,
    update_from_form,
)

router = APIRouter(tags=["tokens"])
# The update is also served outside /api (Authlete's historical path, API.md).
update_router = APIRouter(tags=["tokens"])


async def update_body(request: Request) -> TokenUpdateIn:
    """JSON, or `application/x-www-form-urlencoded` as Authlete also accepts (API.md)."""
    if media_type(request) == FORM_TYPE:
        document = update_from_form(form_fields(await request.body()))
        try:
            return TokenUpdateIn.model_validate(document)
        except ValueError as error:
            raise MalformedRequest(f"Invalid form request: {error}") from None
    return await json_body(TokenUpdateIn)(request)


UpdateBody = Annotated[TokenUpdateIn, Depends(update_body)]
UPDATE_DOC = openapi_body(TokenUpdateIn, form=True)


def _update(
    request: Request, caller_api_key: int, session: SessionDep, body: TokenUpdateIn
) -> TokenUpdateOut:
    result = service.update(
        session,
        service_api_key=caller_api_key,
        command=service.UpdateCommand(
            access_token=body.access_token,
            access_token_hash=body.access_token_hash,
            token_id=body.token_id,
            changes=body.changes(),
        ),
        hash_key=request.app.state.settings.hash_key,
        now=request.app.state.clock(),
    )
    return TokenUpdateOut.of(result.state, token_id=result.token_id, shown_value=result.shown_value)


@update_router.post(
    "/auth/token/update",
    response_model=TokenUpdateOut,
    response_model_exclude_none=True,
    openapi_extra=UPDATE_DOC,
)
def update_token_legacy(
    request: Request, caller: ServiceDep, session: SessionDep, body: UpdateBody
) -> TokenUpdateOut:
    return _update(request, caller.api_key, session, body)


@router.post(
    "/auth/token/update",
    response_model=TokenUpdateOut,
    response_model_exclude_none=True,
    openapi_extra=UPDATE_DOC,
)
def update_token(
    request: Request, caller: ServiceDep, session: SessionDep, body: UpdateBody
) -> TokenUpdateOut:
    return _update(request, caller.api_key, session, body)


@router.post(
    "/auth/token/create",
    response_model=TokenCreateOut,
    response_model_exclude_none=True,
    openapi_extra=openapi_body(TokenCreateIn),
)
def create_token(
    request: Request,
    caller: ServiceDep,
    session: SessionDep,
    body: Annotated[TokenCreateIn, Depends(json_body(TokenCreateIn))],
) -> TokenCreateOut:
    result = service.create(
        session,
        service_api_key=caller.api_key,
        command=service.CreateCommand(
            grant_type=body.grant_type.value if body.grant_type else None,
            client_id=body.client_id,
            subject=body.subject,
            scopes=tuple(body.scopes or ()),
            access_token_duration=body.access_token_duration,
            refresh_token_duration=body.refresh_token_duration,
            properties=tuple(p.input() for p in body.properties or ()),
            access_token=body.access_token,
            refresh_token=body.refresh_token,
            access_token_persistent=bool(body.access_token_persistent),
            certificate_thumbprint=body.certificate_thumbprint,
            dpop_key_thumbprint=body.dpop_key_thumbprint,
            authorization_details=None
            if body.authorization_details is None
            else body.authorization_details.inputs(),
            for_external_attachment=bool(body.for_external_attachment),
        ),
        hash_key=request.app.state.settings.hash_key,
        now=request.app.state.clock(),
    )
    state, row = result.state, result.row
    return TokenCreateOut(
        action="OK",
        result_code="TOKEN_CREATED",
        result_message="The token was created.",
        grant_type=body.grant_type,
        client_id=row.client_id,
        subject=row.subject,
        scopes=list(state.scopes),
        access_token=result.access_token,
        access_token_hash=state.access_hash,
        token_type=state.token_type,
        expires_in=0 if state.persistent else result.expires_in,
        expires_at=response_expires_at(state),
        access_token_persistent=state.persistent,
        refresh_token=result.refresh_token,
        refresh_token_expires_at=state.refresh_expires_at or 0,
        properties=properties_out(state),
        authorization_details=AuthzDetailsOut.of(state.authorization_details),
        certificate_thumbprint=state.certificate_thumbprint,
        dpop_key_thumbprint=state.dpop_key_thumbprint,
        for_external_attachment=state.for_external_attachment,
        token_id=row.token_id,
    )


def _listed(row: TokenRow) -> AccessTokenOut:
    state = row.state()
    return AccessTokenOut(
        access_token_hash=row.access_hash,
        refresh_token_hash=row.refresh_hash,
        token_id=row.token_id,
        client_id=row.client_id,
        subject=row.subject,
        grant_type=GrantType(row.grant_type) if row.grant_type else None,
        scopes=list(state.scopes),
        token_type=state.token_type,
        access_token_expires_at=response_expires_at(state),
        access_token_persistent=state.persistent,
        refresh_token_expires_at=state.refresh_expires_at or 0,
        created_at=row.created_at,
        last_refreshed_at=0,
        properties=properties_out(state),
        authorization_details=AuthzDetailsOut.of(state.authorization_details),
        certificate_thumbprint=state.certificate_thumbprint,
        dpop_key_thumbprint=state.dpop_key_thumbprint,
        for_external_attachment=state.for_external_attachment,
    )


@router.get("/auth/token/get/list", response_model=TokenListOut, response_model_exclude_none=True)
def list_tokens(
    request: Request,
    caller: ServiceDep,
    session: SessionDep,
    client_identifier: Annotated[str | None, Query(alias="clientIdentifier", max_length=255)] = (
        None
    ),
    subject: Annotated[str | None, Query(max_length=255)] = None,
    start: PageStart = 0,
    end: PageEnd = 5,
) -> TokenListOut:
    found = service.page(
        session,
        service_api_key=caller.api_key,
        client_identifier=client_identifier,
        subject=subject,
        start=start,
        end=end,
        now=request.app.state.clock(),
    )
    return TokenListOut(
        result_code="TOKEN_LIST_OK",
        result_message=f"{len(found.rows)} of {found.total} tokens.",
        start=start,
        end=end,
        client=None
        if found.client is None
        else ClientOut.of(found.client).model_dump(by_alias=True, exclude_none=True),
        subject=subject,
        total_count=found.total,
        access_tokens=[_listed(row) for row in found.rows],
    )
