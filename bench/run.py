"""Token introspection, Authlete style and RFC 7662, beside a peer (node-oidc-provider on
the same PostgreSQL server, bench/peer.py), and POST /auth/token/update beside two floors:

- the framework floor: POST /bench/noop on the same server configuration (same workers,
  same middleware), which does no database work;
- the database floor (PostgreSQL): pgbench running the SQL transaction of one update
  (service lookup, token row locked, token row updated, commit).

For each database and store size (both systems seeded in bulk with the same number of
tokens), at each concurrency, --rounds rounds each run every cell once, interleaved:
tokenstore's introspection (POST /api/auth/introspection), the peer's introspection
(POST /token/introspection), tokenstore's standard introspection
(POST /api/auth/introspection/standard), the peer again, the update, the no-op and
pgbench. A cell is wrk (or pgbench) for --seconds after a --warmup of the same load (and
each load runs once for 3 * --warmup seconds when the servers have started). Each
ratio is computed per round, from cells run minutes apart at most; the summary takes the
median of the per-round ratios. The last line summarizes PostgreSQL at concurrency 16 on
the largest store:

  introspection_vs_peer=X standard_vs_peer=Y update_vs_db_floor=Z introspection_p99_ms=P
  growth_1e6_vs_1e4=G

X = tokenstore introspection rps / peer rps, Y = standard introspection rps / peer rps
(the peer cell that follows it), Z = update rps / pgbench tps, P = the median over rounds
of the introspection's p99, G = the introspection's median p50 on the largest store / on
the smallest (nan with one store size). SQLite has no peer and no pgbench: its cells are
reported with their ratio to the no-op.
"""

from __future__ import annotations

import argparse
import base64
import math
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from app.db import driver_url, make_engine
from app.migrate import upgrade
from bench import peer
from bench.seed import seed

HERE = Path(__file__).parent
TOKENSTORE = str(Path(sys.executable).with_name("tokenstore"))
HASH_SECRET = "bench-hash-secret-" + "x" * 32

INTROSPECTION = "introspection"
PEER = "peer"
STANDARD = "standard"
PEER_AGAIN = "peer again"
UPDATE = "update"
NOOP = "noop"
PGBENCH = "pgbench"
# The order of the cells in a round; a ratio pairs neighbours.
CELLS = (INTROSPECTION, PEER, STANDARD, PEER_AGAIN, UPDATE, NOOP, PGBENCH)
SQLITE_CELLS = (INTROSPECTION, STANDARD, UPDATE, NOOP)
LABELS = {
    INTROSPECTION: "tokenstore introspection",
    PEER: "oidc-provider introspection",
    STANDARD: "tokenstore standard",
    PEER_AGAIN: "oidc-provider (again)",
    UPDATE: "tokenstore update",
    NOOP: "tokenstore no-op",
    PGBENCH: "pgbench update SQL",
}
RATIOS = {
    "introspection/peer": (INTROSPECTION, PEER),
    "standard/peer": (STANDARD, PEER_AGAIN),
    "update/pgbench": (UPDATE, PGBENCH),
    "introspection/noop": (INTROSPECTION, NOOP),
    "update/noop": (UPDATE, NOOP),
}


@dataclass
class Measure:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0


@dataclass
class Block:
    """The cells of one database, store size and concurrency: one Measure a round."""

    backend: str
    tokens: int
    concurrency: int
    cells: dict[str, list[Measure]] = field(default_factory=dict)

    def median(self, cell: str, attribute: str) -> float:
        return float(statistics.median(float(getattr(m, attribute)) for m in self.cells[cell]))

    def ratios(self, name: str) -> list[float] | None:
        numerator, denominator = RATIOS[name]
        if numerator not in self.cells or denominator not in self.cells:
            return None
        return [
            a.rps / b.rps if b.rps else math.nan
            for a, b in zip(self.cells[numerator], self.cells[denominator], strict=True)
        ]


