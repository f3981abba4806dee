"""Several worker processes on one database under concurrent updates of a few tokens:
every request is answered OK and no token is torn. On SQLite this is the file lock between
the workers (app.transactions); on PostgreSQL, the row lock."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import migrated_database
from tests.resilience.load import Load, torn_tokens
from tests.resilience.tenant import server_environment, tenant_with_tokens
from tests.servers import serving


def test_two_workers_answer_every_concurrent_update_and_tear_no_token(
    backend: str, tmp_path: Path
) -> None:
    with migrated_database(backend, tmp_path) as url:
        with serving(tmp_path, server_environment(url), "--workers", "2") as (base, _):
            auth, tokens = tenant_with_tokens(base, 3)
            with Load(base, auth, tokens, threads=8) as load:
                time.sleep(2.0)
        statuses = [status for _, status, _ in load.answers]
        actions = {body["action"] for _, _, body in load.answers if body is not None}
        assert len(statuses) > 50
        assert set(statuses) == {200}
        assert actions == {"OK"}
        assert torn_tokens(url) == []
