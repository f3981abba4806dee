"""Rotating the hash secrets (issue 13): which rows depend on which key id, the check at
start, the metric, and `tokenstore rekey`.

The key ring and what is derived from it are pure (app.kit.keys); this is the shell
around them. Every kind of keyed row records its key id (migration 0006):

- tokens: their lookup keys and sealed hashes. `rekey` moves them to the current key from
  their stored hashes, and so does every update of one;
- service secrets, service access tokens and client secrets: keyed digests of secrets
  that are never stored, so each moves at its next successful use, and one never used
  while the old key is listed stops working when it is removed.

`KeyedRows` is the one shape of "how many rows of each kind depend on each key id", for
`tokenstore keys`, its `--json`, the metric and the refusal at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app import metrics
from app.clients import repository as clients
from app.db import READ_ONLY, is_sqlite, make_sessionmaker
from app.filelock import FileLock
from app.kit.keys import KeyRing, Unopenable
from app.services import repository as services
from app.tokens import repository as tokens
from app.tokens.models import keyed_columns, opened_hash
from app.transactions import lock_beside

log = logging.getLogger("tokenstore.keyring")

TOKENS = "tokens"
# A part of TOKENS: rows whose hashes are stored as plain SHA-256 (written before sealing).
UNSEALED_TOKENS = "unsealed_tokens"
SERVICE_SECRETS = "service_secrets"
SERVICE_ACCESS_TOKENS = "service_access_tokens"
CLIENT_SECRETS = "client_secrets"
KINDS = (TOKENS, UNSEALED_TOKENS, SERVICE_SECRETS, SERVICE_ACCESS_TOKENS, CLIENT_SECRETS)
# The kinds whose rows cannot be used without their key (UNSEALED_TOKENS is in TOKENS).
DEPENDENT_KINDS = (TOKENS, SERVICE_SECRETS, SERVICE_ACCESS_TOKENS, CLIENT_SECRETS)
KIND_NAMES = {
    TOKENS: "tokens",
    UNSEALED_TOKENS: "unsealed tokens",
    SERVICE_SECRETS: "service secrets",
    SERVICE_ACCESS_TOKENS: "service access tokens",
    CLIENT_SECRETS: "client secrets",
}

REKEY_BATCH_SIZE = 100
# After each batch `rekey` rests this many times as long as the batch took (see `rekey`).
REKEY_REST_RATIO = 19.0
# The least rest between two batches (see `rekey`): on SQLite the server's writers wait on
# the same file lock, and each gets its turn before the next batch takes it again.
REKEY_PAUSE_SECONDS = 0.005
# A pass skips the rows a live update holds (that update moves its row itself); a row whose
# update did not commit is taken by the next pass.
REKEY_PASSES = 3


@dataclass(frozen=True, slots=True)
class KeyedRows:
    """How many rows of each kind depend on each key id: every listed key (zeros too), the
    current one first, then every other key id that rows carry."""

    current: str
    listed: tuple[str, ...]
    rows: Mapping[str, Mapping[str, int]]  # key id -> kind (every one of KINDS) -> rows

    def dependents(self, key_id: str) -> int:
        """The rows that cannot be used without this key."""
        return sum(self.rows[key_id][kind] for kind in DEPENDENT_KINDS)

    def unlisted(self) -> dict[str, Mapping[str, int]]:
        """Key ids that are not listed and that rows still depend on."""
        return {
            key_id: kinds
            for key_id, kinds in self.rows.items()
            if key_id not in self.listed and self.dependents(key_id)
        }

    def samples(self) -> Iterator[tuple[str, str, int]]:
        """(kind, key id, rows): the metric's samples."""
        for key_id, kinds in self.rows.items():
            for kind, count in kinds.items():
                yield kind, key_id, count

    def document(self) -> dict[str, Any]:
        """`tokenstore keys --json`."""
        return {
            "current": self.current,
            "listed": list(self.listed),
            "keys": {
                key_id: {"status": self._status(key_id), **kinds}
                for key_id, kinds in self.rows.items()
            },
        }

    def table(self) -> str:
        """`tokenstore keys`: a row per key id, then what to do about each."""
        header = ["key id", "status", *(KIND_NAMES[kind] for kind in KINDS)]
        lines = [header] + [
            [key_id, self._status(key_id), *(str(kinds[kind]) for kind in KINDS)]
            for key_id, kinds in self.rows.items()
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = [
            "  ".join(
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
            for line in lines
        ]
        return "\n".join([*text, "", *self._advice()])

    def _status(self, key_id: str) -> str:
        if key_id == self.current:
            return "current"
        return "listed" if key_id in self.listed else "unlisted"

    def _advice(self) -> Iterator[str]:
        for key_id, kinds in self.rows.items():
            left = self.dependents(key_id)
            if key_id == self.current:
                if kinds[UNSEALED_TOKENS]:
                    yield (
                        f"{key_id}: {kinds[UNSEALED_TOKENS]} token rows are not sealed yet; "
                        "`tokenstore rekey` seals them."
                    )
            elif key_id in self.listed and not left:
                yield (
                    f"{key_id}: no row depends on it; it can be removed from "
                    "TOKENSTORE_HASH_SECRETS."
                )
            elif key_id in self.listed:
                yield (
                    f"{key_id}: {_rows_text(kinds)} depend on it; keep it listed. "
                    + ("`tokenstore rekey` moves the tokens; " if kinds[TOKENS] else "")
                    + "a credential moves at its next successful use."
                )
            elif left:
                yield (
                    f"{key_id}: NOT LISTED, and {_rows_text(kinds)} depend on it: they cannot "
                    "be used until it is listed again."
                )


def _rows_text(kinds: Mapping[str, int]) -> str:
    return ", ".join(f"{kinds[kind]} {KIND_NAMES[kind]}" for kind in DEPENDENT_KINDS if kinds[kind])


def keyed_rows(session: Session, keys: KeyRing) -> KeyedRows:
    """Counts every kind of keyed row per key id (a scan of each table)."""
    counted: dict[str, dict[str, int]] = {}

    def add(kind: str, key_id: str, rows: int) -> None:
        counted.setdefault(key_id, dict.fromkeys(KINDS, 0))[kind] = rows

    for key_id, rows, unsealed in tokens.count_by_key(session):
        add(TOKENS, key_id, rows)
        add(UNSEALED_TOKENS, key_id, unsealed)
    for key_id, rows in services.count_secrets_by_key(session):
        add(SERVICE_SECRETS, key_id, rows)
    for key_id, rows in services.count_access_tokens_by_key(session):
        add(SERVICE_ACCESS_TOKENS, key_id, rows)
    for key_id, rows in clients.count_secrets_by_key(session):
        add(CLIENT_SECRETS, key_id, rows)
    others = sorted(key_id for key_id in counted if key_id not in keys.ids)
    return KeyedRows(
        current=keys.current.id,
        listed=keys.ids,
        rows={
            key_id: counted.get(key_id, dict.fromkeys(KINDS, 0)) for key_id in (*keys.ids, *others)
        },
    )


def read_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for the counts: reads that take no SQLite write lock."""
    return make_sessionmaker(engine.execution_options(**{READ_ONLY: True}))


def count(sessions: sessionmaker[Session], keys: KeyRing) -> KeyedRows:
    """`keyed_rows` in a session of its own."""
    with sessions() as session:
        return keyed_rows(session, keys)


def refusal(rows: KeyedRows) -> str | None:
    """What makes `serve` and `migrate` refuse to start: each key id that rows depend on
    and that is not listed, with its counts; None when there is none."""
    unlisted = rows.unlisted()
    if not unlisted:
        return None
    named = "; ".join(f"{key_id!r} ({_rows_text(kinds)})" for key_id, kinds in unlisted.items())
    return f"rows depend on hash secret key ids that are not listed: {named}"


# --- The metric ------------------------------------------------------------------------------


async def observe_periodically(
    sessions: sessionmaker[Session], keys: KeyRing, *, interval_seconds: float
) -> None:
    """Counts the keyed rows for `tokenstore_keyed_rows` now and every `interval_seconds`,
    off the event loop (a scan of each table: never per scrape)."""
    shown: set[tuple[str, str]] = set()
    while True:
        try:
            rows = await anyio.to_thread.run_sync(count, sessions, keys)
        except Exception:  # a failed count is logged and retried next time; serving goes on
            log.exception("counting the keyed rows failed")
        else:
            labels = {(kind, key_id) for kind, key_id, _ in rows.samples()}
            metrics.observe_keyed_rows(rows.samples(), gone=shown - labels)
            shown |= labels
        await asyncio.sleep(interval_seconds)


# --- tokenstore rekey --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RekeyReport:
    rekeyed: int  # token rows moved to the current key (and sealed)
    batches: int  # transactions that moved rows
    # Sealed under a listed key id whose secret does not open them: that id is listed with
    # another secret than the one that sealed them. Left as they are.
    unopenable: int
    left: KeyedRows  # what depends on what once the run is over

    def summary(self) -> str:
        """What `tokenstore rekey` prints."""
        left = self.left
        older = sum(left.rows[key_id][TOKENS] for key_id in left.listed if key_id != left.current)
        unlisted = {key_id: kinds[TOKENS] for key_id, kinds in left.unlisted().items()}
        lines = [
            f"re-keyed {self.rekeyed} token rows to key {left.current!r} in {self.batches} "
            "batches.",
            f"token rows left: {older} under older listed keys, "
            f"{left.rows[left.current][UNSEALED_TOKENS]} not sealed, "
            f"{sum(unlisted.values())} under key ids that are not listed"
            + (
                " (" + ", ".join(f"{key_id!r}: {rows}" for key_id, rows in unlisted.items()) + ")"
                if unlisted
                else ""
            )
            + ".",
            "Service secrets, service access tokens and client secrets are not re-keyed here: "
            "each moves to the current key at its next successful use (`tokenstore keys`).",
        ]
        if self.unopenable:
            lines.insert(
                2,
                f"{self.unopenable} token rows do not open under the secret listed for their "
                "key id: is that id listed with the secret that sealed them?",
            )
        return "\n".join(lines)


def rekeyed_columns(token: tokens.KeyedToken, keys: KeyRing) -> dict[str, Any] | None:
    """A token row's keyed columns made anew under the current key from its stored hashes
    (opened with the row's key; a plain hash as it is), with its `row_id`; None when the
    row's key does not open them."""
    try:
        access = opened_hash(token, keys, "access")
        refresh = opened_hash(token, keys, "refresh")
    except Unopenable:
        return None
    if not access:  # the row's key is not listed: never a candidate (`rekey_candidates`)
        return None
    columns = keyed_columns(
        access, refresh, key=keys.current, service_api_key=token.service_api_key,
        token_id=token.token_id,
    )  # fmt: skip
    return columns | {"row_id": token.id}


def rekey(
    engine: Engine,
    keys: KeyRing,
    *,
    batch_size: int = REKEY_BATCH_SIZE,
    rest_ratio: float = REKEY_REST_RATIO,
    pause_seconds: float = REKEY_PAUSE_SECONDS,
) -> RekeyReport:
    """Moves every token row under an older listed key, or not yet sealed, to the current
    key, `batch_size` rows at a time in id order, beside a serving instance. Rows under key
    ids no longer listed are left, and counted.

    A batch reads its rows without a lock and makes their columns anew (the costly part,
    the cryptography); then one short transaction locks the rows and writes those still as
    read: a row an update moved meanwhile is left out, and on PostgreSQL so is one a live
    update holds (SKIP LOCKED), since that update moves it itself. On SQLite the
    transaction takes its turn at the writers' file lock. After each batch the job rests
    `rest_ratio` times as long as the batch took (its wait for that turn included), so it
    takes at most 1/(1 + rest_ratio) of a processor, or of SQLite's writer, from the server
    beside it (docs/decisions.md 89, bench/README.md)."""
    url = engine.url.render_as_string(hide_password=False)
    turn = lock_beside(url) if is_sqlite(url) else None
    reads, writes = read_sessions(engine), make_sessionmaker(engine)
    rekeyed = batches = unopenable = 0
    try:
        for _ in range(REKEY_PASSES):
            moved = unopenable = 0
            after_id = 0
            while True:
                started = time.monotonic()
                with reads() as session:
                    chosen = tokens.rekey_candidates(
                        session, listed=keys.ids, current=keys.current.id, after_id=after_id,
                        limit=batch_size,
                    )  # fmt: skip
                if not chosen:
                    break
                after_id = chosen[-1].id
                made = {
                    token.id: columns
                    for token in chosen
                    if (columns := rekeyed_columns(token, keys)) is not None
                }
                unopenable += len(chosen) - len(made)
                prepared = time.monotonic()
                with _turn(turn):
                    turned = time.monotonic()
                    with writes.begin() as session:
                        written_rows = tokens.move_keyed(session, chosen, made)
                written = time.monotonic()
                moved += written_rows
                batches += 1 if written_rows else 0
                log.info(
                    "rekey batch moved=%d after_id=%d prepare_ms=%.1f wait_ms=%.1f write_ms=%.1f",
                    written_rows, after_id, 1000 * (prepared - started), 1000 * (turned - prepared),
                    1000 * (written - turned),
                )  # fmt: skip
                time.sleep(max(pause_seconds, rest_ratio * (written - started)))
            rekeyed += moved
            if not moved:
                break
    finally:
        if turn is not None:
            turn.close()
    return RekeyReport(rekeyed, batches, unopenable, count(reads, keys))


@contextmanager
def _turn(lock: FileLock | None) -> Iterator[None]:
    if lock is None:
        yield
        return
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
