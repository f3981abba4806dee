"""The server killed with SIGKILL in the middle of concurrent updates: after a restart every
token holds the state of one complete update."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import migrated_database
from tests.resilience.load import Load, torn_tokens
from tests.resilience.tenant import server_environment, tenant_with_tokens
from tests.servers import free_port, start, wait_until_healthy


def test_sigkill_during_concurrent_updates_leaves_no_token_torn(
    backend: str, tmp_path: Path
) -> None:
    with migrated_database(backend, tmp_path) as url:
        env = server_environment(url)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = start(tmp_path, env, port)
        try:
            wait_until_healthy(base, process)
            auth, tokens = tenant_with_tokens(base, 4)
            with Load(base, auth, tokens, threads=6) as load:
                time.sleep(1.0)
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
                time.sleep(0.3)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
        assert sum(1 for _, status, _ in load.answers if status == 200) > 10

        # On restart the service comes up on the same database and every token is whole.
        restarted = start(tmp_path, env, port)
        try:
            wait_until_healthy(base, restarted)
            for token in tokens:
                answer = httpx.post(
                    f"{base}/auth/token/update", json={"accessToken": token}, auth=auth
                ).json()
                assert answer["action"] == "OK"
        finally:
            restarted.terminate()
            restarted.wait(timeout=15)
        assert torn_tokens(url) == []
