"""Client management by a service's authorization server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.clients import repository
from app.clients.models import ClientRow
from app.errors import Conflict, ResourceNotFound
from app.kit.paging import check_range
from app.services.service import new_api_key


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """What a create or update request says; None: not given."""

    name: str | None
    alias: str | None
    description: str | None
    requestable_scopes_enabled: bool | None
    requestable_scopes: tuple[str, ...] | None


def _check_alias(session: Session, service_api_key: int, spec: ClientSpec, client_id: int) -> None:
    if spec.alias and repository.alias_taken(
        session, service_api_key, spec.alias, other_than=client_id
    ):
        raise _alias_conflict(spec)


def _alias_conflict(spec: ClientSpec) -> Conflict:
    return Conflict(f"Another client of this service has the alias {spec.alias!r}.")


def create(session: Session, *, service_api_key: int, spec: ClientSpec, now: int) -> ClientRow:
    client_id = new_api_key()
    _check_alias(session, service_api_key, spec, client_id)
    row = ClientRow(
        client_id=client_id,
        service_api_key=service_api_key,
        client_id_alias=spec.alias or None,
        client_name=spec.name,
        description=spec.description,
        requestable_scopes_enabled=bool(spec.requestable_scopes_enabled),
        requestable_scopes=list(dict.fromkeys(spec.requestable_scopes or ())),
        created_at=now,
        modified_at=now,
    )
    try:
        repository.insert(session, row)
    except repository.AliasTaken:
        # Taken by a concurrent request after the check: the constraint is the last word.
        raise _alias_conflict(spec) from None
    return row


def get(session: Session, *, service_api_key: int, client_id: int) -> ClientRow:
    row = repository.get(session, service_api_key, client_id)
    if row is None:
        raise ResourceNotFound(f"This service has no client {client_id}.")
    return row


def page(
    session: Session, *, service_api_key: int, start: int, end: int
) -> tuple[Sequence[ClientRow], int]:
    check_range(start, end)
    rows = repository.page(session, service_api_key, offset=start, limit=end - start)
    return rows, repository.count(session, service_api_key)


def update(
    session: Session, *, service_api_key: int, client_id: int, spec: ClientSpec, now: int
) -> ClientRow:
    row = repository.get_for_update(session, service_api_key, client_id)
    if row is None:
        raise ResourceNotFound(f"This service has no client {client_id}.")
    _check_alias(session, service_api_key, spec, client_id)
    if spec.name is not None:
        row.client_name = spec.name
    if spec.alias is not None:
        row.client_id_alias = spec.alias or None
    if spec.description is not None:
        row.description = spec.description
    if spec.requestable_scopes_enabled is not None:
        row.requestable_scopes_enabled = spec.requestable_scopes_enabled
    if spec.requestable_scopes is not None:
        row.requestable_scopes = list(dict.fromkeys(spec.requestable_scopes))
    row.modified_at = now
    try:
        repository.flush(session)
    except repository.AliasTaken:
        raise _alias_conflict(spec) from None
    return row


def delete(session: Session, *, service_api_key: int, client_id: int) -> None:
    if not repository.delete_client(session, service_api_key, client_id):
        raise ResourceNotFound(f"This service has no client {client_id}.")
