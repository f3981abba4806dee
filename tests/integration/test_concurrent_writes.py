"""Two transactions interleaved on purpose, where a race between requests would put them:
a write that waits for another's lock or unique key, or a delete of a row that another
transaction deleted after it was read. Each transaction commits, on its own connection.

On PostgreSQL the second transaction really waits inside the first one's window (the test
waits until PostgreSQL shows it waiting for a lock); on SQLite it waits for the write lock
at its start, which makes the same outcome the plain one.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from app.clients import repository as clients_repository
from app.clients import service as clients
from app.clients.models import ClientRow
from app.clients.service import ClientSpec
from app.db import make_sessionmaker
from app.errors import Conflict
from app.events.changes import Origin
from app.kit.keys import KeyRing
from app.services import service as services
from app.services.service import ScopeSpec, ServiceSpec
from app.tokens import repository as tokens_repository
from app.tokens import service as tokens
from tests.integration.test_token_service import KEY, KEYS, NOW, create, tenant

T = TypeVar("T")


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def elsewhere() -> Iterator[Callable[[Callable[[], T]], Future[T]]]:
    """Runs a function on another thread: the second of two interleaved transactions."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit


def wait_until_one_waits_for_a_lock(engine: Engine, backend: str) -> None:
    if backend == "sqlite":
        time.sleep(0.3)  # SQLite shows no waiters: the second is in its busy handler
        return
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 10
    with engine.connect() as connection:
        while not connection.execute(waiting).scalar():
            assert time.monotonic() < deadline, "the second transaction never waited"
            time.sleep(0.01)
            connection.rollback()


def committed_tenant(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as session:
        api_key, client_id = tenant(session)
        session.commit()
    return api_key, client_id


def aliased(alias: str) -> ClientSpec:
    return ClientSpec("app", alias, None, None, None)


def test_a_client_created_with_an_alias_a_concurrent_request_took_meanwhile_is_a_conflict(
    engine: Engine,
    backend: str,
    sessions: sessionmaker[Session],
    elsewhere: Callable[[Callable[[], ClientRow]], Future[ClientRow]],
) -> None:
    api_key, _ = committed_tenant(sessions)
    alias = f"alias-{secrets.token_hex(4)}"

    def second() -> ClientRow:
        with sessions() as session:
            # Its check runs before the first commits, so only the constraint can refuse it.
            return clients.create(
                session, service_api_key=api_key, spec=aliased(alias), keys=KEYS, now=NOW
            ).row

    with sessions() as first:
        clients.create(first, service_api_key=api_key, spec=aliased(alias), keys=KEYS, now=NOW)
        late = elsewhere(second)
        wait_until_one_waits_for_a_lock(engine, backend)
        first.commit()
    with pytest.raises(Conflict, match=alias):
        late.result(timeout=30)


def test_a_client_renamed_to_an_alias_a_concurrent_request_took_meanwhile_is_a_conflict(
    engine: Engine,
    backend: str,
    sessions: sessionmaker[Session],
    elsewhere: Callable[[Callable[[], ClientRow]], Future[ClientRow]],
) -> None:
    api_key, client_id = committed_tenant(sessions)
    alias = f"alias-{secrets.token_hex(4)}"

    def second() -> ClientRow:
        with sessions() as session:
            return clients.update(
                session, service_api_key=api_key, client_id=client_id, spec=aliased(alias),
                keys=KEYS, now=NOW,
            ).row  # fmt: skip

    with sessions() as first:
        clients.create(first, service_api_key=api_key, spec=aliased(alias), keys=KEYS, now=NOW)
        late = elsewhere(second)
        wait_until_one_waits_for_a_lock(engine, backend)
        first.commit()
    with pytest.raises(Conflict, match=alias):
        late.result(timeout=30)


def test_an_insert_the_alias_constraint_refuses_is_reported_as_the_alias_taken(
    session: Session,
) -> None:
    api_key, client_id = tenant(session)
    taken = clients.update(
        session, service_api_key=api_key, client_id=client_id, spec=aliased("taken"),
        keys=KEYS, now=NOW,
    ).row  # fmt: skip
    duplicate = ClientRow(
        client_id=taken.client_id + 1,
        service_api_key=api_key,
        client_id_alias="taken",
        requestable_scopes_enabled=False,
        requestable_scopes=[],
        created_at=NOW,
        modified_at=NOW,
    )
    with pytest.raises(clients_repository.AliasTaken):
        clients_repository.insert(session, duplicate)


def scopes(*names: str) -> ServiceSpec:
    return ServiceSpec(None, None, tuple(ScopeSpec(name, None, ()) for name in names), None, None)


def test_two_scope_updates_of_one_service_run_one_after_the_other(
    engine: Engine,
    backend: str,
    sessions: sessionmaker[Session],
    elsewhere: Callable[[Callable[[], list[str]]], Future[list[str]]],
) -> None:
    api_key, _ = committed_tenant(sessions)

    def second() -> list[str]:
        with sessions() as session:
            row = services.update(session, api_key=api_key, spec=scopes("b", "c"), now=NOW)
            session.commit()
            return [scope.name for scope in row.scopes]

    with sessions() as first:
        services.update(first, api_key=api_key, spec=scopes("a", "b"), now=NOW)
        late = elsewhere(second)
        # Before the service row was locked first, the second deleted the scopes it had
        # read, not the ones the first inserted meanwhile, and then inserted "b" again.
        wait_until_one_waits_for_a_lock(engine, backend)
        first.commit()
    assert late.result(timeout=30) == ["b", "c"]
    with sessions() as session:
        assert [scope.name for scope in services.get(session, api_key=api_key).scopes] == [
            "b",
            "c",
        ]


def test_a_token_deleted_by_another_request_after_it_was_read_is_not_deleted_twice(
    sessions: sessionmaker[Session],
) -> None:
    api_key, client_id = committed_tenant(sessions)
    with sessions() as session:
        created = create(session, api_key, client_id)
        session.commit()
    token_id = created.row.token_id
    with sessions() as late:
        row = tokens.find_by_identifier(
            late, service_api_key=api_key, identifier=token_id, keys=KeyRing.single(KEY)
        )
        assert row is not None
        late.commit()  # SQLite: lets the first delete run (PostgreSQL would not need it)
        with sessions() as first:
            tokens.delete(
                first, service_api_key=api_key, identifier=token_id, keys=KeyRing.single(KEY),
                now=NOW,
                origin=Origin.of_service(api_key),
            )  # fmt: skip
            first.commit()
        assert tokens_repository.delete_row(late, row) is False
