"""Throughput and latency of POST /auth/token/update, beside two floors measured in the same
run on the same machine:

- the framework floor: POST /bench/noop on the same server configuration (same workers,
  same middleware), which does no database work;
- the database floor (PostgreSQL): pgbench running the SQL transaction of one update
  (service lookup, token row locked, token row updated, commit).

For each database and store size (tokens seeded in bulk), at each concurrency: wrk drives
the server for --seconds after a warm-up. The last line summarizes PostgreSQL at
concurrency 16 on the largest store:

  update_vs_framework_floor=R1 update_vs_db_floor=R2 p99_ms=P growth_1e6_vs_1e4=G

R1 = update rps / no-op rps, R2 = update rps / pgbench tps, P = update p99 in ms, and
G = update p50 latency on the largest store / on the smallest.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from app.db import driver_url, make_engine
from app.migrate import upgrade
from bench.seed import seed

HERE = Path(__file__).parent
TOKENSTORE = str(Path(sys.executable).with_name("tokenstore"))
HASH_SECRET = "bench-hash-secret-" + "x" * 32


@dataclass
class Measure:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0


@dataclass
class Row:
    backend: str
    tokens: int
    concurrency: int
    update: Measure
    noop: Measure
    database: Measure | None


@contextmanager
def database(backend: str, admin_url: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{secrets.token_hex(3)}.sqlite3'}"
        return
    name = f"tokenstore_bench_{secrets.token_hex(4)}"
    admin = create_engine(driver_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def server(url: str, workers: int, workdir: Path) -> Iterator[str]:
    with socket_port() as port:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TOKENSTORE_")},
            "TOKENSTORE_DATABASE_URL": url,
            "TOKENSTORE_ADMIN_API_KEY": "bench",
            "TOKENSTORE_ADMIN_API_SECRET": "y" * 40,
            "TOKENSTORE_HASH_SECRET": HASH_SECRET,
            "TOKENSTORE_BENCH_ENDPOINTS": "true",
            "TOKENSTORE_DATA_DIR": str(workdir),
        }
        log = (workdir / f"serve-{port}.log").open("w")
        process = subprocess.Popen(
            [TOKENSTORE, "serve", "--port", str(port), "--workers", str(workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start; see {log.name}")
                time.sleep(0.2)
            yield base
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            log.close()


@contextmanager
def socket_port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    yield port


def wrk(base: str, *, concurrency: int, seconds: int, tokens_file: Path, auth: str,
        path: str) -> Measure:  # fmt: skip
    threads = min(concurrency, 2)
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(HERE / "update.lua"), base, "--", str(tokens_file), auth, path],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH "))
    fields = dict(part.split("=") for part in line.split()[1:])
    return Measure(
        rps=float(fields["rps"]),
        p50_ms=int(fields["p50_us"]) / 1000,
        p99_ms=int(fields["p99_us"]) / 1000,
        errors=int(fields["errors"]) + int(fields["status_errors"]),
    )


def pgbench(url: str, *, concurrency: int, seconds: int, api_key: int, tokens: int,
            workdir: Path) -> Measure:  # fmt: skip
    """The SQL of one update, as the service runs it, in one transaction. Prepared
    statements, as psycopg prepares the service's own after a few executions."""
    script = workdir / "update.sql"
    script.write_text(
        f"\\set id random(0, {tokens - 1})\n"
        "BEGIN;\n"
        f"SELECT secret_digest FROM services WHERE api_key = {api_key};\n"
        "SELECT * FROM tokens "
        f"WHERE service_api_key = {api_key} AND token_id = 'bench-{api_key}-' || :id "
        "FOR UPDATE;\n"
        "UPDATE tokens SET access_expires_at = access_expires_at + 1, "
        "updated_at = updated_at + 1, properties = properties, scopes = scopes "
        f"WHERE token_id = 'bench-{api_key}-' || :id;\n"
        "COMMIT;\n"
    )
    parsed = make_url(url)
    prefix = workdir / f"pgbench-{concurrency}"
    for old in workdir.glob(f"{prefix.name}*"):
        old.unlink()
    subprocess.run(
        ["pgbench", "-n", "-M", "prepared", "-h", parsed.host or "127.0.0.1",
         "-p", str(parsed.port or 5432), "-U", parsed.username or "postgres",
         "-c", str(concurrency), "-j", str(min(concurrency, 2)), "-T", str(seconds),
         "-f", str(script),
         "-l", f"--log-prefix={prefix}", parsed.database or ""],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    latencies = sorted(
        int(line.split()[2])
        for log in workdir.glob(f"{prefix.name}*")
        for line in log.read_text().splitlines()
        if line.strip()
    )
    quantiles = statistics.quantiles(latencies, n=100)
    return Measure(
        rps=len(latencies) / seconds, p50_ms=quantiles[49] / 1000, p99_ms=quantiles[98] / 1000
    )


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tokenstore-bench-") as tmp:
        workdir = Path(tmp)
        for backend in args.backends:
            for size in args.sizes:
                with database(backend, args.postgres, workdir) as url:
                    engine = make_engine(url, pool_size=1)
                    upgrade(engine)
                    started = time.monotonic()
                    seeded = seed(engine, tokens=size, hash_key=HASH_SECRET.encode())
                    engine.dispose()
                    print(f"# {backend}: seeded {size} tokens in "
                          f"{time.monotonic() - started:.1f} s", file=sys.stderr)  # fmt: skip
                    tokens_file = workdir / "tokens.txt"
                    tokens_file.write_text("\n".join(seeded.sample) + "\n")
                    auth = (
                        "Basic "
                        + base64.b64encode(
                            f"{seeded.api_key}:{seeded.api_secret}".encode()
                        ).decode()
                    )
                    with server(url, args.workers, workdir) as base:
                        check = httpx.post(
                            f"{base}/auth/token/update",
                            json={"accessToken": seeded.sample[0], "accessTokenExpiresAt": 1},
                            headers={"Authorization": auth},
                        ).json()
                        if check.get("action") != "OK":
                            raise SystemExit(f"the seeded tokens are not found: {check}")
                        wrk(base, concurrency=16, seconds=3, path="/auth/token/update",
                            tokens_file=tokens_file, auth=auth)  # warm-up  # fmt: skip
                        for concurrency in args.concurrency:
                            update = wrk(base, concurrency=concurrency, seconds=args.seconds,
                                         path="/auth/token/update", tokens_file=tokens_file,
                                         auth=auth)  # fmt: skip
                            noop = wrk(base, concurrency=concurrency, seconds=args.seconds,
                                       path="/bench/noop", tokens_file=tokens_file,
                                       auth=auth)  # fmt: skip
                            db = None
                            if backend == "postgresql":
                                db = pgbench(url, concurrency=concurrency, seconds=args.seconds,
                                             api_key=seeded.api_key, tokens=size,
                                             workdir=workdir)  # fmt: skip
                            rows.append(Row(backend, size, concurrency, update, noop, db))
                            print(f"# {backend} {size} c{concurrency}: update {update.rps:.0f}/s "
                                  f"p99 {update.p99_ms:.1f} ms", file=sys.stderr)  # fmt: skip
    return rows


def report(rows: list[Row]) -> None:
    header = (
        f"{'database':<11}{'tokens':>9}{'conc':>6}{'update/s':>10}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'noop/s':>9}{'p99 ms':>8}{'sql tx/s':>10}{'p99 ms':>8}{'R1':>6}{'R2':>6}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        db = row.database
        r2 = f"{row.update.rps / db.rps:6.2f}" if db else f"{'-':>6}"
        print(
            f"{row.backend:<11}{row.tokens:>9}{row.concurrency:>6}{row.update.rps:>10.0f}"
            f"{row.update.p50_ms:>8.2f}{row.update.p99_ms:>8.2f}{row.noop.rps:>9.0f}"
            f"{row.noop.p99_ms:>8.2f}"
            + (f"{db.rps:>10.0f}{db.p99_ms:>8.2f}" if db else f"{'-':>10}{'-':>8}")
            + f"{row.update.rps / row.noop.rps:>6.2f}{r2}{row.update.errors:>8}"
        )
    postgres = [r for r in rows if r.backend == "postgresql" and r.concurrency == 16]
    if not postgres:
        return
    largest = max(postgres, key=lambda r: r.tokens)
    smallest = min(postgres, key=lambda r: r.tokens)
    if largest.database is None:
        return
    print(
        f"update_vs_framework_floor={largest.update.rps / largest.noop.rps:.2f} "
        f"update_vs_db_floor={largest.update.rps / largest.database.rps:.2f} "
        f"p99_ms={largest.update.p99_ms:.1f} "
        f"growth_1e6_vs_1e4={largest.update.p50_ms / smallest.update.p50_ms:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=lambda s: s.split(","), default=["postgresql", "sqlite"])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[10_000, 1_000_000])  # fmt: skip
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 16, 64])  # fmt: skip
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--postgres", default=os.environ.get(
        "TOKENSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))  # fmt: skip
    args = parser.parse_args()
    for tool in ("wrk", "pgbench"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench needs {tool} (Debian: apt-get install wrk postgresql-client)")
    if re.search(r"[^a-z,]", ",".join(args.backends)):
        raise SystemExit("--backends takes postgresql and/or sqlite")
    report(run(args))


if __name__ == "__main__":
    main()
