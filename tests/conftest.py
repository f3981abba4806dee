"""Fixtures shared by every tier: real databases (SQLite and PostgreSQL), migrated by Alembic.

Every database-backed test runs once per backend in `TOKENSTORE_TEST_DATABASES` (default
"sqlite,postgresql"). PostgreSQL gets a throwaway database per run on the server at
`TOKENSTORE_TEST_POSTGRES_URL` (default postgresql://postgres@127.0.0.1:5432/test). When
that server cannot be reached the tests fail, they do not skip: leave PostgreSQL out only
by saying so, with TOKENSTORE_TEST_DATABASES=sqlite.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from app.config import Settings
from app.db import driver_url, make_engine
from app.migrate import upgrade

BACKENDS = [
    name.strip()
    for name in os.environ.get("TOKENSTORE_TEST_DATABASES", "sqlite,postgresql").split(",")
    if name.strip()
]
POSTGRES_URL = os.environ.get(
    "TOKENSTORE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
OPERATOR = ("operator-key", "operator-secret-" + "o" * 32)


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """A new, empty database of the backend; dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'tokenstore-{secrets.token_hex(4)}.sqlite3'}"
        return
    if backend != "postgresql":
        raise pytest.UsageError(f"unknown test database backend {backend!r}")
    name = f"tokenstore_test_{secrets.token_hex(6)}"
    # NullPool: no connection kept between uses, so a server restart in between (the
    # resilience tests) cannot leave a dead one behind for the DROP.
    admin = create_engine(
        driver_url(POSTGRES_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string()} is unreachable "
            f"({type(error).__name__}); start it, or run with TOKENSTORE_TEST_DATABASES=sqlite "
            "to leave PostgreSQL out on purpose.",
            pytrace=False,
        )
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def migrated_database(backend: str, directory: Path) -> Iterator[str]:
    """A new database of the backend with the schema at head; dropped afterwards."""
    with fresh_database(backend, directory) as url:
        engine = make_engine(url, pool_size=1)
        upgrade(engine)
        engine.dispose()
        yield url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of PostgreSQL-only behaviour are deselected, not skipped: their SQLite
    instances, and all of them when a run leaves PostgreSQL out on purpose."""

    def wanted(item: pytest.Item) -> bool:
        if item.get_closest_marker("postgresql_only") is None:
            return True
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec is not None else None
        return "postgresql" in BACKENDS and backend in (None, "postgresql")

    kept = [item for item in items if wanted(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with migrated_database(backend, tmp_path_factory.mktemp(backend)) as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        env="development",
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        admin_api_key=OPERATOR[0],
        admin_api_secret=SecretStr(OPERATOR[1]),
        hash_secret=SecretStr("test-hash-secret-" + "h" * 32),
        max_body_bytes=64 * 1024,
        db_pool_size=20,
    )


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url, pool_size=5)
    yield engine
    engine.dispose()
