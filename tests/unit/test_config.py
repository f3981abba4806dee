"""Settings: production refuses weak secrets; development makes and keeps its own."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.config import ConfigError, Settings
from app.db import driver_url

STRONG = SecretStr("s" * 32)


def test_production_refuses_to_start_without_real_secrets(tmp_path: Path) -> None:
    settings = Settings(env="production", data_dir=tmp_path, admin_api_secret=SecretStr("short"))
    with pytest.raises(ConfigError) as refused:
        settings.check_production()
    message = str(refused.value)
    assert "TOKENSTORE_ADMIN_API_KEY" in message
    assert "TOKENSTORE_ADMIN_API_SECRET must be at least 32" in message
    assert "TOKENSTORE_HASH_SECRET" in message
    # ...and does not invent any in their place.
    completed, created = settings.with_development_secrets()
    assert (completed, created) == (settings, None)


def test_production_accepts_real_secrets(tmp_path: Path) -> None:
    Settings(
        env="production",
        data_dir=tmp_path,
        admin_api_key="op",
        admin_api_secret=STRONG,
        hash_secret=STRONG,
    ).check_production()


def test_development_generates_secrets_once_and_keeps_them_private(tmp_path: Path) -> None:
    first, created = Settings(data_dir=tmp_path).with_development_secrets()
    assert created == tmp_path / "dev-secrets.json"
    assert stat.S_IMODE(created.stat().st_mode) == 0o600
    second, created_again = Settings(data_dir=tmp_path).with_development_secrets()
    assert created_again is None
    assert second.hash_key == first.hash_key
    assert second.admin_api_key == first.admin_api_key


def test_configured_secrets_win_over_generated_ones(tmp_path: Path) -> None:
    settings, _ = Settings(data_dir=tmp_path, hash_secret=STRONG).with_development_secrets()
    assert settings.hash_key == b"s" * 32


def test_secrets_never_show_in_the_settings_repr(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, admin_api_secret=STRONG, hash_secret=STRONG)
    assert "s" * 32 not in repr(settings)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///var/x.sqlite3", "sqlite:///var/x.sqlite3"),
    ],
)
def test_a_plain_database_url_gets_the_right_driver(given: str, expected: str) -> None:
    assert driver_url(given) == expected


def test_production_refuses_the_benchmark_endpoints(tmp_path: Path) -> None:
    settings = Settings(
        env="production", data_dir=tmp_path, admin_api_key="op", admin_api_secret=STRONG,
        hash_secret=STRONG, bench_endpoints=True,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="TOKENSTORE_BENCH_ENDPOINTS"):
        settings.check_production()
