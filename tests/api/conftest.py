"""API tier: httpx's AsyncClient over the app, on a real migrated database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import Engine, select

from app.config import Settings
from app.main import create_app
from app.tokens.models import TokenRow
from tests.api.world import World


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """One event loop for the whole session: the app's async connection pool (and the
    SQLite writer lock) belong to the loop they were made on, as in a server process."""
    return "asyncio"


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    yield app
    await app.state.credentials.close()
    await app.state.database.dispose()


@pytest.fixture(scope="session")
def base_url(settings: Settings) -> Iterator[str]:
    """A real server in a thread, for clients that speak HTTP themselves (Authlete's
    library, schemathesis). It has its own app, whose pool lives on the server's loop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://tokenstore") as client:
        yield client


@pytest.fixture
async def world(http: AsyncClient) -> World:
    """A fresh service with scopes and one client: every test has its own tenant."""
    return await World.create(http)


@pytest.fixture
def stored(engine: Engine) -> Any:
    """Reads a token's row straight from the database, to prove what did or did not change."""

    def read(token_id: str) -> dict[str, Any] | None:
        with engine.connect() as connection:
            row = connection.execute(
                select(TokenRow.__table__).where(TokenRow.token_id == token_id)
            ).one_or_none()
        return None if row is None else dict(row._mapping)

    return read
