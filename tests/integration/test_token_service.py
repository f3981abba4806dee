"""The token service and repository on a real database, with an explicit `now`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from sqlalchemy.orm import Session

from app.clients import service as clients
from app.clients.service import ClientSpec
from app.errors import BadRequestAction, TokenNotFound
from app.events.changes import Origin
from app.kit.hashing import lookup_key, token_hash
from app.kit.keys import KeyRing
from app.services import service as services
from app.services.service import ScopeSpec, ServiceSpec
from app.tokens import repository
from app.tokens import service as tokens
from app.tokens.rules import IssueRequest, UpdateRequest, is_alive

T = TypeVar("T")

NOW = 1_800_000_000_000
KEY = b"k" * 32
KEYS = KeyRing.single(KEY)
ORIGIN = Origin("test")


def tenant(session: Session) -> tuple[int, int]:
    row, _secret = services.create(
        session,
        spec=ServiceSpec(
            name="s",
            description=None,
            scopes=(
                ScopeSpec("read", None, (("access_token.duration", "60"),)),
                ScopeSpec("write", None, (("access_token.duration", "30"),)),
            ),
            access_token_duration=3600,
            refresh_token_duration=7200,
        ),
        keys=KEYS,
        now=NOW,
    )
    client = clients.create(
        session,
        service_api_key=row.api_key,
        spec=ClientSpec(None, None, None, None, None),
        keys=KEYS,
        now=NOW,
    ).row
    return row.api_key, client.client_id


def create(session: Session, api_key: int, client_id: int, **changes: Any) -> tokens.CreateResult:
    command = IssueRequest(
        grant_type="AUTHORIZATION_CODE",
        client_id=client_id,
        subject="alice",
        scopes=("read",),
        access_token_duration=None,
        refresh_token_duration=None,
        properties=(),
        access_token=None,
        refresh_token=None,
        access_token_persistent=False,
        certificate_thumbprint=None,
        dpop_key_thumbprint=None,
        authorization_details=None,
        for_external_attachment=False,
    )
    return tokens.create(
        session,
        service_api_key=api_key,
        command=replace(command, **changes),
        keys=KEYS,
        now=NOW,
        origin=ORIGIN,
    )


class SessionWork:
    """The unit of work a route would get, over the test's own session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(self._session, *args, **kwargs)


def update(
    session: Session, api_key: int, value: str, now: int, **changes: object
) -> tokens.UpdateResult:
    return asyncio.run(
        tokens.update(
            repository.SessionTokens(SessionWork(session), KEYS),
            service_api_key=api_key,
            command=tokens.UpdateCommand(value, None, None, UpdateRequest(**changes)),  # type: ignore[arg-type]
            keys=KEYS,
            now=now,
            origin=ORIGIN,
        )
    )


def locked(session: Session, api_key: int, token_id: str) -> repository.LockedToken | None:
    target = repository.load_for_update(
        session, api_key, access_key=None, token_id=token_id, scope_names=None, keys=KEYS
    )
    return None if target is None else target.token


def test_creation_uses_the_service_durations_and_stores_no_value(session: Session) -> None:
    api_key, client_id = tenant(session)
    created = create(session, api_key, client_id)
    assert created.issued.state.access_expires_at == NOW + 3_600_000
    assert created.issued.state.refresh_expires_at == NOW + 7_200_000
    row = created.row
    stored_text = " ".join(str(v) for v in vars(row).values())
    assert created.issued.access_value not in stored_text
    assert created.issued.refresh_value is not None
    assert created.issued.refresh_value not in stored_text
    assert row.access_key == lookup_key(api_key, token_hash(created.issued.access_value), KEY)


def test_scope_durations_count_from_the_given_now(session: Session) -> None:
    api_key, client_id = tenant(session)
    created = create(session, api_key, client_id)
    later = NOW + 1_000
    result = update(
        session,
        api_key,
        created.issued.access_value,
        later,
        scopes=("read", "write"),
        access_expiry_on_scope_update=True,
    )
    assert result.state.access_expires_at == later + 30_000


def test_expiry_is_now_at_or_after_expires_at_in_service_and_in_sql(session: Session) -> None:
    api_key, client_id = tenant(session)
    created = create(session, api_key, client_id, grant_type="CLIENT_CREDENTIALS", subject=None)
    expires_at = created.issued.state.access_expires_at
    # One millisecond before: found, by the service and by the SQL listing.
    update(session, api_key, created.issued.access_value, expires_at - 1, scopes=())
    listed = repository.page(
        session, api_key, client_id=None, subject=None, now=expires_at - 1, offset=0, limit=10
    )
    assert [r.token_id for r in listed] == [created.row.token_id]
    # At the instant itself: expired for both.
    with pytest.raises(TokenNotFound):
        update(session, api_key, created.issued.access_value, expires_at, scopes=())
    assert not repository.page(
        session, api_key, client_id=None, subject=None, now=expires_at, offset=0, limit=10
    )


@pytest.mark.parametrize(
    ("access_offset", "refresh_offset", "persistent"),
    [(-1, -1, False), (0, 5, False), (5, -5, False), (-5, 0, False), (-5, -5, True)],
)
def test_the_sql_alive_filter_agrees_with_the_rules(
    session: Session, access_offset: int, refresh_offset: int, persistent: bool
) -> None:
    api_key, client_id = tenant(session)
    created = create(session, api_key, client_id)
    row = created.row
    row.access_expires_at = NOW + access_offset
    row.refresh_expires_at = NOW + refresh_offset
    row.persistent = persistent
    session.flush()
    in_sql = bool(
        repository.page(session, api_key, client_id=None, subject=None, now=NOW, offset=0, limit=5)
    )
    assert in_sql is is_alive(row.state(KEYS), NOW)


def test_a_rejected_update_leaves_the_row_as_it_was(session: Session) -> None:
    api_key, client_id = tenant(session)
    created = create(session, api_key, client_id)
    before = created.row.state(KEYS)
    with pytest.raises(BadRequestAction):
        update(
            session,
            api_key,
            created.issued.access_value,
            NOW,
            scopes=("write",),
            dpop_key_thumbprint="bad",
        )
    session.expire_all()
    token = locked(session, api_key, created.row.token_id)
    assert token is not None
    assert token.state == before


def test_another_service_cannot_reach_the_token_by_any_name(session: Session) -> None:
    owner, client_id = tenant(session)
    stranger, _ = tenant(session)
    created = create(session, owner, client_id)
    with pytest.raises(TokenNotFound):
        update(session, stranger, created.issued.access_value, NOW, scopes=())
    assert locked(session, stranger, created.row.token_id) is None
