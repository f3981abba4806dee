"""`tokenstore serve` and `tokenstore migrate`, started as a user starts them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, fresh_database
from tests.servers import clean_environment, command, serving


def test_serve_starts_with_nothing_configured_and_says_once_where_the_credentials_are(
    tmp_path: Path,
) -> None:
    env = clean_environment()
    with serving(tmp_path, env) as (base, first_output):
        secrets_file = tmp_path / "var" / "dev-secrets.json"
        stored = json.loads(secrets_file.read_text())
        operator = (stored["adminApiKey"], stored["adminApiSecret"])
        created = httpx.post(f"{base}/api/service/create", json={"serviceName": "x"}, auth=operator)
        assert created.status_code == 200
    (printed,) = first_output
    assert str(Path("var") / "dev-secrets.json") in printed
    assert stored["adminApiSecret"] not in printed
    assert created.json()["apiSecret"] not in printed
    assert (tmp_path / "var" / "tokenstore.sqlite3").exists()

    with serving(tmp_path, env) as (base, second_output):
        again = httpx.get(f"{base}/api/service/get/{created.json()['apiKey']}", auth=operator)
        assert again.status_code == 200  # same secrets, same database
    assert "generated development secrets" not in second_output[0]


def test_production_without_secrets_refuses_to_start(tmp_path: Path) -> None:
    result = command("serve", cwd=tmp_path, env=clean_environment(TOKENSTORE_ENV="production"))
    assert result.returncode == 2
    assert "TOKENSTORE_HASH_SECRET" in result.stderr


@pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="PostgreSQL left out by TOKENSTORE_TEST_DATABASES"
)
@pytest.mark.parametrize("name", ["serve", "migrate"])
def test_an_unreachable_database_is_one_clear_line_without_its_password(
    name: str, tmp_path: Path
) -> None:
    env = clean_environment(
        TOKENSTORE_ENV="production", TOKENSTORE_ADMIN_API_KEY="operator",
        TOKENSTORE_ADMIN_API_SECRET="a" * 40, TOKENSTORE_HASH_SECRET="h" * 40,
        TOKENSTORE_DATABASE_URL="postgresql://tokenstore:pass-w0rd@127.0.0.1:1/tokenstore",
    )  # fmt: skip
    result = command(name, cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "tokenstore: the database at postgresql://tokenstore:***@127.0.0.1:1/tokenstore "
        "cannot be reached: "
    )
    assert "Traceback" not in result.stderr
    assert "pass-w0rd" not in result.stderr + result.stdout


def test_migrate_then_serve_on_postgresql(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        env = clean_environment(
            TOKENSTORE_DATABASE_URL=url,
            TOKENSTORE_ENV="production",
            TOKENSTORE_ADMIN_API_KEY="operator",
            TOKENSTORE_ADMIN_API_SECRET="a" * 40,
            TOKENSTORE_HASH_SECRET="b" * 40,
        )
        refused = command("serve", cwd=tmp_path, env=env)
        assert refused.returncode == 2
        assert "tokenstore migrate" in refused.stderr
        migrated = command("migrate", cwd=tmp_path, env=env)
        assert migrated.returncode == 0, migrated.stderr
        with serving(tmp_path, env) as (base, _output):
            created = httpx.post(f"{base}/api/service/create", json={}, auth=("operator", "a" * 40))
            assert created.status_code == 200


def test_serve_purges_expired_tokens_periodically_when_asked(tmp_path: Path) -> None:
    env = clean_environment(
        TOKENSTORE_ADMIN_API_KEY="op", TOKENSTORE_ADMIN_API_SECRET="s" * 40,
        TOKENSTORE_HASH_SECRET="h" * 40,
    )  # fmt: skip
    database = tmp_path / "var" / "tokenstore.sqlite3"
    with serving(tmp_path, env, "--purge-interval", "1") as (base, _output):
        service = httpx.post(f"{base}/api/service/create", json={}, auth=("op", "s" * 40)).json()
        auth = (str(service["apiKey"]), service["apiSecret"])
        client = httpx.post(f"{base}/api/client/create", json={}, auth=auth).json()
        token = httpx.post(
            f"{base}/api/auth/token/create",
            json={"grantType": "CLIENT_CREDENTIALS", "clientId": client["clientId"]},
            auth=auth,
        ).json()
        httpx.post(
            f"{base}/auth/token/update",
            json={"accessToken": token["accessToken"], "accessTokenExpiresAt": 1},
            auth=auth,
        )

        def stored_tokens() -> int:
            with closing(sqlite3.connect(database)) as connection:
                count: int = connection.execute("SELECT count(*) FROM tokens").fetchone()[0]
            return count

        assert stored_tokens() == 1
        deadline = time.monotonic() + 15
        while stored_tokens() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stored_tokens() == 0


def test_every_worker_logs_json_access_lines(tmp_path: Path) -> None:
    env = clean_environment(
        TOKENSTORE_ADMIN_API_KEY="op", TOKENSTORE_ADMIN_API_SECRET="s" * 40,
        TOKENSTORE_HASH_SECRET="h" * 40,
    )  # fmt: skip
    with serving(tmp_path, env, "--workers", "2") as (base, output):
        for _ in range(6):
            assert httpx.get(f"{base}/ready").status_code == 200
    lines = [json.loads(line) for line in output[0].splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "tokenstore.access"]
    assert len([line for line in access if line["route"] == "/ready"]) == 6
    assert all(line["request_id"] for line in access)


def test_serve_with_workers_leaves_no_metrics_directory_behind(tmp_path: Path) -> None:
    """The workers' metrics directory goes when `serve` stops, and one left by a server
    that was killed (its process gone) is removed when the next one starts."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    dead_pid = _ended_pid()
    stale = temporary / f"tokenstore-metrics-{dead_pid}-abc123"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"x")
    env = clean_environment(TMPDIR=str(temporary))
    with serving(tmp_path, env, "--workers", "2") as (base, _):
        assert httpx.get(f"{base}/metrics").status_code == 200
        assert not stale.exists()
        (own,) = temporary.glob("tokenstore-metrics-*")
        assert list(own.iterdir()), "the workers write their samples there"
    assert list(temporary.glob("tokenstore-metrics-*")) == []


def _ended_pid() -> int:
    process = subprocess.Popen(["true"])  # noqa: S607
    process.wait()
    return process.pid
