"""The key rotation's commands as an operator runs them: `tokenstore keys` (and `--json`),
the refusal of `serve` and `migrate` to start while rows depend on a key id that is no
longer listed (and `--force`), and the metric `tokenstore_keyed_rows`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.db import make_engine
from tests.conftest import fresh_database, migrated_database
from tests.keyed_rows import (
    DEFAULT,
    K1,
    K2,
    environment_value,
    seed_credentials,
    seed_tenant,
    seed_tokens,
)
from tests.resilience.tenant import ADMIN
from tests.servers import clean_environment, command, serving

ZERO = {
    "tokens": 0, "unsealed_tokens": 0, "service_secrets": 0, "service_access_tokens": 0,
    "client_secrets": 0,
}  # fmt: skip


def environment(url: str, *keys: str, **extra: str) -> dict[str, str]:
    return clean_environment(
        TOKENSTORE_ENV="production", TOKENSTORE_DATABASE_URL=url,
        TOKENSTORE_ADMIN_API_KEY=ADMIN[0], TOKENSTORE_ADMIN_API_SECRET=ADMIN[1],
        TOKENSTORE_HASH_SECRETS=",".join(keys), **extra,
    )  # fmt: skip


@contextmanager
def database_with_rows(backend: str, tmp_path: Path) -> Iterator[str]:
    """Rows of every kind: under k1 (one service secret, two service access tokens, one
    client secret, three tokens), under k2 (a service secret, two tokens) and one token
    written before sealing, under the single secret's id "default"."""
    with migrated_database(backend, tmp_path) as url:
        engine = make_engine(url, pool_size=1)
        try:
            old = seed_tenant(engine, key=K1)
            seed_credentials(engine, old, key=K1, access_tokens=2, client_secrets=1)
            seed_tokens(engine, old, key=K1, count=3, prefix="k1")
            new = seed_tenant(engine, key=K2)
            seed_tokens(engine, new, key=K2, count=2, prefix="k2")
            seed_tokens(engine, new, key=DEFAULT, count=1, prefix="plain", sealed=False)
        finally:
            engine.dispose()
        yield url


def test_keys_counts_every_kind_of_row_per_key_id_and_json_says_the_same(
    backend: str, tmp_path: Path
) -> None:
    with database_with_rows(backend, tmp_path) as url:
        env = environment(url, environment_value(K2, K1))
        as_json = command("keys", "--json", cwd=tmp_path, env=env)
        as_text = command("keys", cwd=tmp_path, env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {
        "current": "k2",
        "listed": ["k2", "k1"],
        "keys": {
            "k2": {**ZERO, "status": "current", "tokens": 2, "service_secrets": 1},
            "k1": {
                **ZERO,
                "status": "listed",
                "tokens": 3,
                "service_secrets": 1,
                "service_access_tokens": 2,
                "client_secrets": 1,
            },
            "default": {**ZERO, "status": "unlisted", "tokens": 1, "unsealed_tokens": 1},
        },
    }
    assert as_text.returncode == 0, as_text.stderr
    lines = as_text.stdout.splitlines()
    assert lines[0].split() == [
        "key", "id", "status", "tokens", "unsealed", "tokens", "service", "secrets", "service",
        "access", "tokens", "client", "secrets",
    ]  # fmt: skip
    assert lines[1].split() == ["k2", "current", "2", "0", "1", "0", "0"]
    assert lines[2].split() == ["k1", "listed", "3", "0", "1", "2", "1"]
    assert lines[3].split() == ["default", "unlisted", "1", "1", "0", "0", "0"]
    advice = "\n".join(lines[4:])
    assert (
        "k1: 3 tokens, 1 service secrets, 2 service access tokens, 1 client secrets depend on "
        "it; keep it listed." in advice
    )
    assert "default: NOT LISTED, and 1 tokens depend on it" in advice


def test_keys_says_when_an_old_key_can_be_removed(backend: str, tmp_path: Path) -> None:
    with migrated_database(backend, tmp_path) as url:
        engine = make_engine(url, pool_size=1)
        try:
            seed_tokens(engine, seed_tenant(engine, key=K2), key=K2, count=1, prefix="k2")
        finally:
            engine.dispose()
        shown = command("keys", cwd=tmp_path, env=environment(url, environment_value(K2, K1)))
    assert shown.returncode == 0, shown.stderr
    assert "k1: no row depends on it; it can be removed from TOKENSTORE_HASH_SECRETS." in (
        shown.stdout
    )


def test_serve_and_migrate_refuse_to_start_while_rows_depend_on_an_unlisted_key_unless_forced(
    backend: str, tmp_path: Path
) -> None:
    with database_with_rows(backend, tmp_path) as url:
        without_k1 = environment(url, environment_value(K2, DEFAULT))
        refusals = [command(name, cwd=tmp_path, env=without_k1) for name in ("migrate", "serve")]
        forced_migrate = command("migrate", "--force", cwd=tmp_path, env=without_k1)
        with serving(tmp_path, without_k1, "--force") as (base, output):
            assert httpx.get(f"{base}/ready").status_code == 200
        all_listed = environment(url, environment_value(K2, K1, DEFAULT))
        listed = command("migrate", cwd=tmp_path, env=all_listed)
    for refused in refusals:
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1].startswith("tokenstore: Refusing to start: ")
        assert (
            "'k1' (3 tokens, 1 service secrets, 2 service access tokens, 1 client secrets)"
            in refused.stderr
        )
        assert "--force" in refused.stderr
        assert "'default'" not in refused.stderr  # listed
        assert K1.secret.decode() not in refused.stderr + refused.stdout
    assert forced_migrate.returncode == 0, forced_migrate.stderr
    assert "starting with --force although rows depend on" in output[0]
    assert listed.returncode == 0, listed.stderr


