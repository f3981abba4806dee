"""Operator credentials rotate (issue 13, item 5): several key pairs valid at once, the
single pair of before still working beside them, and nothing else let in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr

from app.config import ConfigError, Settings
from app.main import create_app
from tests.conftest import OPERATOR

NEW = ("operator-new", "new-operator-secret-" + "n" * 32)
OTHER = ("operator-other", "other-operator-secret-" + "x" * 32)


@pytest.fixture
async def rotating(settings: Settings) -> AsyncIterator[AsyncClient]:
    """The test settings (whose single pair is OPERATOR) with two more pairs listed."""
    listed = settings.model_copy(
        update={"admin_credentials": SecretStr(f"{NEW[0]}:{NEW[1]},{OTHER[0]}:{OTHER[1]}")}
    )
    app = create_app(listed)
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as http:
        yield http
    await app.state.credentials.close()
    await app.state.database.dispose()


async def status(http: AsyncClient, auth: tuple[str, str]) -> int:
    return (await http.get("/api/service/get/list", auth=auth)).status_code


@pytest.mark.anyio
async def test_every_listed_operator_pair_and_the_single_pair_are_valid_at_once(
    rotating: AsyncClient,
) -> None:
    assert await status(rotating, NEW) == 200
    assert await status(rotating, OTHER) == 200
    assert await status(rotating, OPERATOR) == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    "auth",
    [
        (NEW[0], OTHER[1]),  # a listed key with another pair's secret
        (OTHER[0], NEW[1]),
        (NEW[0], NEW[1] + "x"),
        (NEW[0], ""),
        ("", NEW[1]),
        (OPERATOR[0], NEW[1]),
    ],
)
async def test_a_pair_that_is_not_listed_as_such_is_refused(
    rotating: AsyncClient, auth: tuple[str, str]
) -> None:
    assert await status(rotating, auth) == 401


def test_the_listed_pairs_alone_are_enough_in_production() -> None:
    settings = Settings(
        env="production",
        admin_credentials=SecretStr(f"{NEW[0]}:{NEW[1]},{OTHER[0]}:{OTHER[1]}"),
        hash_secrets=SecretStr("k2:" + "s" * 40 + ",k1:" + "t" * 40),
    )
    settings.check_production()
    assert settings.operators() == [NEW, OTHER]


@pytest.mark.parametrize(
    ("credentials", "hash_secrets", "refused"),
    [
        (f"{NEW[0]}:short,{OTHER[0]}:{OTHER[1]}", "k2:" + "s" * 40, "operator secret"),
        (f"{NEW[0]}:{NEW[1]},{NEW[0]}:{OTHER[1]}", "k2:" + "s" * 40, "more than once"),
        (f"{NEW[0]}:{NEW[1]}", "k2:" + "s" * 40 + ",k2:" + "t" * 40, "more than once"),
        (f"{NEW[0]}:{NEW[1]}", "k2:short", "'k2'"),
        (f"{NEW[0]}", "k2:" + "s" * 40, "not key:secret"),
    ],
)
def test_production_refuses_short_repeated_or_malformed_lists(
    credentials: str, hash_secrets: str, refused: str
) -> None:
    settings = Settings(
        env="production",
        admin_credentials=SecretStr(credentials),
        hash_secrets=SecretStr(hash_secrets),
    )
    with pytest.raises(ConfigError) as error:
        settings.check_production()
    assert refused in str(error.value)
    assert "s" * 40 not in str(error.value)
