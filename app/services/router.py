"""Operator endpoints: `/api/service/*` (HTTP Basic with the admin key and secret)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from app.auth import OperatorDep, ServiceDep, operator_origin
from app.context import ContextDep
from app.http import IdPath, PageEnd, PageStart, json_body
from app.services import keys, repository, service
from app.services.schemas import (
    AccessTokenCreateIn,
    JwksOut,
    ServiceAccessTokenListOut,
    ServiceAccessTokenOut,
    ServiceIn,
    ServiceListOut,
    ServiceOut,
)
from app.transactions import UnitOfWorkDep

router = APIRouter(prefix="/api/service", tags=["services (operator)"])
# Authlete API v3: a service reads and updates itself at /api/{serviceId}/service/...
self_router = APIRouter(prefix="/service", tags=["services (v3)"])
ServiceBody = Annotated[ServiceIn, Depends(json_body(ServiceIn))]


@router.post(
    "/create",
    response_model=ServiceOut,
    response_model_exclude_none=True,
)
async def create_service(
    context: ContextDep, _: OperatorDep, body: ServiceBody, work: UnitOfWorkDep
) -> ServiceOut:
    row, secret = await work.run_sync(
        service.create,
        spec=body.spec(),
        keys=context.keys,
        now=context.now,
    )
    return ServiceOut.of(row, api_secret=secret)


@router.get("/get/list", response_model=ServiceListOut, response_model_exclude_none=True)
async def list_services(
    _: OperatorDep, work: UnitOfWorkDep, start: PageStart = 0, end: PageEnd = 5
) -> ServiceListOut:
    rows, total = await work.run_sync(service.page, start=start, end=end)
    return ServiceListOut(
        result_code="SERVICE_LIST_OK",
        result_message=f"{len(rows)} of {total} services.",
        start=start,
        end=end,
        total_count=total,
        services=[ServiceOut.of(row) for row in rows],
    )


@router.get("/get/{api_key}", response_model=ServiceOut, response_model_exclude_none=True)
async def get_service(api_key: IdPath, _: OperatorDep, work: UnitOfWorkDep) -> ServiceOut:
    return ServiceOut.of(await work.run_sync(service.get, api_key=api_key))


@router.post(
    "/update/{api_key}",
    response_model=ServiceOut,
    response_model_exclude_none=True,
)
async def update_service(
    api_key: IdPath, context: ContextDep, _: OperatorDep, body: ServiceBody, work: UnitOfWorkDep
) -> ServiceOut:
    row = await work.run_sync(service.update, api_key=api_key, spec=body.spec(), now=context.now)
    return ServiceOut.of(row)


@router.delete("/delete/{api_key}", status_code=204)
async def delete_service(
    api_key: IdPath, _: OperatorDep, context: ContextDep, work: UnitOfWorkDep
) -> Response:
    await work.run_sync(service.delete, api_key=api_key, now=context.now, origin=operator_origin())
    return Response(status_code=204)


@router.post(
    "/{api_key}/access_token/create",
    response_model=ServiceAccessTokenOut,
    response_model_exclude_none=True,
)
async def create_service_access_token(
    api_key: IdPath,
    context: ContextDep,
    _: OperatorDep,
    body: Annotated[AccessTokenCreateIn, Depends(json_body(AccessTokenCreateIn))],
    work: UnitOfWorkDep,
) -> ServiceAccessTokenOut:
    row, value = await work.run_sync(
        service.create_access_token,
        api_key=api_key,
        description=body.description,
        keys=context.keys,
        now=context.now,
    )
    return ServiceAccessTokenOut(
        token_id=row.token_id,
        description=row.description,
        created_at=row.created_at,
        access_token=value,
    )


@router.get(
    "/{api_key}/access_token/get/list",
    response_model=ServiceAccessTokenListOut,
    response_model_exclude_none=True,
)
async def list_service_access_tokens(
    api_key: IdPath, _: OperatorDep, work: UnitOfWorkDep
) -> ServiceAccessTokenListOut:
    rows = await work.run_sync(service.access_tokens, api_key=api_key)
    return ServiceAccessTokenListOut(
        result_code="SERVICE_ACCESS_TOKEN_LIST_OK",
        result_message=f"{len(rows)} access tokens.",
        access_tokens=[
            ServiceAccessTokenOut(
                token_id=row.token_id, description=row.description, created_at=row.created_at
            )
            for row in rows
        ],
    )


@router.delete("/{api_key}/access_token/delete/{token_id}", status_code=204)
async def revoke_service_access_token(
    api_key: IdPath,
    token_id: Annotated[str, Path(max_length=64)],
    _: OperatorDep,
    work: UnitOfWorkDep,
) -> Response:
    await work.run_sync(service.revoke_access_token, api_key=api_key, token_id=token_id)
    return Response(status_code=204)


@self_router.get("/get", response_model=ServiceOut, response_model_exclude_none=True)
async def get_own_service(caller: ServiceDep, work: UnitOfWorkDep) -> ServiceOut:
    return ServiceOut.of(await work.run_sync(service.get, api_key=caller.api_key))


@self_router.post(
    "/update",
    response_model=ServiceOut,
    response_model_exclude_none=True,
)
async def update_own_service(
    context: ContextDep, caller: ServiceDep, body: ServiceBody, work: UnitOfWorkDep
) -> ServiceOut:
    row = await work.run_sync(
        service.update, api_key=caller.api_key, spec=body.spec(), now=context.now
    )
    return ServiceOut.of(row)


# --- The service's public keys (GET /service/jwks/get) ---------------------------------------

JWKS_RESPONSES: dict[int | str, dict[str, object]] = {
    204: {"description": "The service has no JWK set."}
}


async def _jwks(api_key: int, work: UnitOfWorkDep, pretty: bool) -> Response:
    """The service's JWK set, public keys only: `includePrivateKeys` is accepted and never
    honoured (docs/decisions.md)."""
    jwks, _ = await work.run_sync(repository.introspection_keys, api_key)
    document = keys.public_set(jwks)
    if document is None:
        return Response(status_code=204)
    text = json.dumps(document, indent=2 if pretty else None)
    return Response(text, media_type="application/json")


Pretty = Annotated[bool, Query()]
IncludePrivateKeys = Annotated[
    bool, Query(alias="includePrivateKeys", description="Accepted, never honoured.")
]


# One handler, served at /api/service/jwks/get and (v3) /api/{serviceId}/service/jwks/get.
@router.get("/jwks/get", response_model=JwksOut, responses=JWKS_RESPONSES)
@self_router.get("/jwks/get", response_model=JwksOut, responses=JWKS_RESPONSES)
async def get_jwks(
    caller: ServiceDep,
    work: UnitOfWorkDep,
    pretty: Pretty = False,
    include_private_keys: IncludePrivateKeys = False,
) -> Response:
    return await _jwks(caller.api_key, work, pretty)


@self_router.delete("/delete", status_code=204)
async def delete_own_service(
    caller: ServiceDep, context: ContextDep, work: UnitOfWorkDep
) -> Response:
    """Authlete API v3: a service deletes itself, with its own credentials (Basic or
    Bearer); its scopes, clients, tokens and access tokens go with it."""
    await work.run_sync(
        service.delete, api_key=caller.api_key, now=context.now, origin=caller.origin
    )
    return Response(status_code=204)
