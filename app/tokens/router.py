"""Token endpoints. Routes translate HTTP to one service call and back, nothing more."""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import ValidationError

from app import metrics
from app.auth import ServiceCaller, ServiceDep
from app.clients.schemas import ClientOut
from app.config import Settings
from app.context import ContextDep, context_of
from app.errors import ApiError, MalformedRequest
from app.http import (
    FORM_TYPE,
    JsonBody,
    PageEnd,
    PageStart,
    describe,
    form_fields,
    json_body,
    json_response,
    media_type,
)
from app.kit.keys import KeyRing
from app.services import repository as service_repository
from app.tokens import introspection, repository, service
from app.tokens.binding import ProofPolicy
from app.tokens.models import TokenRow, opened_hash
from app.tokens.rules import TokenStatus, response_expires_at
from app.tokens.schemas import (
    FORM_JSON_ONLY,
    AccessTokenOut,
    GrantType,
    IntrospectionIn,
    IntrospectionOut,
    StandardIntrospectionIn,
    StandardIntrospectionOut,
    TokenCreateIn,
    TokenCreateOut,
    TokenListOut,
    TokenRevokeIn,
    TokenRevokeOut,
    TokenUpdateIn,
    TokenUpdateOut,
    state_fields,
    update_from_form,
)
from app.transactions import UnitOfWorkDep

router = APIRouter(tags=["tokens"])
# The hot path (update and both introspections), matched before every other route:
# FastAPI tries routes in order.
hot_router = APIRouter(tags=["tokens"])
# The update is also served outside /api (Authlete's historical path, docs/api.md).
update_router = APIRouter(tags=["tokens"])


class UpdateBodyParser(JsonBody[TokenUpdateIn]):
    """JSON, or `application/x-www-form-urlencoded` as Authlete also accepts."""

    form_without = frozenset(FORM_JSON_ONLY)

    async def __call__(self, request: Request) -> TokenUpdateIn:
        if media_type(request) != FORM_TYPE:
            return await super().__call__(request)
        document = update_from_form(form_fields(await request.body()))
        try:
            return TokenUpdateIn.model_validate(document)
        except ValidationError as error:
            # describe() names fields and problems, never the values sent.
            raise MalformedRequest(f"Invalid form request: {describe(error)}") from None


UpdateBody = Annotated[TokenUpdateIn, Depends(UpdateBodyParser(TokenUpdateIn))]
CreateBody = Annotated[TokenCreateIn, Depends(json_body(TokenCreateIn))]
RevokeBody = Annotated[TokenRevokeIn, Depends(json_body(TokenRevokeIn))]
IntrospectionBody = Annotated[IntrospectionIn, Depends(json_body(IntrospectionIn))]
StandardIntrospectionBody = Annotated[
    StandardIntrospectionIn, Depends(json_body(StandardIntrospectionIn))
]


async def _update(request: Request, caller: ServiceCaller, body: TokenUpdateIn) -> Response:
    context = context_of(request)  # the hot path: no dependency to resolve
    """The body has been read and validated and the caller authenticated before the update's
    transaction opens; it commits before the answer is sent."""
    command = service.UpdateCommand(
        access_token=body.access_token,
        access_token_hash=body.access_token_hash,
        token_id=body.token_id,
        changes=body.changes(),
        refresh_token=body.refresh_token,
        refresh_token_hash=body.refresh_token_hash,
    )
    try:
        async with repository.writes(context.database, context.keys) as writes:
            result = await service.update(
                writes,
                service_api_key=caller.api_key,
                command=command,
                keys=context.keys,
                now=context.now,
                origin=caller.origin,
            )
            # Inside the transaction: an answer that cannot be built rolls the update back.
            response = json_response(
                TokenUpdateOut.of(
                    result.state, token_id=result.token_id, shown_value=result.shown_value
                )
            )
    except Exception as error:
        action = error.action if isinstance(error, ApiError) else None
        metrics.UPDATES.labels(action or "INTERNAL_SERVER_ERROR").inc()
        raise
    metrics.UPDATES.labels("OK").inc()
    return response


@update_router.post(
    "/auth/token/update",
    response_model=TokenUpdateOut,
    response_model_exclude_none=True,
)
async def update_token_legacy(request: Request, body: UpdateBody, caller: ServiceDep) -> Response:
    return await _update(request, caller, body)


@hot_router.post(
    "/auth/token/update",
    response_model=TokenUpdateOut,
    response_model_exclude_none=True,
)
async def update_token(request: Request, body: UpdateBody, caller: ServiceDep) -> Response:
    return await _update(request, caller, body)


@router.post(
    "/auth/token/create",
    response_model=TokenCreateOut,
    response_model_exclude_none=True,
)
async def create_token(
    context: ContextDep,
    caller: ServiceDep,
    work: UnitOfWorkDep,
    body: CreateBody,
) -> TokenCreateOut:
    result = await work.run_sync(
        service.create,
        service_api_key=caller.api_key,
        command=body.request(),
        keys=context.keys,
        now=context.now,
        origin=caller.origin,
    )
    row, issued = result.row, result.issued
    state = issued.state
    return TokenCreateOut(
        action="OK",
        result_code="TOKEN_CREATED",
        result_message="The token was created.",
        grant_type=body.grant_type,
        client_id=row.client_id,
        subject=row.subject,
        access_token=issued.access_value,
        expires_in=0 if state.persistent else issued.expires_in,
        expires_at=response_expires_at(state),
        refresh_token=issued.refresh_value,
        token_id=row.token_id,
        **state_fields(state),
    )


