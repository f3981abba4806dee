"""Where a hot-path request spends the server's CPU: one worker under wrk, sampled by py-spy.

    .venv/bin/python -m bench.profile --endpoint introspection [--backend postgresql]

Seeds a fresh database (10,000 tokens), starts `tokenstore serve` with one worker, drives
one endpoint with wrk at concurrency 16, and samples the worker with py-spy (installed
into `.tools/py-spy` when missing). Prints the server CPU per request (from the worker's
own CPU time) and the share of samples by package, each sample counted once for the
innermost frame of that package: psycopg, sqlalchemy, fastapi, starlette, pydantic,
uvicorn, tokenstore's own code (app), and the rest (the interpreter, asyncio, stdlib).
"""

from __future__ import annotations

import argparse
import base64
import collections
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from app.db import make_engine
from app.migrate import upgrade
from bench.run import HASH_SECRET, HERE, database, server, wrk
from bench.seed import seed

ROOT = HERE.parent
DEFAULT_POSTGRES = os.environ.get(
    "TOKENSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PACKAGES = ("psycopg", "sqlalchemy", "fastapi", "starlette", "pydantic", "uvicorn", "app")
ENDPOINTS = {
    "introspection": ("introspect.lua", "/api/auth/introspection", "authlete"),
    "standard": ("introspect.lua", "/api/auth/introspection/standard", "standard"),
    "update": ("update.lua", "/api/auth/token/update"),
    "noop": ("update.lua", "/bench/noop"),
}


def py_spy() -> str:
    tool = ROOT / ".tools" / "py-spy" / "bin" / "py-spy"
    if not tool.exists():
        subprocess.run([sys.executable, "-m", "venv", str(tool.parent.parent)], check=True)
        pip = tool.parent / "pip"
        subprocess.run([str(pip), "install", "--quiet", "py-spy==0.4.1"], check=True)
    return str(tool)


def package_of(frame: str) -> str:
    for package in PACKAGES:
        if f"({package}/" in frame or f"/{package}/" in frame:
            return package
    return "other"


def shares(raw: Path) -> dict[str, float]:
    """py-spy's raw (collapsed) format: `frame;frame;... count`, outermost first."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        package = "other"
        for frame in reversed(frames):
            found = package_of(frame)
            if found != "other":
                package = found
                break
        counts[package] += int(count)
    total = sum(counts.values()) or 1
    return {name: counts[name] / total for name in (*PACKAGES, "other")}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--endpoint", choices=sorted(ENDPOINTS), default="introspection")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    spy = py_spy()
    script, path, *mode = ENDPOINTS[args.endpoint]
    with tempfile.TemporaryDirectory() as directory, ExitStack() as stack:
        workdir = Path(directory)
        url = stack.enter_context(database(args.backend, args.postgres, workdir, "ts_profile"))
        engine = make_engine(url, pool_size=1)
        upgrade(engine)
        seeded = seed(engine, tokens=10_000, hash_key=HASH_SECRET.encode())
        engine.dispose()
        tokens = workdir / "tokens.txt"
        tokens.write_text("\n".join(seeded.sample) + "\n")
        credentials = f"{seeded.api_key}:{seeded.api_secret}".encode()
        wrk_args = [str(tokens), "Basic " + base64.b64encode(credentials).decode(), *mode, path]
        base = stack.enter_context(server(url, 1, workdir))
        pid = _listening_pid(base)
        wrk(base, concurrency=16, seconds=3, script=script, args=wrk_args)  # warm-up
        raw = workdir / "profile.txt"
        before = _cpu_seconds(pid)
        sampler = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
             "--duration", str(args.seconds), "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        measure = wrk(base, concurrency=16, seconds=args.seconds, script=script, args=wrk_args)
        cpu = _cpu_seconds(pid) - before
        sampler.wait(timeout=args.seconds + 30)
        by_package = shares(raw)
        if os.environ.get("KEEP_PROFILE"):
            (ROOT / "profile.txt").write_bytes(raw.read_bytes())
    requests = measure.rps * args.seconds
    print(
        f"{args.endpoint} on {args.backend}, 1 worker, c16: {measure.rps:.0f}/s, "
        f"p99 {measure.p99_ms:.1f} ms, errors {measure.errors}, "
        f"server CPU {1000 * cpu / max(requests, 1):.3f} ms per request"
    )
    for name, share in by_package.items():
        print(f"  {name:<11} {100 * share:5.1f} %")


def _listening_pid(base: str) -> int:
    """The process that listens on the server's port (one worker: uvicorn serves itself)."""
    port = base.rsplit(":", 1)[1]
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split("pid=")[1].split(",")[0])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