def test_migrate_on_a_fresh_database_has_nothing_to_check(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        migrated = command("migrate", cwd=tmp_path, env=environment(url, environment_value(K2)))
    assert migrated.returncode == 0, migrated.stderr


def keyed_rows_metric(base: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{base}/metrics").text
    return {
        (sample.labels["kind"], sample.labels["key_id"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "tokenstore_keyed_rows"
        for sample in family.samples
    }


def test_the_keyed_rows_metric_has_the_same_counts_and_follows_a_rekey_on_every_worker(
    backend: str, tmp_path: Path
) -> None:
    with database_with_rows(backend, tmp_path) as url:
        env = environment(
            url, environment_value(K2, K1, DEFAULT), TOKENSTORE_KEYED_ROWS_INTERVAL_SECONDS="1"
        )
        with serving(tmp_path, env, "--workers", "2") as (base, _):
            first = eventually(base, lambda metric: metric.get(("tokens", "k1")) == 3)
            rekeyed = command("rekey", cwd=tmp_path, env=env)
            assert rekeyed.returncode == 0, rekeyed.stderr
            after = eventually(base, lambda metric: metric.get(("tokens", "k1")) == 0)
    assert first[("tokens", "k2")] == 2
    assert first[("service_secrets", "k1")] == first[("service_secrets", "k2")] == 1
    assert first[("service_access_tokens", "k1")] == 2
    assert first[("client_secrets", "k1")] == 1
    assert first[("unsealed_tokens", "default")] == 1
    assert after[("tokens", "k2")] == 6
    assert after[("tokens", "default")] == after[("unsealed_tokens", "default")] == 0
    assert after[("service_secrets", "k1")] == 1  # moves at its next use, not by rekey
    assert "re-keyed 4 token rows to key 'k2'" in rekeyed.stdout


def eventually(
    base: str, wanted: Callable[[dict[tuple[str, str], float]], bool], seconds: float = 10
) -> dict[tuple[str, str], float]:
    """The metric once `wanted` holds for several scrapes in a row (each may reach either
    worker), within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        metrics = [keyed_rows_metric(base) for _ in range(4)]
        if all(wanted(metric) for metric in metrics):
            return metrics[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"the metric is still {metrics[-1]}")
        time.sleep(0.2)


def test_rekey_refuses_a_batch_size_or_rest_ratio_out_of_range_and_writes_nothing(
    tmp_path: Path,
) -> None:
    with database_with_rows("sqlite", tmp_path) as url:
        env = environment(url, environment_value(K2, K1, DEFAULT))
        for option, value in [
            ("--batch-size", "0"), ("--rest-ratio", "-1"), ("--rest-ratio", "nan"),
            ("--rest-ratio", "1001"), ("--rest-ratio", "fast"),
        ]:  # fmt: skip
            refused = command("rekey", option, value, cwd=tmp_path, env=env)
            assert refused.returncode == 2, (option, value, refused.stdout)
            assert option in refused.stderr
        left = json.loads(command("keys", "--json", cwd=tmp_path, env=env).stdout)
    assert left["keys"]["k1"]["tokens"] == 3