def _listed(row: TokenRow, keys: KeyRing) -> AccessTokenOut:
    state = row.state(keys)
    return AccessTokenOut(
        refresh_token_hash=opened_hash(row, keys, "refresh"),
        token_id=row.token_id,
        client_id=row.client_id,
        subject=row.subject,
        grant_type=GrantType(row.grant_type) if row.grant_type else None,
        access_token_expires_at=response_expires_at(state),
        created_at=row.created_at,
        last_refreshed_at=0,
        **state_fields(state),
    )


@router.get("/auth/token/get/list", response_model=TokenListOut, response_model_exclude_none=True)
async def list_tokens(
    context: ContextDep,
    caller: ServiceDep,
    work: UnitOfWorkDep,
    client_identifier: Annotated[str | None, Query(alias="clientIdentifier", max_length=255)] = (
        None
    ),
    subject: Annotated[str | None, Query(max_length=255)] = None,
    start: PageStart = 0,
    end: PageEnd = 5,
    token_status: Annotated[TokenStatus, Query(alias="tokenStatus")] = TokenStatus.VALID,
) -> TokenListOut:
    found = await work.run_sync(
        service.page,
        service_api_key=caller.api_key,
        client_identifier=client_identifier,
        subject=subject,
        start=start,
        end=end,
        now=context.now,
        status=token_status,
    )
    rows = found.rows
    return TokenListOut(
        result_code="TOKEN_LIST_OK",
        result_message=f"{len(rows or ())} of {found.total} tokens.",
        start=start,
        end=end,
        client=None
        if found.client is None
        else ClientOut.of(found.client).model_dump(by_alias=True, exclude_none=True),
        subject=subject,
        total_count=found.total,
        access_tokens=None if rows is None else [_listed(row, context.keys) for row in rows],
    )


@router.delete("/auth/token/delete/{accessTokenIdentifier}", status_code=204)
async def delete_token(
    context: ContextDep,
    caller: ServiceDep,
    work: UnitOfWorkDep,
    identifier: Annotated[str, Path(alias="accessTokenIdentifier", max_length=1024)],
) -> Response:
    await work.run_sync(
        service.delete,
        service_api_key=caller.api_key,
        identifier=identifier,
        keys=context.keys,
        now=context.now,
        origin=caller.origin,
    )
    return Response(status_code=204)


@router.post("/auth/token/revoke", response_model=TokenRevokeOut)
async def revoke_tokens(
    context: ContextDep,
    caller: ServiceDep,
    work: UnitOfWorkDep,
    body: RevokeBody,
) -> TokenRevokeOut:
    count = await work.run_sync(
        service.revoke,
        service_api_key=caller.api_key,
        access_identifier=body.access_token_identifier,
        refresh_identifier=body.refresh_token_identifier,
        client_identifier=body.client_identifier,
        subject=body.subject,
        keys=context.keys,
        now=context.now,
        origin=caller.origin,
    )
    return TokenRevokeOut(
        result_code="TOKEN_REVOKED", result_message=f"{count} tokens revoked.", count=count
    )


def proof_policy(settings: Settings) -> ProofPolicy:
    return ProofPolicy(
        max_age_seconds=settings.dpop_proof_max_age_seconds,
        clock_skew_seconds=settings.dpop_clock_skew_seconds,
    )


@hot_router.post(
    "/auth/introspection",
    response_model=IntrospectionOut,
    response_model_exclude_none=True,
)
async def introspect_token(
    request: Request,
    body: IntrospectionBody,
    caller: ServiceDep,
) -> Response:
    context = context_of(request)  # the hot path: no dependency to resolve
    result = await introspection.introspect(
        repository.reads(context.database, context.keys),
        service_api_key=caller.api_key,
        command=body.command(),
        keys=context.keys,
        now=context.now,
        proof_policy=proof_policy(context.settings),
    )
    return json_response(IntrospectionOut.of(result))


@hot_router.post(
    "/auth/introspection/standard",
    response_model=StandardIntrospectionOut,
)
async def introspect_token_standard(
    request: Request,
    body: StandardIntrospectionBody,
    caller: ServiceDep,
) -> Response:
    context = context_of(request)  # the hot path: no dependency to resolve
    result = await introspection.standard_introspect(
        repository.reads(context.database, context.keys),
        service_api_key=caller.api_key,
        command=body.command(),
        hash_keys=context.keys,
        now=context.now,
        # Called only when a JWT is asked for (RFC 9701): the JSON answer reads no more.
        keys=functools.partial(
            context.database.read, service_repository.introspection_keys, caller.api_key
        ),
        issuer=context.settings.issuer.replace("{serviceId}", str(caller.api_key)),
    )
    return json_response(
        StandardIntrospectionOut(
            action=result.action,
            result_code=result.result_code,
            result_message=result.message,
            response_content=result.response_content,
        )
    )
