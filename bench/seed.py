"""Fills a migrated database with one service, one client and N tokens, fast.

Tokens are written in bulk (COPY on PostgreSQL, executemany on SQLite) with the same
hashes and keyed lookup keys the service computes, so the server finds them as if it had
created them. Returns the credentials and a sample of token values for the load.
"""

from __future__ import annotations

import io
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass

import psycopg
from sqlalchemy import Engine

from app.clients import service as clients
from app.clients.service import ClientSpec
from app.db import make_sessionmaker
from app.kit.hashing import encode_value, lookup_key, token_hash
from app.kit.keys import KeyRing
from app.services import service as services
from app.services.service import ServiceSpec

COLUMNS = (
    "token_id", "service_api_key", "client_id", "subject", "grant_type", "access_key",
    "access_hash", "scopes", "access_expires_at", "persistent", "properties",
    "for_external_attachment", "created_at", "updated_at",
)  # fmt: skip


@dataclass(frozen=True)
class Seeded:
    api_key: int
    api_secret: str
    sample: list[str]  # token values the load generator may use


def seed(engine: Engine, *, tokens: int, hash_key: bytes, sample_size: int = 20_000) -> Seeded:
    now = time.time_ns() // 1_000_000
    keys = KeyRing.single(hash_key)  # the server's TOKENSTORE_HASH_SECRET
    with make_sessionmaker(engine).begin() as session:
        service, secret = services.create(
            session,
            spec=ServiceSpec("bench", None, (), 86_400, 864_000),
            keys=keys,
            now=now,
        )
        client = clients.create(
            session,
            service_api_key=service.api_key,
            spec=ClientSpec("bench", None, None, None, None),
            keys=keys,
            now=now,
        ).row
        api_key, client_id = service.api_key, client.client_id

    sample: list[str] = []
    expires = now + 30 * 86_400_000

    def rows() -> list[tuple[object, ...]]:
        batch: list[tuple[object, ...]] = []
        for index in range(tokens):
            value = encode_value(secrets.token_bytes(32))
            if len(sample) < sample_size:
                sample.append(value)
            hash_ = token_hash(value)
            batch.append((
                f"bench-{api_key}-{index}", api_key, client_id, f"user{index % 1000}",
                "AUTHORIZATION_CODE", lookup_key(api_key, hash_, hash_key), hash_, "[]",
                expires, False, "[]", False, now, now,
            ))  # fmt: skip
        return batch

    data = rows()
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        if isinstance(driver, psycopg.Connection):
            buffer = io.StringIO()
            for row in data:
                buffer.write("\t".join(_copy_text(value) for value in row) + "\n")
            with (
                driver.cursor() as cursor,
                cursor.copy(f"COPY tokens ({', '.join(COLUMNS)}) FROM STDIN") as copy,
            ):
                copy.write(buffer.getvalue())
            driver.commit()
            with driver.cursor() as cursor:
                cursor.execute("ANALYZE tokens")
            driver.commit()
        else:
            if not isinstance(driver, sqlite3.Connection):
                raise TypeError(f"cannot seed through {type(driver).__name__}")
            placeholders = ", ".join("?" for _ in COLUMNS)
            driver.execute("BEGIN IMMEDIATE")
            driver.executemany(
                f"INSERT INTO tokens ({', '.join(COLUMNS)}) VALUES ({placeholders})",  # noqa: S608 - constant column names
                data,
            )
            driver.execute("COMMIT")
            driver.execute("ANALYZE")
    finally:
        raw.close()
    return Seeded(api_key, secret, sample)


def _copy_text(value: object) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
