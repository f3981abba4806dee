"""`tokenstore rekey` (app.keyring.rekey): every token row under an older listed key, or
not yet sealed, moves to the current key from its stored hashes, in bounded batches, beside
a serving instance; rows it cannot open are left and counted."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from app.db import make_engine, make_sessionmaker
from app.keyring import TOKENS, UNSEALED_TOKENS, read_sessions, rekey, rekeyed_columns
from app.kit.hashing import lookup_key, refresh_lookup_key, token_hash
from app.kit.keys import HashKey, is_sealed
from app.tokens import repository
from app.tokens.models import KEYED_COLUMNS, TokenRow, keyed_columns, opened_hash
from tests.conftest import migrated_database
from tests.keyed_rows import (
    DEFAULT,
    K1,
    K2,
    NOW,
    SeededToken,
    Tenant,
    environment_value,
    ring,
    seed_tenant,
    seed_tokens,
    stored_tokens,
)
from tests.resilience.load import Load, torn_tokens
from tests.resilience.tenant import ADMIN
from tests.servers import clean_environment, serving


@pytest.fixture
def fresh(backend: str, tmp_path: Path) -> Iterator[Engine]:
    """A database of its own: a re-key goes over the whole table and commits."""
    with migrated_database(backend, tmp_path) as url:
        engine = make_engine(url, pool_size=2)
        try:
            yield engine
        finally:
            engine.dispose()


def rows_per_update(engine: Engine) -> list[int]:
    """The rows each `UPDATE tokens` statement that runs from now on writes."""
    sizes: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(_c: Any, _cur: Any, statement: str, parameters: Any, _x: Any, many: bool) -> None:
        if statement.startswith("UPDATE tokens"):
            sizes.append(len(parameters) if many else 1)

    return sizes


def assert_under(row: dict[str, Any], token: SeededToken, tenant: Tenant, key: HashKey) -> None:
    """The row's lookup keys are made with `key`, and its hashes sealed under it."""
    access, refresh = token_hash(token.access), token.refresh and token_hash(token.refresh)
    assert row["key_id"] == key.id
    assert row["access_key"] == lookup_key(tenant.api_key, access, key.secret)
    assert is_sealed(row["access_hash"])
    assert opened_hash(SimpleNamespace(**row), ring(key), "access") == access
    if refresh is None:
        assert row["refresh_key"] is None
        assert row["refresh_hash"] is None
    else:
        assert row["refresh_key"] == refresh_lookup_key(tenant.api_key, refresh, key.secret)
        assert is_sealed(row["refresh_hash"])
        assert opened_hash(SimpleNamespace(**row), ring(key), "refresh") == refresh


def state_columns(row: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name not in KEYED_COLUMNS}


def test_rekey_moves_every_token_under_an_older_key_or_not_sealed_to_the_current_key_in_batches(
    fresh: Engine,
) -> None:
    tenant = seed_tenant(fresh, key=K2)
    under_k1 = seed_tokens(fresh, tenant, key=K1, count=7, prefix="k1")
    plain = seed_tokens(fresh, tenant, key=DEFAULT, count=3, prefix="plain", sealed=False)
    under_k2 = seed_tokens(fresh, tenant, key=K2, count=2, prefix="k2", refresh=False)
    before = stored_tokens(fresh)
    sizes = rows_per_update(fresh)

    report = rekey(fresh, ring(K2, K1, DEFAULT), batch_size=3, rest_ratio=0, pause_seconds=0)

    assert (report.rekeyed, report.batches, report.unopenable) == (10, 4, 0)
    assert sizes == [3, 3, 3, 1]  # one statement per batch, in its own transaction
    after = stored_tokens(fresh)
    for token in under_k1 + plain + under_k2:
        assert_under(after[token.token_id], token, tenant, K2)
        # A re-key changes no token's state: not even when it was updated.
        assert state_columns(after[token.token_id]) == state_columns(before[token.token_id])
        assert after[token.token_id]["updated_at"] == NOW
    for token in under_k2:
        assert after[token.token_id] == before[token.token_id]  # already there: untouched
    assert report.left.rows["k2"][TOKENS] == 12
    assert report.left.rows["k1"][TOKENS] == report.left.rows["default"][TOKENS] == 0
    assert report.left.rows["k2"][UNSEALED_TOKENS] == 0


