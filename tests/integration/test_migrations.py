"""The migrations: upgrade to head, no drift from the models, downgrade to base."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.db import Base, make_engine
from app.migrate import downgrade, upgrade
from app.models import load_all
from tests.conftest import fresh_database


def test_the_migrated_schema_matches_the_models_and_downgrades_to_nothing(
    backend: str, tmp_path: Path
) -> None:
    load_all()
    with fresh_database(backend, tmp_path) as url:
        engine = make_engine(url, pool_size=1)
        try:
            upgrade(engine)
            with engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"compare_type": True})
                assert compare_metadata(context, Base.metadata) == []
                assert {"services", "scopes", "clients", "tokens"} <= set(
                    inspect(connection).get_table_names()
                )
            downgrade(engine)
            with engine.connect() as connection:
                assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
            upgrade(engine)  # and back up again: the downgrade left nothing in the way
        finally:
            engine.dispose()


def test_no_column_could_hold_a_token_value() -> None:
    """Values are never stored: the token table has hashes and keyed digests only."""
    load_all()
    columns = set(Base.metadata.tables["tokens"].columns.keys())
    assert not {"access_token", "refresh_token", "value", "token"} & columns
    assert {"access_key", "access_hash", "refresh_key", "refresh_hash"} <= columns