@contextmanager
def database(backend: str, admin_url: str, workdir: Path, prefix: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{secrets.token_hex(3)}.sqlite3'}"
        return
    name = f"{prefix}_{secrets.token_hex(4)}"
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
def server(
    url: str, workers: int, workdir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOKENSTORE_")},
        "TOKENSTORE_DATABASE_URL": url,
        "TOKENSTORE_ADMIN_API_KEY": "bench",
        "TOKENSTORE_ADMIN_API_SECRET": "y" * 40,
        "TOKENSTORE_HASH_SECRET": HASH_SECRET,
        "TOKENSTORE_BENCH_ENDPOINTS": "true",
        "TOKENSTORE_DATA_DIR": str(workdir),
        **(extra_env or {}),
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
                tail = Path(log.name).read_text()[-3000:]
                raise SystemExit(f"the server did not start; its log ends:\n{tail}")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wrk(base: str, *, concurrency: int, seconds: int, script: str, args: list[str]) -> Measure:
    threads = min(concurrency, 2)
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(HERE / script), base, "--", *args],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH "))
    fields = dict(part.split("=") for part in line.split()[1:])
    return Measure(
        rps=float(fields["rps"]),
        p50_ms=int(fields["p50_us"]) / 1000,
        p99_ms=int(fields["p99_us"]) / 1000,
        errors=int(fields["errors"]) + int(fields["status_errors"]) + int(fields["bad"]),
    )


# One update's transaction as the service sends it: two pipelines (see `pgbench`).
PGBENCH_UPDATE = Template(
    r"""\set id random(0, $last)
\startpipeline
BEGIN;
SELECT tokens.*, clients.requestable_scopes_enabled, clients.requestable_scopes
  FROM tokens LEFT OUTER JOIN clients ON clients.client_id = tokens.client_id
  WHERE tokens.service_api_key = $api_key AND tokens.token_id = $token
  FOR UPDATE OF tokens;
\endpipeline
\startpipeline
UPDATE tokens SET access_hash = access_hash, scopes = scopes,
  access_expires_at = access_expires_at + 1, persistent = persistent,
  refresh_expires_at = refresh_expires_at, properties = properties,
  authorization_details = authorization_details,
  certificate_thumbprint = certificate_thumbprint, dpop_key_thumbprint = dpop_key_thumbprint,
  for_external_attachment = for_external_attachment, access_key = access_key,
  updated_at = updated_at + 1
  WHERE token_id = $token;
INSERT INTO token_events (id, service_api_key, token_id, client_id, subject, type, actor,
  request_id, time, changes)
  VALUES (substr(md5(random()::text), 1, 26), $api_key, $token, 0, 'bench', 'token.updated',
  'service:$api_key', 'bench', 0,
  '{"accessTokenExpiresAt": {"from": 1796396867545, "to": 1796396867546}}');
COMMIT;
\endpipeline
"""
)


def pgbench(url: str, *, concurrency: int, seconds: int, api_key: int, tokens: int,
            workdir: Path) -> Measure:  # fmt: skip
    """The SQL of one update, as the service runs it (app/tokens/repository.py): one
    transaction in two pipelines, as the service sends it (BEGIN with the locked read of
    the token and its client, then the write of every stored column and the insert of
    its event, app/events, with the COMMIT),
    with prepared statements as psycopg uses them. The token is named by its id here (the
    service names it by its lookup key, another unique index of the same table)."""
    script = workdir / "update.sql"
    token = f"'bench-{api_key}-' || :id"
    script.write_text(PGBENCH_UPDATE.substitute(last=tokens - 1, api_key=api_key, token=token))
    parsed = make_url(url)
    prefix = workdir / f"pgbench-{concurrency}"
    for old in workdir.glob(f"{prefix.name}*"):
        old.unlink()
    clients = min(concurrency, free_connections(url))
    if clients < concurrency:
        print(f"# pgbench at concurrency {concurrency}: {clients} clients, as many as "
              "max_connections leaves beside both servers' pools", file=sys.stderr)  # fmt: skip
    done = subprocess.run(
        ["pgbench", "-n", "-M", "prepared", "-h", parsed.host or "127.0.0.1",
         "-p", str(parsed.port or 5432), "-U", parsed.username or "postgres",
         "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
         "-f", str(script),
         "-l", f"--log-prefix={prefix}", parsed.database or ""],
        capture_output=True, text=True, check=False, timeout=seconds + 60,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"pgbench failed:\n{done.stderr[-2000:]}")
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


def settle(url: str) -> None:
    """VACUUM tokenstore's tokens, then CHECKPOINT, between rounds. The write cells (the
    update, pgbench) leave tens of thousands of fresh row versions; the next round's reads
    of those pages then prune them and set hint bits, work that writes WAL, and a read that
    must flush WAL waits on this machine's slow fsync: introspection's p99 went from about
    10 ms to 0.3 to 2 s in the round after an update cell (PostgreSQL's wait events:
    SELECTs on LWLock WALWrite and IO WALSync). Autovacuum does this work in production;
    here each cell measures its own workload on a settled table."""
    engine = create_engine(driver_url(url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("VACUUM tokens"))
            connection.execute(text("VACUUM token_events"))
            # And write the dirty pages out now, not during the next cell.
            connection.execute(text("CHECKPOINT"))
    finally:
        engine.dispose()


def free_connections(url: str) -> int:
    """Connections PostgreSQL still accepts, less a few for the servers' own needs."""
    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            free = connection.execute(
                text(
                    "SELECT current_setting('max_connections')::int"
                    " - current_setting('superuser_reserved_connections')::int"
                    " - count(*) FROM pg_stat_activity"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return max(1, int(free) - 4)


def check_tokenstore(base: str, auth: str, sample: list[str]) -> None:
    """Seeded tokens must be found (introspection OK and active, update OK), an unknown
    one not, before anything is measured."""
    headers = {"Authorization": auth}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        for token in sample[:5]:
            authlete = client.post("/api/auth/introspection", json={"token": token}).json()
            if authlete.get("action") != "OK":
                raise SystemExit(f"tokenstore does not find a seeded token: {authlete}")
            standard = client.post(
                "/api/auth/introspection/standard",
                json={"parameters": f"token={token}&token_type_hint=access_token"},
            ).json()
            if not re.search(r'"active":\s*true', standard.get("responseContent", "")):
                raise SystemExit(f"tokenstore's standard introspection fails: {standard}")
        unknown = client.post("/api/auth/introspection", json={"token": "unknown"}).json()
        if unknown.get("action") == "OK":
            raise SystemExit(f"tokenstore finds an unknown token: {unknown}")
        expires = (int(time.time()) + 3600) * 1000
        update = client.post(
            "/auth/token/update", json={"accessToken": sample[0], "accessTokenExpiresAt": expires}
        ).json()
        if update.get("action") != "OK":
            raise SystemExit(f"the seeded tokens are not found by the update: {update}")


@dataclass
class Loads:
    """What each cell runs, for one database and store size."""

    run: dict[str, Callable[[int, int], Measure]]  # cell -> (concurrency, seconds) -> Measure
    warm: set[str]  # the cells that get a warm-up (wrk; not pgbench)
    # Run before each round: PostgreSQL vacuums tokenstore's tokens (see `settle`).
    settle: Callable[[], None] = lambda: None


def measure_block(loads: Loads, cells: tuple[str, ...], block: Block,
                  args: argparse.Namespace) -> None:  # fmt: skip
    for round_ in range(1, args.rounds + 1):
        loads.settle()
        for cell in cells:
            if args.warmup and cell in loads.warm:
                loads.run[cell](block.concurrency, args.warmup)
            measure = loads.run[cell](block.concurrency, args.seconds)
            block.cells.setdefault(cell, []).append(measure)
            print(f"# {block.backend} {block.tokens} c{block.concurrency} round {round_}: "
                  f"{LABELS[cell]} {measure.rps:.0f}/s p99 {measure.p99_ms:.1f} ms"
                  + (f" ERRORS {measure.errors}" if measure.errors else ""),
                  file=sys.stderr)  # fmt: skip


def run(args: argparse.Namespace) -> list[Block]:
    blocks: list[Block] = []
    with tempfile.TemporaryDirectory(prefix="tokenstore-bench-") as tmp:
        workdir = Path(tmp)
        for backend in args.backends:
            for size in args.sizes:
                with ExitStack() as stack:
                    blocks += run_size(backend, size, args, workdir, stack)
    return blocks


def run_size(backend: str, size: int, args: argparse.Namespace, workdir: Path,
             stack: ExitStack) -> list[Block]:  # fmt: skip
    url = stack.enter_context(database(backend, args.postgres, workdir, "tokenstore_bench"))
    engine = make_engine(url, pool_size=1)
    upgrade(engine)
    started = time.monotonic()
    seeded = seed(engine, tokens=size, hash_key=HASH_SECRET.encode())
    if backend == "postgresql":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE tokens")
            )
    engine.dispose()
    print(f"# {backend}: tokenstore seeded {size} tokens in "
          f"{time.monotonic() - started:.1f} s", file=sys.stderr)  # fmt: skip
    tokens_file = workdir / f"tokens-{backend}-{size}.txt"
    tokens_file.write_text("\n".join(seeded.sample) + "\n")
    auth = "Basic " + base64.b64encode(f"{seeded.api_key}:{seeded.api_secret}".encode()).decode()

    base = stack.enter_context(server(url, args.workers, workdir))
    check_tokenstore(base, auth, seeded.sample)

    def tokenstore_wrk(script: str, path: str, *mode: str) -> Callable[[int, int], Measure]:
        return lambda concurrency, seconds: wrk(
            base, concurrency=concurrency, seconds=seconds, script=script,
            args=[str(tokens_file), auth, *mode, path],
        )  # fmt: skip

    loads = Loads(
        run={
            INTROSPECTION: tokenstore_wrk("introspect.lua", "/api/auth/introspection", "authlete"),
            STANDARD: tokenstore_wrk(
                "introspect.lua", "/api/auth/introspection/standard", "standard"
            ),
            UPDATE: tokenstore_wrk("update.lua", "/auth/token/update"),
            NOOP: tokenstore_wrk("update.lua", "/bench/noop"),
        },
        warm={INTROSPECTION, STANDARD, UPDATE, NOOP, PEER, PEER_AGAIN},
    )
    cells: tuple[str, ...] = SQLITE_CELLS
    if backend == "postgresql":
        cells = CELLS
        loads.settle = lambda: settle(url)
        peer_url = stack.enter_context(
            database(backend, args.postgres, workdir, "tokenstore_bench_peer")
        )
        peer_url = (
            make_url(peer_url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        started = time.monotonic()
        peer_seeded = peer.seed(peer_url, tokens=size)
        print(f"# {backend}: oidc-provider seeded {size} tokens (and their grants) in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)  # fmt: skip
        peer_file = workdir / f"peer-tokens-{size}.txt"
        peer_file.write_text("\n".join(peer_seeded.sample) + "\n")
        peer_base = stack.enter_context(
            peer.server(peer_url, port=free_port(), workers=args.workers, workdir=workdir)
        )
        peer.check(peer_base, peer_seeded.sample)

        def peer_wrk(concurrency: int, seconds: int) -> Measure:
            return wrk(
                peer_base, concurrency=concurrency, seconds=seconds, script="introspect.lua",
                args=[str(peer_file), peer_seeded.auth, "rfc7662", peer.INTROSPECTION_PATH],
            )  # fmt: skip

        def db_floor(concurrency: int, seconds: int) -> Measure:
            return pgbench(url, concurrency=concurrency, seconds=seconds,
                           api_key=seeded.api_key, tokens=size, workdir=workdir)  # fmt: skip

        loads.run |= {PEER: peer_wrk, PEER_AGAIN: peer_wrk, PGBENCH: db_floor}

    # Start-up: every load once, longer, before any cell (JIT, prepared statements, caches).
    if args.warmup:
        warmed: set[Callable[[int, int], Measure]] = set()
        for cell in cells:
            if cell in loads.warm and loads.run[cell] not in warmed:
                warmed.add(loads.run[cell])
                loads.run[cell](args.concurrency[0], 3 * args.warmup)
    blocks = []
    for concurrency in args.concurrency:
        block = Block(backend, size, concurrency)
        measure_block(loads, cells, block, args)
        blocks.append(block)
    return blocks


def fmt(value: float, width: int, digits: int = 0) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{digits}f}"


def report(blocks: list[Block], rounds: int) -> None:
    per_round = "".join(f"{f'r{i + 1}/s':>8}" for i in range(rounds))
    header = (
        f"{'database':<11}{'tokens':>8}{'conc':>5}  {'cell':<28}{per_round}"
        f"{'median/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
    )
    print(header)
    print("-" * len(header))
    for block in blocks:
        for cell, measures in block.cells.items():
            print(
                f"{block.backend:<11}{block.tokens:>8}{block.concurrency:>5}  {LABELS[cell]:<28}"
                + "".join(fmt(m.rps, 8) for m in measures)
                + fmt(block.median(cell, "rps"), 9)
                + fmt(block.median(cell, "p50_ms"), 8, 2)
                + fmt(block.median(cell, "p99_ms"), 8, 2)
                + f"{sum(m.errors for m in measures):>7}"
            )
    print()
    per_round = "".join(f"{f'r{i + 1}':>7}" for i in range(rounds))
    header = f"{'database':<11}{'tokens':>8}{'conc':>5}  {'ratio':<20}{per_round}{'median':>8}"
    print(header)
    print("-" * len(header))
    for block in blocks:
        for name in RATIOS:
            ratios = block.ratios(name)
            if ratios is None:
                continue
            print(
                f"{block.backend:<11}{block.tokens:>8}{block.concurrency:>5}  {name:<20}"
                + "".join(fmt(r, 7, 2) for r in ratios)
                + fmt(statistics.median(ratios), 8, 2)
            )
    print()
    errors = sum(m.errors for b in blocks for ms in b.cells.values() for m in ms)
    if errors:
        print(f"WARNING: {errors} failed or wrong answers (see the errors column)")
    summary(blocks)


def summary(blocks: list[Block]) -> None:
    postgres = [b for b in blocks if b.backend == "postgresql" and b.concurrency == 16]
    if not postgres:
        print("(no summary line: it needs PostgreSQL at concurrency 16)")
        return
    largest = max(postgres, key=lambda b: b.tokens)
    smallest = min(postgres, key=lambda b: b.tokens)

    def ratio(name: str) -> float:
        return statistics.median(largest.ratios(name) or [math.nan])

    growth = (
        largest.median(INTROSPECTION, "p50_ms") / smallest.median(INTROSPECTION, "p50_ms")
        if largest.tokens != smallest.tokens
        else math.nan
    )
    print(
        f"introspection_vs_peer={ratio('introspection/peer'):.2f} "
        f"standard_vs_peer={ratio('standard/peer'):.2f} "
        f"update_vs_db_floor={ratio('update/pgbench'):.2f} "
        f"introspection_p99_ms={largest.median(INTROSPECTION, 'p99_ms'):.1f} "
        f"growth_1e6_vs_1e4={growth:.2f}"
    )


def integers(value: str) -> list[int]:
    return [int(x) for x in value.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="--quick: --backends postgresql --sizes 10000 --concurrency 16 --rounds 3 "
        "--seconds 3 --warmup 1 (under 2 minutes)",
    )
    parser.add_argument("--backends", type=lambda s: s.split(","), default=["postgresql", "sqlite"])
    parser.add_argument("--sizes", type=integers, default=[10_000, 1_000_000])
    parser.add_argument("--concurrency", type=integers, default=[16, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="per cell (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="per wrk cell (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="of each server (default 2)")
    parser.add_argument("--quick", action="store_true", help="a two-minute iteration run")
    parser.add_argument("--postgres", default=os.environ.get(
        "TOKENSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.backends, args.sizes, args.concurrency = ["postgresql"], [10_000], [16]
        args.rounds, args.seconds, args.warmup = 3, 3, 1
    for tool in ("wrk", "pgbench"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench needs {tool} (Debian: apt-get install wrk postgresql-client)")
    if set(args.backends) - {"postgresql", "sqlite"}:
        raise SystemExit("--backends takes postgresql and/or sqlite")
    if args.rounds < 1:
        raise SystemExit("--rounds takes at least 1 (the issue asks for 3 or more)")
    if "postgresql" in args.backends:
        peer.install()
    report(run(args), args.rounds)


if __name__ == "__main__":
    main()
