"""Concurrent updates of one token: every request answers, none is torn, none is lost.

The requests run concurrently on the app's event loop, each in its own transaction: on
PostgreSQL each has its own connection and the row lock keeps them apart; on SQLite the
process's writer lock and the immediate write transaction do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import Engine, select

from app.config import Settings
from app.kit.hashing import token_hash
from app.main import create_app
from app.tokens.models import TokenRow, opened_hash
from tests.api.world import World

pytestmark = pytest.mark.anyio

WRITERS = 24


async def test_concurrent_updates_all_answer_and_the_result_is_one_whole_update(
    world: World, stored: Any
) -> None:
    token = await world.token()
    base = time.time_ns() // 1_000_000 + 3_600_000

    def body(i: int) -> dict[str, Any]:
        return {
            "accessToken": token["accessToken"],
            "accessTokenExpiresAt": base + i,
            "properties": [{"key": "writer", "value": str(i)}],
            "authorizationDetails": {"elements": [{"type": f"writer-{i}"}]},
            "scopes": [["read"], ["write"], ["profile"], ["admin"]][i % 4],
        }

    responses = await asyncio.gather(
        *(
            world.http.post("/auth/token/update", json=body(i), auth=world.auth)
            for i in range(WRITERS)
        )
    )
    assert [r.status_code for r in responses] == [200] * WRITERS
    answers = [r.json() for r in responses]
    assert [a["action"] for a in answers] == ["OK"] * WRITERS
    # Each answer shows the state its own update produced.
    for i, answer in enumerate(answers):
        assert answer["accessTokenExpiresAt"] == base + i
        assert answer["properties"][0]["value"] == str(i)
        assert answer["authorizationDetails"]["elements"][0]["type"] == f"writer-{i}"

    final = stored(token["tokenId"])
    assert final is not None
    winner = int(final["properties"][0]["value"])
    # Not torn: every field comes from the same request.
    assert final["access_expires_at"] == base + winner
    assert final["authorization_details"] == [{"type": f"writer-{winner}"}]
    assert final["scopes"] == body(winner)["scopes"]


async def test_concurrent_regenerations_of_one_value_let_exactly_one_win(
    world: World, stored: Any, settings: Settings
) -> None:
    token = await world.token()
    responses = await asyncio.gather(
        *(
            world.http.post(
                "/auth/token/update",
                json={"accessToken": token["accessToken"], "accessTokenValueUpdated": True},
                auth=world.auth,
            )
            for _ in range(WRITERS)
        )
    )
    answers = [r.json() for r in responses]
    assert all(r.status_code == 200 for r in responses)
    actions = sorted(a["action"] for a in answers)
    # A lost update would show as several OKs, each handing out a value, all but one dead.
    assert actions == ["NOT_FOUND"] * (WRITERS - 1) + ["OK"]
    (winner,) = [a for a in answers if a["action"] == "OK"]
    final = stored(token["tokenId"])
    assert final is not None
    # Sealed at rest: the winner's value opens from it, under the row's key.
    assert final["access_hash"] != token_hash(winner["accessToken"])
    assert opened_hash(SimpleNamespace(**final), settings.key_ring, "access") == token_hash(
        winner["accessToken"]
    )
    follow_up = await world.update(accessToken=winner["accessToken"], scopes=["read"])
    assert follow_up["action"] == "OK"


async def test_updates_of_different_tokens_proceed_side_by_side(world: World) -> None:
    tokens = [await world.token() for _ in range(8)]
    responses = await asyncio.gather(
        *(
            world.http.post(
                "/auth/token/update",
                json={"accessToken": t["accessToken"], "accessTokenValueUpdated": True},
                auth=world.auth,
            )
            for t in tokens
            for _ in range(3)
        )
    )
    answers = [r.json() for r in responses]
    assert sum(a["action"] == "OK" for a in answers) == len(tokens)
    assert sum(a["action"] == "NOT_FOUND" for a in answers) == 2 * len(tokens)


@pytest.fixture
async def another_process(settings: Settings) -> AsyncIterator[FastAPI]:
    """A second app on the same database with its own engine, pool and writer locks (its
    own file descriptor for SQLite's `flock`): what a second worker process is, as far as
    the database can tell."""
    app = create_app(settings)
    yield app
    await app.state.database.dispose()


async def test_regenerations_from_two_processes_still_let_exactly_one_win(
    world: World, another_process: FastAPI
) -> None:
    transport = ASGITransport(app=another_process)
    async with AsyncClient(transport=transport, base_url="http://second") as other:
        # Several rounds: a race between processes is likely in one round, near-certain
        # over five (each process has its own asyncio lock, so only the row lock or the
        # file lock and the database's own locking keep them apart).
        for _ in range(5):
            token = await world.token()
            body = {"accessToken": token["accessToken"], "accessTokenValueUpdated": True}
            responses = await asyncio.gather(
                *(
                    (world.http if i % 2 else other).post(
                        "/auth/token/update", json=body, auth=world.auth
                    )
                    for i in range(WRITERS)
                )
            )
            assert [r.status_code for r in responses] == [200] * WRITERS
            actions = sorted(r.json()["action"] for r in responses)
            assert actions == ["NOT_FOUND"] * (WRITERS - 1) + ["OK"]


@pytest.mark.postgresql_only  # SQLite has no statement timeout: its wait is the pool timeout's
async def test_an_update_held_up_by_a_row_lock_past_the_statement_timeout_gets_503(
    world: World, settings: Settings, engine: Engine, stored: Any
) -> None:
    token = await world.token()
    before = stored(token["tokenId"])
    impatient = create_app(settings.model_copy(update={"db_statement_timeout_seconds": 0.3}))
    body = {"accessToken": token["accessToken"], "accessTokenExpiresAt": 4_000_000_000_000}
    try:
        transport = ASGITransport(app=impatient)
        async with AsyncClient(transport=transport, base_url="http://impatient") as client:
            with engine.connect() as holder:  # another transaction holds the token's row
                holder.execute(
                    select(TokenRow.id)
                    .where(TokenRow.token_id == token["tokenId"])
                    .with_for_update()
                )
                held = await client.post("/auth/token/update", json=body, auth=world.auth)
                unchanged = stored(token["tokenId"])
                holder.rollback()
            after = await client.post("/auth/token/update", json=body, auth=world.auth)
    finally:
        await impatient.state.database.dispose()
    assert held.status_code == 503
    assert held.json() == {
        "resultCode": "SERVICE_BUSY",
        "resultMessage": "The database did not answer in time; retry later.",
        "action": "INTERNAL_SERVER_ERROR",
    }
    assert unchanged == before
    assert after.json()["action"] == "OK"
    assert after.json()["accessTokenExpiresAt"] == 4_000_000_000_000
