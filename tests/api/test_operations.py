"""Health, readiness, metrics, and logs that carry request ids and never a secret."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
from collections.abc import Iterator

import pytest
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr
from sqlalchemy import text

from app.config import Settings
from app.kit.hashing import token_hash
from app.logs import JsonFormatter, RequestIdFilter
from app.main import create_app
from tests.api.world import World, ok
from tests.conftest import OPERATOR

pytestmark = pytest.mark.anyio


async def test_health_and_readiness(http: AsyncClient) -> None:
    assert ok(await http.get("/health")) == {"status": "ok"}
    assert ok(await http.get("/ready")) == {"status": "ready"}


async def test_readiness_fails_with_503_when_the_database_is_unreachable(
    settings: Settings,
) -> None:
    unreachable = settings.model_copy(
        update={"database_url": "postgresql://postgres@127.0.0.1:1/nowhere"}
    )
    app = create_app(unreachable)
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/health")).status_code == 200
            response = await client.get("/ready")
    finally:
        await app.state.database.dispose()
    assert response.status_code == 503
    assert response.json() == {
        "resultCode": "DATABASE_UNAVAILABLE",
        "resultMessage": "The database is unavailable; retry later.",
        "action": "INTERNAL_SERVER_ERROR",
    }


async def test_a_request_that_waits_too_long_for_the_database_gets_503_and_it_recovers(
    settings: Settings,
) -> None:
    """One pooled connection on PostgreSQL, the one writer on SQLite: while a transaction
    holds it, another request waits for the timeout and is told the service is busy."""
    small = settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout_seconds": 0.2})
    app = create_app(small)
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
            async with app.state.database.transaction() as held:
                await held.run_sync(lambda session: session.execute(text("SELECT 1")))
                busy = await client.get("/api/service/get/list", auth=OPERATOR)
            assert (await client.get("/api/service/get/list", auth=OPERATOR)).status_code == 200
    finally:
        await app.state.database.dispose()
    assert busy.status_code == 503
    assert busy.json() == {
        "resultCode": "SERVICE_BUSY",
        "resultMessage": "Every database connection is busy; retry later.",
        "action": "INTERNAL_SERVER_ERROR",
    }


async def test_metrics_count_requests_by_route_and_updates_by_action(world: World) -> None:
    token = await world.token()
    await world.update(accessToken=token["accessToken"], scopes=["read"])
    await world.update(accessToken="unknown", scopes=["read"])
    text = (await world.http.get("/metrics")).text
    assert 'tokenstore_token_updates_total{action="OK"}' in text
    assert 'tokenstore_token_updates_total{action="NOT_FOUND"}' in text
    assert (
        'tokenstore_http_requests_total{method="POST",route="/auth/token/update",status="200"}'
        in text
    )
    assert "tokenstore_http_request_duration_seconds_bucket" in text
    assert "tokenstore_db_pool_connections_in_use" in text


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log line, formatted as `serve` formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


async def test_every_log_line_of_a_request_has_its_id_and_no_secret(
    world: World, captured: io.StringIO
) -> None:
    token = await world.token(dpopKeyThumbprint="NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    captured.truncate(0)
    captured.seek(0)
    response = await world.http.post(
        "/auth/token/update",
        json={"accessToken": token["accessToken"], "accessTokenValueUpdated": True},
        auth=world.auth,
    )
    new_value = response.json()["accessToken"]
    await world.http.delete(f"/api/auth/token/delete/{new_value}", auth=world.auth)
    # The server's lines only: the test's own HTTP client (httpx) logs on this process too.
    lines = [
        line
        for line in map(json.loads, filter(None, captured.getvalue().splitlines()))
        if not line["logger"].startswith(("httpx", "httpcore"))
    ]
    assert lines, "the requests logged nothing"
    request_ids = {line["request_id"] for line in lines}
    assert None not in request_ids
    assert response.headers["X-Request-Id"] in request_ids
    routes = {line.get("route") for line in lines}
    assert "/api/auth/token/delete/{accessTokenIdentifier}" in routes
    secrets = [
        token["accessToken"],
        new_value,
        token["refreshToken"],
        token_hash(token["accessToken"]),
        token_hash(new_value),
        world.api_secret,
    ]
    output = json.dumps(lines)
    assert [s for s in secrets if s in output] == []


def test_settings_never_print_their_secrets() -> None:
    settings = Settings(admin_api_secret=SecretStr("a" * 40), hash_secret=SecretStr("b" * 40))
    assert "a" * 40 not in str(settings.model_dump())
    assert "b" * 40 not in repr(settings)


async def test_path_values_never_reach_logs_or_metric_labels(
    world: World, captured: io.StringIO
) -> None:
    """Percent-encoded token values in a matched route, and paths no route matches: the
    log names the route template (or one fixed label), and no new metric series appears."""
    values = [f"tok%25{n:04d}%20y{secrets.token_hex(4)}" for n in range(20)]
    for value in values:
        response = await world.http.delete(f"/api/auth/token/delete/{value}", auth=world.auth)
        assert response.status_code == 404
        assert (await world.http.get(f"/no/such/{value}")).status_code == 404
    metrics_text = (await world.http.get("/metrics")).text
    # The server's lines only: the test's own HTTP client (httpx) logs the URLs it calls.
    output = "\n".join(
        line for line in captured.getvalue().splitlines() if '"logger": "httpx"' not in line
    )
    assert output.count('"route": "/api/auth/token/delete/{accessTokenIdentifier}"') == 20
    assert output.count('"route": "(no route)"') == 20
    for value in values:
        assert value[-8:] not in output
        assert value[-8:] not in metrics_text
    routes = set(re.findall(r'tokenstore_http_requests_total\{[^}]*route="([^"]*)"', metrics_text))
    assert "/api/auth/token/delete/{accessTokenIdentifier}" in routes
    assert "(no route)" in routes
    assert [route for route in routes if "%" in route or "tok0" in route] == []
