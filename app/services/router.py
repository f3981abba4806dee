"""Operator endpoints: `/api/service/*` (HTTP Basic with the admin key and secret)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.auth import OperatorDep, SessionDep
from app.http import IdPath, PageEnd, PageStart, json_body, openapi_body
from app.services import service
from app.services.schemas import ServiceIn, ServiceListOut, ServiceOut

router = APIRouter(prefix="/api/service", tags=["services (operator)"])
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
