"""`/auth/revocation` (RFC 7009, Authlete's revocation API): the route only translates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import Field

from app.auth import ServiceDep
from app.context import ContextDep
from app.http import json_body
from app.tokens import revocation
from app.transactions import UnitOfWorkDep
from app.wire import Envelope, WireRequest

router = APIRouter(tags=["tokens"])


class RevocationIn(WireRequest):
    """Authlete's `revocation_request`. `clientId` and `clientSecret` are what the AS got in
    `Authorization: Basic`; the form's own credentials stay in `parameters`."""

    parameters: str
    client_id: str | None = Field(default=None, max_length=255)
    client_secret: str | None = Field(default=None, max_length=1024)
    client_certificate: str | None = None
    # An array in API v3, a string in v2; tokenstore reads the leaf certificate only.
    client_certificate_path: list[str] | str | None = None


class RevocationOut(Envelope):
    """Authlete's `revocation_response`. `responseContent` is the body the AS returns: an
    RFC 6749 section 5.2 error document, or null on OK (an empty 200)."""

    action: revocation.Action
    response_content: str | None


RevocationBody = Annotated[RevocationIn, Depends(json_body(RevocationIn))]


@router.post("/auth/revocation", response_model=RevocationOut)
async def revoke(
    context: ContextDep, caller: ServiceDep, body: RevocationBody, work: UnitOfWorkDep
) -> RevocationOut:
    try:
        form = revocation.read_form(
            body.parameters, client_id=body.client_id, client_secret=body.client_secret,
            certificate=body.client_certificate,
        )  # fmt: skip
    except revocation.BadForm as error:
        outcome = revocation.bad_request(str(error))
    else:
        outcome = await work.run_sync(
            revocation.revoke, service_api_key=caller.api_key, form=form,
            keys=context.keys, now=context.now, origin=caller.origin,
        )  # fmt: skip
    return RevocationOut(
        result_code=outcome.result_code,
        result_message=outcome.message,
        action=outcome.action,
        response_content=outcome.response_content,
    )
