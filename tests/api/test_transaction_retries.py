"""The unit of work on PostgreSQL runs its work again when PostgreSQL rolls it back for a
deadlock or a serialization failure (app.transactions.RetriedWork), a bounded number of
times. The errors are PostgreSQL's own, raised by the server with their SQLSTATE."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.db import DEADLOCK_DETECTED, sqlstate
from app.services.repository import announce_credentials_changed
from app.transactions import ATTEMPTS, AsyncDatabase, open_database
from tests.conftest import migrated_database

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql_only]


def raise_in_the_server(session: Session, condition: str) -> None:
    raised = f"RAISE EXCEPTION 'raised by the test' USING ERRCODE = '{condition}'"
    session.execute(text(f"DO $$ BEGIN {raised}; END $$"))


def transaction_id(session: Session) -> int:
    return int(session.scalar(text("SELECT txid_current()")) or 0)


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PostgreSQL only, whatever the run's backends: SQLite's writers take turns, so it
    has no deadlock and nothing to retry (these tests are deselected, not skipped, when a
    run leaves PostgreSQL out on purpose: tests/conftest.py)."""
    with migrated_database("postgresql", tmp_path_factory.mktemp("retries")) as url:
        yield url


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[AsyncDatabase]:
    database = open_database(
        postgres_url,
        pool_size=2,
        pool_timeout=5,
        statement_timeout=5,
        idle_in_transaction_timeout=5,
    )
    assert isinstance(database, AsyncDatabase)
    yield database
    await database.dispose()


async def test_work_rolled_back_for_a_deadlock_runs_again_in_a_fresh_transaction(
    database: AsyncDatabase,
) -> None:
    transactions: list[int] = []

    def work(session: Session) -> str:
        transactions.append(transaction_id(session))
        if len(transactions) < ATTEMPTS:
            raise_in_the_server(session, "deadlock_detected")
        return "done"

    async with database.transaction() as unit:
        assert await unit.run_sync(work) == "done"
    assert len(set(transactions)) == ATTEMPTS


async def test_work_rolled_back_every_time_gives_up_after_the_last_attempt(
    database: AsyncDatabase,
) -> None:
    attempts = 0

    def work(session: Session) -> None:
        nonlocal attempts
        attempts += 1
        raise_in_the_server(session, "serialization_failure")

    with pytest.raises(OperationalError) as raised:
        async with database.transaction() as unit:
            await unit.run_sync(work)
    assert attempts == ATTEMPTS
    assert sqlstate(raised.value) == "40001"


async def test_only_the_first_call_of_a_unit_of_work_runs_again(database: AsyncDatabase) -> None:
    """A later call cannot be run again alone: the rollback undid the calls before it."""
    attempts = 0

    def later(session: Session) -> None:
        nonlocal attempts
        attempts += 1
        raise_in_the_server(session, "deadlock_detected")

    async def two_calls() -> None:
        async with database.transaction() as unit:
            await unit.run_sync(transaction_id)
            await unit.run_sync(later)

    with pytest.raises(OperationalError) as raised:
        await two_calls()
    assert attempts == 1
    assert sqlstate(raised.value) == DEADLOCK_DETECTED


async def test_other_errors_are_not_run_again(database: AsyncDatabase) -> None:
    attempts = 0

    def work(session: Session) -> None:
        nonlocal attempts
        attempts += 1
        raise_in_the_server(session, "unique_violation")

    with pytest.raises(Exception, match="raised by the test"):
        async with database.transaction() as unit:
            await unit.run_sync(work)
    assert attempts == 1


async def test_a_rolled_back_attempt_announces_nothing(database: AsyncDatabase) -> None:
    """Its NOTIFY went with the rollback: waiting for its delivery would never end."""
    delivered: list[list[str]] = []

    async def record(payloads: list[str]) -> None:
        delivered.append(payloads)

    database.after_announcements = record
    attempts = 0

    def work(session: Session) -> None:
        nonlocal attempts
        attempts += 1
        announce_credentials_changed(session)
        if attempts == 1:
            raise_in_the_server(session, "deadlock_detected")

    async with database.transaction() as unit:
        await unit.run_sync(work)
    assert attempts == 2
    assert [len(payloads) for payloads in delivered] == [1]
