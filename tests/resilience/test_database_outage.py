"""PostgreSQL stopped and started again under load: clear 503s while it is down, recovery
without a restart of the service, and no token half-updated."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, migrated_database
from tests.resilience.load import Load, torn_tokens
from tests.resilience.tenant import server_environment, tenant_with_tokens
from tests.servers import serving

pytestmark = pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="PostgreSQL left out by TOKENSTORE_TEST_DATABASES"
)


def cluster(action: str) -> None:
    """Stops or starts the local PostgreSQL cluster (Debian's pg_ctlcluster)."""
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        pytest.fail("this test stops and starts the local PostgreSQL with pg_ctlcluster")
    for version in sorted(p.name for p in Path("/etc/postgresql").iterdir()):
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
        if action == "stop":
            command += ["-m", "fast"]
        subprocess.run(command, check=True, timeout=60, capture_output=True)


def test_postgresql_down_under_load_gives_503_then_the_service_recovers_by_itself(
    tmp_path: Path,
) -> None:
    with migrated_database("postgresql", tmp_path) as url:
        with serving(tmp_path, server_environment(url)) as (base, _output):
            auth, tokens = tenant_with_tokens(base, 6)
            with Load(base, auth, tokens) as load:
                time.sleep(0.5)
                stopped_at = time.monotonic()
                cluster("stop")
                try:
                    time.sleep(2.0)
                    down = httpx.get(f"{base}/ready", timeout=5)
                finally:
                    cluster("start")
                started_at = time.monotonic()
                deadline = started_at + 30
                while time.monotonic() < deadline:
                    if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                        break
                    time.sleep(0.2)
                recovered_at = time.monotonic()
                time.sleep(1.0)  # let the load run on the recovered database

        assert down.status_code == 503
        answers = load.answers
        statuses = {status for _, status, _ in answers}
        assert statuses <= {200, 500, 503}, statuses
        failures = [(s, b) for at, s, b in answers if s != 200]
        assert failures, "no request saw the database down"
        for status, body in failures:
            assert body is not None
            assert body["action"] == "INTERNAL_SERVER_ERROR"
            assert body["resultMessage"]
            assert status in (500, 503)
        assert any(
            s == 503 and b and b["resultCode"] == "DATABASE_UNAVAILABLE" for s, b in failures
        )
        before = [a for a in answers if a[0] < stopped_at]
        after = [a for a in answers if a[0] > recovered_at]
        assert before
        assert all(s == 200 for _, s, _ in before)
        assert after
        assert all(s == 200 for _, s, _ in after)
        assert torn_tokens(url) == []
