"""Database errors at the HTTP edge (app.http): each gets the answer its SQLSTATE means, and
no log line carries a database error's text, which quotes the statement's parameters and
the server's DETAIL (the values of a row: a client's alias, a name)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from psycopg import errors
from sqlalchemy.exc import IntegrityError, OperationalError

from app.db import make_engine
from app.http import install_error_handlers
from app.transactions import AsyncDatabase

SECRET = "alias-of-a-customer"
DETAIL = f"DETAIL:  Key (service_api_key, client_id_alias)=(1, {SECRET}) already exists."
STATEMENT = "INSERT INTO clients (client_id_alias) VALUES (%(client_id_alias)s)"


def wrapped(kind: type[IntegrityError | OperationalError], orig: Exception) -> Exception:
    """As SQLAlchemy raises it from a statement run with parameters shown."""
    return kind(STATEMENT, {"client_id_alias": SECRET}, orig)


def driver(kind: type[psycopg.Error]) -> psycopg.Error:
    return kind(f"the server's message\n{DETAIL}")


def chained() -> Exception:
    """A fault of ours while handling a database error: the traceback holds both."""
    try:
        raise wrapped(IntegrityError, driver(errors.UniqueViolation))
    except IntegrityError:
        try:
            raise RuntimeError("a fault of the service")  # noqa: TRY301
        except RuntimeError as error:
            return error


CASES = {
    "unique violation": (wrapped(IntegrityError, driver(errors.UniqueViolation)), 409),
    "foreign key violation": (wrapped(IntegrityError, driver(errors.ForeignKeyViolation)), 409),
    "not-null violation": (wrapped(IntegrityError, driver(errors.NotNullViolation)), 500),
    "deadlock": (wrapped(OperationalError, driver(errors.DeadlockDetected)), 409),
    "serialization failure, from the hot path": (driver(errors.SerializationFailure), 409),
    "statement timeout": (wrapped(OperationalError, driver(errors.QueryCanceled)), 503),
    "too many connections": (wrapped(OperationalError, driver(errors.TooManyConnections)), 503),
    "connection refused": (wrapped(OperationalError, psycopg.OperationalError(SECRET)), 503),
    "a fault while handling one": (chained(), 500),
}


class Client:
    """Requests to an app that has only the error handlers and a route that raises."""

    def __init__(self) -> None:
        self.app = FastAPI()
        install_error_handlers(self.app)

        @self.app.get("/fail/{case}")
        async def fail(case: str) -> None:
            raise CASES[case][0]

    def get(self, path: str) -> Response:
        async def request() -> Response:
            transport = ASGITransport(app=self.app, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.get(path)

        return asyncio.run(request())


@pytest.fixture(scope="module")
def client() -> Client:
    return Client()


@pytest.mark.parametrize("case", CASES)
def test_a_database_error_gets_the_status_of_its_meaning_and_logs_none_of_its_text(
    client: Client, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tokenstore.http"):
        response = client.get(f"/fail/{case}")
    assert response.status_code == CASES[case][1]
    logged = caplog.text  # with any traceback, as a log handler formats it
    assert SECRET not in logged
    assert "DETAIL" not in logged
    assert SECRET not in response.text


def test_only_an_unreachable_database_is_reported_unavailable(client: Client) -> None:
    answers = {case: client.get(f"/fail/{case}").json()["resultCode"] for case in CASES}
    assert [case for case, code in answers.items() if code == "DATABASE_UNAVAILABLE"] == [
        "connection refused"
    ]
    assert answers["deadlock"] == answers["unique violation"] == "RESOURCE_CONFLICT"
    assert answers["statement timeout"] == "SERVICE_BUSY"


def test_an_unexpected_failure_logs_its_traceback_with_the_database_error_by_class_and_sqlstate(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tokenstore.http"):
        client.get("/fail/a fault while handling one")
    (record,) = caplog.records
    message = record.getMessage()
    assert "RuntimeError: a fault of the service" in message
    assert "IntegrityError UniqueViolation sqlstate=23505" in message
    assert "in chained" in message  # the frames are kept
    assert SECRET not in message


def test_every_engine_leaves_statement_parameters_out_of_its_errors(tmp_path: Path) -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/nowhere"
    engines = [make_engine(f"sqlite:///{tmp_path / 'file.sqlite3'}"), make_engine(unreachable)]
    requests = AsyncDatabase(
        unreachable,
        pool_size=1,
        pool_timeout=1,
        statement_timeout=1,
        idle_in_transaction_timeout=1,
    )
    try:
        assert all(engine.hide_parameters for engine in engines)
        assert requests.engine.sync_engine.hide_parameters
    finally:
        for engine in engines:
            engine.dispose()
        asyncio.run(requests.dispose())