def test_a_single_secret_deployment_seals_its_rows_written_before_sealing(fresh: Engine) -> None:
    """TOKENSTORE_HASH_SECRET alone is the key "default": rows written before migration 0006
    hold plain SHA-256 hashes under it, and a re-key seals them without another key."""
    tenant = seed_tenant(fresh, key=DEFAULT)
    plain = seed_tokens(fresh, tenant, key=DEFAULT, count=4, prefix="plain", sealed=False)
    report = rekey(fresh, ring(DEFAULT), batch_size=10, rest_ratio=0, pause_seconds=0)
    assert report.rekeyed == 4
    after = stored_tokens(fresh)
    for token in plain:
        assert_under(after[token.token_id], token, tenant, DEFAULT)
    assert report.left.rows["default"][UNSEALED_TOKENS] == 0
    assert "0 not sealed" in report.summary()
    assert rekey(fresh, ring(DEFAULT), batch_size=10, rest_ratio=0, pause_seconds=0).rekeyed == 0


def test_rows_under_a_key_id_that_is_no_longer_listed_are_left_and_counted(fresh: Engine) -> None:
    tenant = seed_tenant(fresh, key=K2)
    dropped = HashKey.of("old", b"o" * 40)
    left = seed_tokens(fresh, tenant, key=dropped, count=3, prefix="old")
    moved = seed_tokens(fresh, tenant, key=K1, count=2, prefix="k1")
    plain_dropped = seed_tokens(fresh, tenant, key=dropped, count=1, prefix="p", sealed=False)
    before = stored_tokens(fresh)

    report = rekey(fresh, ring(K2, K1), batch_size=2, rest_ratio=0, pause_seconds=0)

    assert report.rekeyed == 2
    after = stored_tokens(fresh)
    for token in left + plain_dropped:
        assert after[token.token_id] == before[token.token_id]
    for token in moved:
        assert_under(after[token.token_id], token, tenant, K2)
    assert report.left.unlisted() == {
        "old": {
            TOKENS: 4,
            UNSEALED_TOKENS: 1,
            "service_secrets": 0,
            "service_access_tokens": 0,
            "client_secrets": 0,
        }
    }
    assert "4 under key ids that are not listed ('old': 4)" in report.summary()


def test_rows_their_listed_key_id_does_not_open_are_left_and_counted(fresh: Engine) -> None:
    """The id "k1" listed with another secret than the one that sealed the rows (a typo in
    TOKENSTORE_HASH_SECRETS): nothing is overwritten, and the report says so."""
    tenant = seed_tenant(fresh, key=K2)
    sealed = seed_tokens(fresh, tenant, key=K1, count=3, prefix="k1")
    before = stored_tokens(fresh)
    wrong_k1 = HashKey.of("k1", b"not-the-secret-that-sealed-them" + b"x" * 10)

    report = rekey(fresh, ring(K2, wrong_k1), batch_size=2, rest_ratio=0, pause_seconds=0)

    assert (report.rekeyed, report.unopenable) == (0, 3)
    assert stored_tokens(fresh) == before
    assert report.left.rows["k1"][TOKENS] == len(sealed)
    assert "3 token rows do not open under the secret listed for their key id" in report.summary()


def test_a_row_an_update_moved_between_the_read_and_the_write_keeps_what_the_update_wrote(
    fresh: Engine,
) -> None:
    """A batch reads and seals outside its write transaction: a row an update moved to the
    current key meanwhile (here with a new value, as a regeneration does) is not written
    back with what the batch read (SQLite: compare and set; PostgreSQL: compared once
    locked)."""
    tenant = seed_tenant(fresh, key=K2)
    tokens = seed_tokens(fresh, tenant, key=K1, count=3, prefix="k1")
    keys = ring(K2, K1)
    with read_sessions(fresh)() as session:
        read = repository.rekey_candidates(
            session, listed=keys.ids, current="k2", after_id=0, limit=10
        )
    made = {token.id: columns for token in read if (columns := rekeyed_columns(token, keys))}
    moved = tokens[1]
    renewed = keyed_columns(
        token_hash("renewed"), None, key=K2, service_api_key=tenant.api_key,
        token_id=moved.token_id,
    )  # fmt: skip
    writes = make_sessionmaker(fresh)
    with writes.begin() as session:
        session.execute(update(TokenRow).where(TokenRow.token_id == moved.token_id).values(renewed))
    updated = stored_tokens(fresh)[moved.token_id]

    with writes.begin() as session:
        assert repository.move_keyed(session, read, made) == 2

    after = stored_tokens(fresh)
    assert after[moved.token_id] == updated
    for token in (tokens[0], tokens[2]):
        assert_under(after[token.token_id], token, tenant, K2)


