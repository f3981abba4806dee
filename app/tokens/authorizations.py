"""Connected apps: what an account page shows and withdraws, over a subject's tokens.

Authlete's `/client/authorization/*` and `/client/granted_scopes/*`. tokenstore keeps no
record of grants besides the tokens themselves, so every answer is computed from the
subject's live tokens of a client (docs/decisions.md). The service owns no transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from app.clients import repository as clients
from app.clients.models import ClientRow
from app.errors import ResourceNotFound
from app.events import service as events
from app.events.changes import EventType, Origin
from app.kit.keys import KeyRing
from app.kit.paging import page_size
from app.tokens import repository
from app.tokens.rules import GrantedScopes, filter_scopes, granted_scopes
from app.tokens.service import delete_all, policy_for

log = logging.getLogger("tokenstore.tokens")


@dataclass(frozen=True, slots=True)
class ClientPage:
    rows: Sequence[ClientRow] | None  # None: `end - start <= 0` asked for the count only
    total: int


def clients_of(
    session: Session,
    *,
    service_api_key: int,
    subject: str,
    developer: str | None,
    start: int,
    end: int,
    now: int,
) -> ClientPage:
    """The clients the subject holds live tokens of. tokenstore's clients have no
    developer, so a `developer` filter matches none of them."""
    limit = page_size(start, end)
    if developer:
        return ClientPage([] if limit else None, 0)
    rows = None
    if limit:
        rows = repository.clients_of_subject(
            session, service_api_key, subject=subject, now=now, offset=start, limit=limit
        )
    total = repository.count_clients_of_subject(session, service_api_key, subject=subject, now=now)
    return ClientPage(rows, total)


def _client(session: Session, service_api_key: int, client_id: int) -> ClientRow:
    client = clients.get(session, service_api_key, client_id)
    if client is None:
        raise ResourceNotFound(f"This service has no client {client_id}.")
    return client


def update_scopes(
    session: Session,
    *,
    service_api_key: int,
    client_id: int,
    subject: str,
    scopes: Sequence[str] | None,
    now: int,
    origin: Origin,
    keys: KeyRing,
) -> int:
    """Gives every live token of the subject and the client the scopes (filtered as the
    token update filters them: rule 4); None changes nothing. Answers how many tokens."""
    client = _client(session, service_api_key, client_id)
    if scopes is None:
        return len(
            repository.granted(
                session, service_api_key, client_id=client_id, subject=subject, now=now
            )
        )
    policy = policy_for(session, service_api_key=service_api_key, client=client, scopes=scopes)
    count = _replace_scopes(
        session, service_api_key, client_id=client_id, subject=subject,
        scopes=filter_scopes(scopes, policy), now=now, origin=origin, keys=keys,
    )  # fmt: skip
    log.info("client authorization updated client_id=%s count=%d", client_id, count)
    return count


def _replace_scopes(
    session: Session,
    service_api_key: int,
    *,
    client_id: int,
    subject: str,
    scopes: Sequence[str],
    now: int,
    origin: Origin,
    keys: KeyRing,
) -> int:
    """Gives the subject's live tokens of the client the scopes, one event per token."""
    changed = repository.replace_scopes(
        session, service_api_key, client_id=client_id, subject=subject, scopes=scopes, now=now,
        keys=keys,
    )  # fmt: skip
    events.record_changes(
        session, EventType.UPDATED,
        [(token, before, replace(before, scopes=tuple(scopes))) for token, before in changed],
        origin, now=now,
    )  # fmt: skip
    return len(changed)


def delete(
    session: Session,
    *,
    service_api_key: int,
    client_id: int,
    subject: str,
    now: int,
    origin: Origin,
) -> int:
    """Deletes every token of the subject and the client; answers how many went."""
    _client(session, service_api_key, client_id)
    count = delete_all(
        session, service_api_key=service_api_key, client_id=client_id, subject=subject,
        now=now, origin=origin,
    )  # fmt: skip
    log.info("client authorization deleted client_id=%s count=%d", client_id, count)
    return count


def granted(
    session: Session, *, service_api_key: int, client_id: int, subject: str, now: int
) -> GrantedScopes:
    _client(session, service_api_key, client_id)
    tokens = repository.granted(
        session, service_api_key, client_id=client_id, subject=subject, now=now
    )
    return granted_scopes([(token.scopes, token.updated_at) for token in tokens])


def clear_granted(
    session: Session,
    *,
    service_api_key: int,
    client_id: int,
    subject: str,
    now: int,
    origin: Origin,
    keys: KeyRing,
) -> int:
    """Withdraws the granted scopes: the live tokens stay, with no scope left."""
    _client(session, service_api_key, client_id)
    count = _replace_scopes(
        session, service_api_key, client_id=client_id, subject=subject, scopes=(), now=now,
        origin=origin, keys=keys,
    )  # fmt: skip
    log.info("granted scopes deleted client_id=%s count=%d", client_id, count)
    return count
