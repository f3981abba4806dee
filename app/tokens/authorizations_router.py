"""Connected apps (Authlete's client authorization and granted scopes), in each of the
forms Authlete documents: the subject in the path (v2), as a query parameter (v3), or in a
JSON body (v3 POST, what Authlete's Java and Python clients send)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from app.auth import ServiceCaller, ServiceDep
from app.clients.schemas import ClientOut
from app.context import ContextDep
from app.http import IdPath, PageEnd, PageStart, json_body
from app.kit.keys import KeyRing
from app.tokens import authorizations
from app.tokens.authorization_schemas import (
    AuthorizationListIn,
    AuthorizationResultOut,
    AuthorizationUpdateIn,
    AuthorizedClientListOut,
    GrantedScopesOut,
    SubjectIn,
)
from app.transactions import UnitOfWorkDep

router = APIRouter(tags=["connected apps"])

# A subject in the path is one segment: a subject holding "/" takes the other forms.
SubjectPath = Annotated[str, Path(min_length=1, max_length=255)]
SubjectQuery = Annotated[str, Query(max_length=255)]
Developer = Annotated[str | None, Query(max_length=255)]
SubjectBody = Annotated[SubjectIn, Depends(json_body(SubjectIn))]
ListBody = Annotated[AuthorizationListIn, Depends(json_body(AuthorizationListIn))]
UpdateBody = Annotated[AuthorizationUpdateIn, Depends(json_body(AuthorizationUpdateIn))]


# --- The apps a subject has authorized -------------------------------------------------------


async def _clients(
    work: UnitOfWorkDep,
    *,
    service_api_key: int,
    subject: str,
    developer: str | None,
    start: int,
    end: int,
    now: int,
) -> AuthorizedClientListOut:
    found = await work.run_sync(
        authorizations.clients_of, service_api_key=service_api_key, subject=subject,
        developer=developer, start=start, end=end, now=now,
    )  # fmt: skip
    rows = found.rows
    return AuthorizedClientListOut(
        result_code="CLIENT_AUTHORIZATION_LIST_OK",
        result_message=f"{len(rows or ())} of {found.total} clients.",
        start=start,
        end=end,
        developer=developer,
        subject=subject,
        total_count=found.total,
        clients=None if rows is None else [ClientOut.of(row) for row in rows],
    )


@router.get(
    "/client/authorization/get/list/{subject}",
    response_model=AuthorizedClientListOut,
    response_model_exclude_none=True,
)
async def list_authorized_clients_v2(
    subject: SubjectPath,
    context: ContextDep,
    caller: ServiceDep,
    work: UnitOfWorkDep,
    developer: Developer = None,
    start: PageStart = 0,
    end: PageEnd = 5,
) -> AuthorizedClientListOut:
    return await _clients(
        work, service_api_key=caller.api_key, subject=subject, developer=developer,
        start=start, end=end, now=context.now,
    )  # fmt: skip


@router.get(
    "/client/authorization/get/list",
    response_model=AuthorizedClientListOut,
    response_model_exclude_none=True,
)
async def list_authorized_clients(
    subject: SubjectQuery,
    context: ContextDep,
    caller: ServiceDep,
    work: UnitOfWorkDep,
    developer: Developer = None,
    start: PageStart = 0,
    end: PageEnd = 5,
) -> AuthorizedClientListOut:
    return await _clients(
        work, service_api_key=caller.api_key, subject=subject, developer=developer,
        start=start, end=end, now=context.now,
    )  # fmt: skip


@router.post(
    "/client/authorization/get/list",
    response_model=AuthorizedClientListOut,
    response_model_exclude_none=True,
)
async def list_authorized_clients_by_body(
    body: ListBody, context: ContextDep, caller: ServiceDep, work: UnitOfWorkDep
) -> AuthorizedClientListOut:
    return await _clients(
        work, service_api_key=caller.api_key, subject=body.subject, developer=body.developer,
        start=0 if body.start is None else body.start,
        end=5 if body.end is None else body.end, now=context.now,
    )  # fmt: skip


# --- Change or withdraw one app's authorization ---------------------------------------------


@router.post("/client/authorization/update/{client_id}", response_model=AuthorizationResultOut)
async def update_client_authorization(
    client_id: IdPath, body: UpdateBody, context: ContextDep, caller: ServiceDep,
    work: UnitOfWorkDep,
) -> AuthorizationResultOut:  # fmt: skip
    count = await work.run_sync(
        authorizations.update_scopes, service_api_key=caller.api_key, client_id=client_id,
        subject=body.subject, scopes=body.scopes, now=context.now, origin=caller.origin,
        keys=context.keys,
    )  # fmt: skip
    return AuthorizationResultOut(
        result_code="CLIENT_AUTHORIZATION_UPDATED",
        result_message=f"Updated {count} access token(s).",
        count=count,
    )


async def _delete(
    work: UnitOfWorkDep, *, caller: ServiceCaller, client_id: int, subject: str, now: int
) -> AuthorizationResultOut:
    count = await work.run_sync(
        authorizations.delete, service_api_key=caller.api_key, client_id=client_id,
        subject=subject, now=now, origin=caller.origin,
    )  # fmt: skip
    return AuthorizationResultOut(
        result_code="CLIENT_AUTHORIZATION_DELETED",
        result_message=f"Deleted {count} access token(s).",
        count=count,
    )


@router.delete(
    "/client/authorization/delete/{client_id}/{subject}", response_model=AuthorizationResultOut
)
async def delete_client_authorization_v2(
    client_id: IdPath, subject: SubjectPath, caller: ServiceDep, work: UnitOfWorkDep,
    context: ContextDep,
) -> AuthorizationResultOut:  # fmt: skip
    return await _delete(work, caller=caller, now=context.now, client_id=client_id,
                         subject=subject)  # fmt: skip


@router.delete("/client/authorization/delete/{client_id}", response_model=AuthorizationResultOut)
async def delete_client_authorization(
    client_id: IdPath, subject: SubjectQuery, caller: ServiceDep, work: UnitOfWorkDep,
    context: ContextDep,
) -> AuthorizationResultOut:  # fmt: skip
    return await _delete(work, caller=caller, now=context.now, client_id=client_id,
                         subject=subject)  # fmt: skip


@router.post("/client/authorization/delete/{client_id}", response_model=AuthorizationResultOut)
async def delete_client_authorization_by_body(
    client_id: IdPath, body: SubjectBody, caller: ServiceDep, work: UnitOfWorkDep,
    context: ContextDep,
) -> AuthorizationResultOut:  # fmt: skip
    return await _delete(work, caller=caller, now=context.now, client_id=client_id,
                         subject=body.subject)  # fmt: skip


# --- Granted scopes ---------------------------------------------------------------------------


async def _granted(
    work: UnitOfWorkDep, *, service_api_key: int, client_id: int, subject: str, now: int
) -> GrantedScopesOut:
    granted = await work.run_sync(
        authorizations.granted, service_api_key=service_api_key, client_id=client_id,
        subject=subject, now=now,
    )  # fmt: skip
    return GrantedScopesOut.of(
        granted, service_api_key=service_api_key, client_id=client_id, subject=subject
    )


@router.get(
    "/client/granted_scopes/get/{client_id}/{subject}",
    response_model=GrantedScopesOut,
    response_model_exclude_none=True,
)
async def get_granted_scopes_v2(
    client_id: IdPath,
    subject: SubjectPath,
    context: ContextDep,
    caller: ServiceDep,
    work: UnitOfWorkDep,
) -> GrantedScopesOut:
    return await _granted(work, service_api_key=caller.api_key, client_id=client_id,
                          subject=subject, now=context.now)  # fmt: skip


@router.get(
    "/client/granted_scopes/get/{client_id}",
    response_model=GrantedScopesOut,
    response_model_exclude_none=True,
)
async def get_granted_scopes(
    client_id: IdPath,
    subject: SubjectQuery,
    context: ContextDep,
    caller: ServiceDep,
    work: UnitOfWorkDep,
) -> GrantedScopesOut:
    return await _granted(work, service_api_key=caller.api_key, client_id=client_id,
                          subject=subject, now=context.now)  # fmt: skip


@router.post(
    "/client/granted_scopes/get/{client_id}",
    response_model=GrantedScopesOut,
    response_model_exclude_none=True,
)
async def get_granted_scopes_by_body(
    client_id: IdPath, body: SubjectBody, context: ContextDep, caller: ServiceDep,
    work: UnitOfWorkDep,
) -> GrantedScopesOut:  # fmt: skip
    return await _granted(work, service_api_key=caller.api_key, client_id=client_id,
                          subject=body.subject, now=context.now)  # fmt: skip


async def _clear(
    work: UnitOfWorkDep,
    *,
    caller: ServiceCaller,
    client_id: int,
    subject: str,
    now: int,
    keys: KeyRing,
) -> AuthorizationResultOut:
    count = await work.run_sync(
        authorizations.clear_granted, service_api_key=caller.api_key, client_id=client_id,
        subject=subject, now=now, origin=caller.origin, keys=keys,
    )  # fmt: skip
    return AuthorizationResultOut(
        result_code="GRANTED_SCOPES_DELETED",
        result_message=f"Removed the scopes of {count} access token(s).",
        count=count,
    )


@router.delete(
    "/client/granted_scopes/delete/{client_id}/{subject}", response_model=AuthorizationResultOut
)
async def delete_granted_scopes_v2(
    client_id: IdPath, subject: SubjectPath, context: ContextDep, caller: ServiceDep,
    work: UnitOfWorkDep,
) -> AuthorizationResultOut:  # fmt: skip
    return await _clear(work, caller=caller, keys=context.keys, client_id=client_id,
                        subject=subject, now=context.now)  # fmt: skip


@router.delete("/client/granted_scopes/delete/{client_id}", response_model=AuthorizationResultOut)
async def delete_granted_scopes(
    client_id: IdPath, subject: SubjectQuery, context: ContextDep, caller: ServiceDep,
    work: UnitOfWorkDep,
) -> AuthorizationResultOut:  # fmt: skip
    return await _clear(work, caller=caller, keys=context.keys, client_id=client_id,
                        subject=subject, now=context.now)  # fmt: skip


@router.post("/client/granted_scopes/delete/{client_id}", response_model=AuthorizationResultOut)
async def delete_granted_scopes_by_body(
    client_id: IdPath, body: SubjectBody, context: ContextDep, caller: ServiceDep,
    work: UnitOfWorkDep,
) -> AuthorizationResultOut:  # fmt: skip
    return await _clear(work, caller=caller, keys=context.keys, client_id=client_id,
                        subject=body.subject, now=context.now)  # fmt: skip