def test_rekey_rests_rest_ratio_times_as_long_as_each_batch_took(
    fresh: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its pace, on a clock that advances 10 ms per SQL statement and by each rest: after
    each batch it rests 19 times as long as the batch's read, wait and write took (as its
    log line gives them)."""
    tenant = seed_tenant(fresh, key=K2)
    seed_tokens(fresh, tenant, key=K1, count=5, prefix="k1")
    now = [0.0]
    rests: list[float] = []

    @event.listens_for(fresh, "before_cursor_execute")
    def _statement(*_: Any) -> None:
        now[0] += 0.01

    def sleep(seconds: float) -> None:
        rests.append(seconds)
        now[0] += seconds

    monkeypatch.setattr("app.keyring.time", SimpleNamespace(monotonic=lambda: now[0], sleep=sleep))
    with caplog.at_level(logging.INFO, logger="tokenstore.keyring"):
        report = rekey(fresh, ring(K2, K1), batch_size=2, rest_ratio=19, pause_seconds=0)

    assert report.rekeyed == 5
    took = [
        sum(float(part.split("=")[1]) for part in record.getMessage().split()[4:]) / 1000
        for record in caplog.records
        if record.getMessage().startswith("rekey batch")
    ]
    assert len(took) == len(rests) == 3  # a rest after each batch that found rows
    assert all(seconds > 0 for seconds in took)
    assert rests == [pytest.approx(19 * seconds) for seconds in took]


@pytest.mark.postgresql_only
def test_rekey_skips_a_row_a_live_update_holds_and_the_next_run_moves_it(fresh: Engine) -> None:
    tenant = seed_tenant(fresh, key=K2)
    tokens = seed_tokens(fresh, tenant, key=K1, count=5, prefix="k1")
    held = tokens[2]
    with fresh.connect() as update, update.begin():
        # What a live update holds between its locked read and its commit.
        update.execute(
            select(TokenRow.id).where(TokenRow.token_id == held.token_id).with_for_update()
        )
        started = time.monotonic()
        report = rekey(fresh, ring(K2, K1), batch_size=2, rest_ratio=0, pause_seconds=0)
        assert time.monotonic() - started < 5  # it did not wait for the lock
    assert report.rekeyed == 4
    assert report.left.rows["k1"][TOKENS] == 1
    assert stored_tokens(fresh)[held.token_id]["key_id"] == "k1"

    assert rekey(fresh, ring(K2, K1), batch_size=2, rest_ratio=0, pause_seconds=0).rekeyed == 1
    assert_under(stored_tokens(fresh)[held.token_id], held, tenant, K2)


def test_rekey_beside_a_server_updating_the_same_tokens_fails_no_request_and_tears_none(
    backend: str, tmp_path: Path
) -> None:
    """Two workers update tokens under k1 (each update moves its token to k2) while the
    re-key moves them in small batches: on PostgreSQL an update waits on a batch's row lock
    and finds its token moved under k2; on SQLite both queue at the writers' file lock."""
    with migrated_database(backend, tmp_path) as url:
        engine = make_engine(url, pool_size=2)
        try:
            tenant = seed_tenant(engine, key=K2)
            tokens = seed_tokens(engine, tenant, key=K1, count=600, prefix="live")
            env = clean_environment(
                TOKENSTORE_ENV="production", TOKENSTORE_DATABASE_URL=url,
                TOKENSTORE_ADMIN_API_KEY=ADMIN[0], TOKENSTORE_ADMIN_API_SECRET=ADMIN[1],
                TOKENSTORE_HASH_SECRETS=environment_value(K2, K1),
            )  # fmt: skip
            with (
                serving(tmp_path, env, "--workers", "2") as (base, _),
                Load(base, tenant.auth, [token.access for token in tokens], threads=8) as load,
            ):
                time.sleep(0.5)
                started = time.monotonic()
                report = rekey(engine, ring(K2, K1), batch_size=10, rest_ratio=0, pause_seconds=0)
                ended = time.monotonic()
                time.sleep(0.5)
        finally:
            engine.dispose()
        statuses = [status for _, status, _ in load.answers]
        during = [status for at, status, _ in load.answers if started <= at <= ended]
        assert report.rekeyed > 0
        assert len(during) > 20, "the updates ran while the re-key did"
        assert set(statuses) == {200}
        assert {body["action"] for _, _, body in load.answers if body is not None} == {"OK"}
        assert torn_tokens(url) == []
        rows = stored_tokens_at(url)
        assert {row["key_id"] for row in rows.values()} == {"k2"}
        for token in tokens:
            assert_under(rows[token.token_id], token, tenant, K2)


def stored_tokens_at(url: str) -> dict[str, dict[str, Any]]:
    engine = make_engine(url, pool_size=1)
    try:
        return stored_tokens(engine)
    finally:
        engine.dispose()
