"""Service endpoints for clients: `/api/client/*` and `/api/{serviceId}/client/*`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from app.auth import ServiceDep
from app.clients import service
from app.clients.schemas import ClientIn, ClientListOut, ClientOut, ClientSecretIn, ClientSecretOut
from app.context import ContextDep
from app.http import IdPath, PageEnd, PageStart, json_body
from app.transactions import UnitOfWorkDep

router = APIRouter(tags=["clients"])
ClientBody = Annotated[ClientIn, Depends(json_body(ClientIn))]
SecretBody = Annotated[ClientSecretIn, Depends(json_body(ClientSecretIn))]
# Authlete's `clientIdentifier`: the client ID or its alias.
ClientIdentifier = Annotated[str, Path(alias="clientIdentifier", min_length=1, max_length=255)]


@router.post(
    "/client/create",
    response_model=ClientOut,
    response_model_exclude_none=True,
)
async def create_client(
    context: ContextDep, caller: ServiceDep, body: ClientBody, work: UnitOfWorkDep
) -> ClientOut:
    saved = await work.run_sync(
        service.create,
        service_api_key=caller.api_key,
        spec=body.spec(),
        keys=context.keys,
        now=context.now,
    )
    return ClientOut.saved(saved)


@router.get("/client/get/list", response_model=ClientListOut, response_model_exclude_none=True)
async def list_clients(
    caller: ServiceDep, work: UnitOfWorkDep, start: PageStart = 0, end: PageEnd = 5
) -> ClientListOut:
    rows, total = await work.run_sync(
        service.page, service_api_key=caller.api_key, start=start, end=end
    )
    return ClientListOut(
        result_code="CLIENT_LIST_OK",
        result_message=f"{len(rows)} of {total} clients.",
        start=start,
        end=end,
        total_count=total,
        clients=[ClientOut.of(row) for row in rows],
    )


@router.get("/client/get/{client_id}", response_model=ClientOut, response_model_exclude_none=True)
async def get_client(client_id: IdPath, caller: ServiceDep, work: UnitOfWorkDep) -> ClientOut:
    return ClientOut.of(
        await work.run_sync(service.get, service_api_key=caller.api_key, client_id=client_id)
    )


@router.post(
    "/client/update/{client_id}",
    response_model=ClientOut,
    response_model_exclude_none=True,
)
async def update_client(
    client_id: IdPath,
    context: ContextDep,
    caller: ServiceDep,
    body: ClientBody,
    work: UnitOfWorkDep,
) -> ClientOut:
    saved = await work.run_sync(
        service.update,
        service_api_key=caller.api_key,
        client_id=client_id,
        spec=body.spec(),
        keys=context.keys,
        now=context.now,
    )
    return ClientOut.saved(saved)


@router.delete("/client/delete/{client_id}", status_code=204)
async def delete_client(
    client_id: IdPath, caller: ServiceDep, context: ContextDep, work: UnitOfWorkDep
) -> Response:
    await work.run_sync(
        service.delete, service_api_key=caller.api_key, client_id=client_id, now=context.now,
        origin=caller.origin,
    )  # fmt: skip
    return Response(status_code=204)


@router.get("/client/secret/refresh/{clientIdentifier}", response_model=ClientSecretOut)
async def refresh_client_secret(
    identifier: ClientIdentifier,
    context: ContextDep,
    caller: ServiceDep,
    work: UnitOfWorkDep,
) -> ClientSecretOut:
    """A new generated secret for a confidential client (Authlete's A148001)."""
    secret = await work.run_sync(
        service.set_secret, service_api_key=caller.api_key, identifier=identifier,
        secret=None, keys=context.keys, now=context.now,
    )  # fmt: skip
    return ClientSecretOut(
        result_code="CLIENT_SECRET_REFRESHED",
        result_message="The client secret has been refreshed.",
        new_client_secret=secret,
    )


@router.post("/client/secret/update/{clientIdentifier}", response_model=ClientSecretOut)
async def update_client_secret(
    identifier: ClientIdentifier,
    context: ContextDep,
    caller: ServiceDep,
    body: SecretBody,
    work: UnitOfWorkDep,
) -> ClientSecretOut:
    """The secret the caller chose for a confidential client (Authlete's A149001)."""
    secret = await work.run_sync(
        service.set_secret, service_api_key=caller.api_key, identifier=identifier,
        secret=body.client_secret, keys=context.keys, now=context.now,
    )  # fmt: skip
    return ClientSecretOut(
        result_code="CLIENT_SECRET_UPDATED",
        result_message="The client secret has been updated.",
        new_client_secret=secret,
    )
