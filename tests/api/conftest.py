"""API tier: httpx's AsyncClient over the app, on a real migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import Engine, select

from app.config import Settings
from app.main import create_app
from app.tokens.models import TokenRow
from tests.api.world import World


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[FastAPI]:
    app = create_app(settings)
    yield app
    app.state.engine.dispose()


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
