"""Operator endpoints: `/api/service/*` (HTTP Basic with the admin key and secret)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from app.auth import OperatorDep, ServiceDep, SessionDep
from app.http import IdPath, PageEnd, PageStart, json_body, openapi_body
from app.services import service
from app.services.schemas import (
    AccessTokenCreateIn,
    ServiceAccessTokenListOut,
    ServiceAccessTokenOut,
    ServiceIn,
    ServiceListOut,
    ServiceOut,
)

router = APIRouter(prefix="/api/service", tags=["services (operator)"])
# Authlete API v3: a service reads and updates itself at /api/{serviceId}/service/...
self_router = APIRouter(prefix="/service", tags=["services (v3)"])
ServiceBody = Annotated[ServiceIn, Depends(json_body(ServiceIn))]


@router.post(
    "/create",
    response_model=ServiceOut,
    openapi_extra=openapi_body(ServiceIn),
    response_model_exclude_none=True,
)
def create_service(
    request: Request, _: OperatorDep, session: SessionDep, body: ServiceBody
) -> ServiceOut:
    row, secret = service.create(
        session,
        spec=body.spec(),
        hash_key=request.app.state.settings.hash_key,
        now=request.app.state.clock(),
    )
    return ServiceOut.of(row, api_secret=secret)


@router.get("/get/list", response_model=ServiceListOut, response_model_exclude_none=True)
def list_services(
    _: OperatorDep, session: SessionDep, start: PageStart = 0, end: PageEnd = 5
) -> ServiceListOut:
    rows, total = service.page(session, start=start, end=end)
    return ServiceListOut(
        result_code="SERVICE_LIST_OK",
        result_message=f"{len(rows)} of {total} services.",
        start=start,
        end=end,
        total_count=total,
        services=[ServiceOut.of(row) for row in rows],
    )


@router.get("/get/{api_key}", response_model=ServiceOut, response_model_exclude_none=True)
def get_service(api_key: IdPath, _: OperatorDep, session: SessionDep) -> ServiceOut:
    return ServiceOut.of(service.get(session, api_key=api_key))


@router.post(
    "/update/{api_key}",
    response_model=ServiceOut,
    openapi_extra=openapi_body(ServiceIn),
    response_model_exclude_none=True,
)
def update_service(
    api_key: IdPath, request: Request, _: OperatorDep, session: SessionDep, body: ServiceBody
) -> ServiceOut:
    row = service.update(session, api_key=api_key, spec=body.spec(), now=request.app.state.clock())
    return ServiceOut.of(row)


@router.delete("/delete/{api_key}", status_code=204)
def delete_service(api_key: IdPath, _: OperatorDep, session: SessionDep) -> Response:
    service.delete(session, api_key=api_key)
    return Response(status_code=204)


@router.post(
    "/{api_key}/access_token/create",
    response_model=ServiceAccessTokenOut,
    response_model_exclude_none=True,
    openapi_extra=openapi_body(AccessTokenCreateIn),
)
def create_service_access_token(
    api_key: IdPath,
    request: Request,
    _: OperatorDep,
    session: SessionDep,
    body: Annotated[AccessTokenCreateIn, Depends(json_body(AccessTokenCreateIn))],
) -> ServiceAccessTokenOut:
    row, value = service.create_access_token(
        session,
        api_key=api_key,
        description=body.description,
        hash_key=request.app.state.settings.hash_key,
        now=request.app.state.clock(),
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
def list_service_access_tokens(
    api_key: IdPath, _: OperatorDep, session: SessionDep
) -> ServiceAccessTokenListOut:
    rows = service.access_tokens(session, api_key=api_key)
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
def revoke_service_access_token(
    api_key: IdPath,
    token_id: Annotated[str, Path(max_length=64)],
    _: OperatorDep,
    session: SessionDep,
) -> Response:
    service.revoke_access_token(session, api_key=api_key, token_id=token_id)
    return Response(status_code=204)


@self_router.get("/get", response_model=ServiceOut, response_model_exclude_none=True)
def get_own_service(caller: ServiceDep, session: SessionDep) -> ServiceOut:
    return ServiceOut.of(service.get(session, api_key=caller.api_key))


@self_router.post(
    "/update",
    response_model=ServiceOut,
    response_model_exclude_none=True,
    openapi_extra=openapi_body(ServiceIn),
)
def update_own_service(
    request: Request, caller: ServiceDep, session: SessionDep, body: ServiceBody
) -> ServiceOut:
    row = service.update(
        session, api_key=caller.api_key, spec=body.spec(), now=request.app.state.clock()
    )
    return ServiceOut.of(row)
