"""A stolen copy of the database does not give away token values chosen by callers, however
guessable (issue 13): Authlete lets a caller choose `accessToken` "1234", and a plain SHA-256
column let 10,000 guesses find it. Every column of every table of a copy of the SQLite
file is searched for every 4-digit value, as itself and as its SHA-256 (base64url, the
`accessTokenHash`; base64; hex); none is found without the hash secret.

The same search finds the values in what a plain SHA-256 column holds, so it is a search
that would find them, and in rows written before sealing until `tokenstore rekey` seals
them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import httpx

from app.db import make_engine, sqlite_file
from app.kit.hashing import b64url
from app.tokens.models import opened_hash
from tests.conftest import migrated_database
from tests.keyed_rows import DEFAULT, ring, seed_tenant, seed_tokens
from tests.resilience.tenant import ADMIN
from tests.servers import clean_environment, command, serving

CHOSEN = ("1234", "4321")  # accessToken, refreshToken, chosen by the caller
WRITTEN_BEFORE_SEALING = ("5678", "8765")  # a row from before migration 0006
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def recover(database: Path) -> set[str]:
    """Every 4-digit value that a cell of any table gives away without the secret: the
    value as the cell or as a JSON string in it, or its SHA-256 anywhere in it."""
    guesses = [f"{n:04d}" for n in range(10_000)]
    digests: dict[str, str] = {}
    for guess in guesses:
        digest = hashlib.sha256(guess.encode()).digest()
        for form in (b64url(digest), base64.b64encode(digest).decode(), digest.hex()):
            digests[form] = guess
    lengths = {len(form) for form in digests}
    found = set()
    with closing(sqlite3.connect(database)) as connection:
        # Every table but Alembic's, whose one cell is the schema's revision ("0006").
        tables = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if name != "alembic_version"
        ]
        assert {"tokens", "services", "clients", "token_events"} <= set(tables)
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - its own names
                for cell in row:
                    text = cell.hex() if isinstance(cell, bytes) else str(cell)
                    strings = {text, *_JSON_STRING.findall(text)}
                    found |= strings & set(guesses)
                    for length in lengths:
                        for start in range(len(text) - length + 1):
                            if text[start : start + length] in digests:
                                found.add(digests[text[start : start + length]])
    return found


def stolen(database: Path, to: Path) -> Path:
    """A copy of the database's files (the write-ahead log too, if any)."""
    to.mkdir()
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{database}{suffix}")
        if source.exists():
            shutil.copy(source, to / f"copy.sqlite3{suffix}")
    return to / "copy.sqlite3"


def with_plain_hashes(copy: Path) -> Path:
    """The copy as a plain SHA-256 column would hold it: each token's hashes opened (with
    the secret, which only this control may use) and stored as they are."""
    with closing(sqlite3.connect(copy)) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(
            "SELECT id, service_api_key, token_id, key_id, access_hash, refresh_hash FROM tokens"
        ).fetchall()
        for row in rows:
            fields = SimpleNamespace(**dict(row))
            connection.execute(
                "UPDATE tokens SET access_hash = ?, refresh_hash = ? WHERE id = ?",
                (
                    opened_hash(fields, ring(DEFAULT), "access"),
                    opened_hash(fields, ring(DEFAULT), "refresh"),
                    row["id"],
                ),
            )
        connection.commit()
    return copy


def test_a_stolen_copy_gives_away_no_low_entropy_token_value_without_the_secret(
    tmp_path: Path,
) -> None:
    with migrated_database("sqlite", tmp_path) as url:
        engine = make_engine(url, pool_size=1)
        try:
            tenant = seed_tenant(engine, key=DEFAULT)
            seed_tokens(
                engine, tenant, key=DEFAULT, count=1, prefix="old", sealed=False,
                values=[WRITTEN_BEFORE_SEALING],
            )  # fmt: skip
        finally:
            engine.dispose()
        database = Path(str(sqlite_file(url)))
        # The single TOKENSTORE_HASH_SECRET of most deployments: the key id "default".
        env = clean_environment(
            TOKENSTORE_ENV="production", TOKENSTORE_DATABASE_URL=url,
            TOKENSTORE_ADMIN_API_KEY=ADMIN[0], TOKENSTORE_ADMIN_API_SECRET=ADMIN[1],
            TOKENSTORE_HASH_SECRET=DEFAULT.secret.decode(),
        )  # fmt: skip
        with serving(tmp_path, env) as (base, _), httpx.Client(base_url=base) as http:
            body = {
                "grantType": "PASSWORD", "clientId": tenant.client_id, "subject": "s",
                "accessToken": CHOSEN[0], "refreshToken": CHOSEN[1],
            }  # fmt: skip
            made = http.post("/api/auth/token/create", json=body, auth=tenant.auth).json()
            assert made["action"] == "OK", made
            updated = http.post(
                "/auth/token/update",
                json={"accessToken": CHOSEN[0], "properties": [{"key": "k", "value": "v"}]},
                auth=tenant.auth,
            ).json()
            assert updated["action"] == "OK", updated
            for value in (CHOSEN[0], WRITTEN_BEFORE_SEALING[0]):  # both stored, both usable
                answer = http.post(
                    "/api/auth/introspection", json={"token": value}, auth=tenant.auth
                ).json()
                assert answer["action"] == "OK", answer
        before_rekey = stolen(database, tmp_path / "before-rekey")
        rekeyed = command("rekey", cwd=tmp_path, env=env)
        assert rekeyed.returncode == 0, rekeyed.stderr
        after_rekey = stolen(database, tmp_path / "after-rekey")

    assert recover(after_rekey) == set()
    # The search finds what it looks for: in a row written before sealing, until the
    # re-key seals it, and in every row of a plain SHA-256 column.
    assert recover(before_rekey) == set(WRITTEN_BEFORE_SEALING)
    assert recover(with_plain_hashes(after_rekey)) == {*CHOSEN, *WRITTEN_BEFORE_SEALING}
