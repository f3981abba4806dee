"""What `tokenstore rekey` costs the requests served beside it (issue 13: "no request fails
or is slowed beyond noise").

One server (`--workers`, as bench/run.py starts it) over a store of `--tokens` tokens,
listing two hash secrets. Each round runs the same wrk load (the update, or the
introspection) twice, `--seconds` each, in an order that alternates between rounds:

- alone;
- beside a `tokenstore rekey` process started just before it. The rekey moves every row
  to the other key than the one it moved them to last time (it runs with the two secrets
  listed in the other order; the server lists both). The load starts once the rekey has
  written its first batch (the command's start costs seconds of processor time that are
  not the re-key's), and the rekey is stopped (SIGINT) when the load ends.

It prints each pair and the medians of the per-round ratios (beside / alone) of requests/s
and p99; a pair without rekey (`--control`) measures the noise of the same comparison.

  .venv/bin/python -m bench.rekey --backend sqlite --load update --rounds 5
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from app.db import make_engine
from app.migrate import upgrade
from bench.run import HASH_SECRET, TOKENSTORE, Measure, database, server, wrk
from bench.seed import seed

OTHER_SECRET = "bench-other-secret-" + "z" * 32
ONE = f"default:{HASH_SECRET}"  # the key the seed writes under (the single secret's id)
TWO = f"k2:{OTHER_SECRET}"
# wrk's script and its arguments after the tokens file and the credentials.
SCRIPTS = {
    "update": ("update.lua", ["/auth/token/update"]),
    "introspection": ("introspect.lua", ["authlete", "/api/auth/introspection"]),
}


class Rekey:
    """`tokenstore rekey` in a process of its own, measured from its first batch on (its
    start, imports and checks, takes seconds of processor time of its own)."""

    def __init__(self, url: str, secrets: str, options: list[str], workdir: Path) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TOKENSTORE_")},
            "TOKENSTORE_DATABASE_URL": url,
            "TOKENSTORE_HASH_SECRETS": secrets,
            "TOKENSTORE_DATA_DIR": str(workdir),
        }
        self.process = subprocess.Popen(
            [TOKENSTORE, "rekey", *options], env=env, cwd=workdir, text=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._log: list[str] = []
        self._batched = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._batched.wait(60):
            raise SystemExit(f"the rekey moved nothing in 60 s: {self.stop()[-2000:]}")

    def _read(self) -> None:
        for line in self.process.stderr or ():
            self._log.append(line)
            if "rekey batch" in line:
                self._batched.set()
        self._batched.set()

    def cpu_seconds(self) -> float:
        """Its processor time so far (Linux: user and system, /proc/PID/stat)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> str:
        """Stops it (SIGINT: its batch in progress rolls back); its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return "".join(self._log)


def batches(log: str) -> str:
    """The rekey's batches from its log: how many rows, and the median phase times."""
    phases: dict[str, list[float]] = {}
    rows = 0
    for line in log.splitlines():
        if "rekey batch" not in line:
            continue
        fields = dict(part.split("=") for part in json.loads(line)["message"].split()[2:])
        rows += int(fields["moved"])
        for name in ("prepare_ms", "wait_ms", "write_ms"):
            phases.setdefault(name, []).append(float(fields[name]))
    medians = " ".join(f"{name}={statistics.median(v):.1f}" for name, v in phases.items())
    return f"{rows} rows in {len(phases.get('write_ms', []))} batches, median {medians}"


def measure_round(
    round_: int, load: Callable[[int], Measure], url: str, workdir: Path, args: argparse.Namespace
) -> tuple[Measure, Measure]:
    """The load alone and beside a rekey, in an order that alternates between rounds; the
    rekey moves every row to k2 in even rounds, back to the seed's key in odd ones."""
    measured: dict[str, Measure] = {}
    for cell in ("alone", "beside") if round_ % 2 == 0 else ("beside", "alone"):
        if cell == "alone" or args.control:
            measured[cell] = load(args.seconds)
            continue
        listed = f"{TWO},{ONE}" if round_ % 2 == 0 else f"{ONE},{TWO}"
        job = Rekey(url, listed, args.rekey, workdir)
        cpu = job.cpu_seconds()
        started = time.monotonic()
        measured[cell] = load(args.seconds)
        took = time.monotonic() - started
        if job.process.poll() is not None:
            raise SystemExit(f"the rekey ended before the load: {job.stop()[-2000:]}")
        cpu = job.cpu_seconds() - cpu
        print(f"#   rekey ran the whole {took:.1f} s ({cpu:.2f} CPU s): "
              f"{batches(job.stop())}", file=sys.stderr)  # fmt: skip
    alone, beside = measured["alone"], measured["beside"]
    print(f"# round {round_ + 1}: alone {alone.rps:.0f}/s p99 {alone.p99_ms:.1f} ms, "
          f"beside {beside.rps:.0f}/s p99 {beside.p99_ms:.1f} ms "
          f"errors {alone.errors}/{beside.errors}", file=sys.stderr)  # fmt: skip
    return alone, beside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--load", choices=sorted(SCRIPTS), default="update")
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--rekey",
        type=str.split,
        default=[],
        help="the rekey's options, as one argument: '--batch-size 100'",
    )
    parser.add_argument("--control", action="store_true", help="no rekey: the noise")
    parser.add_argument("--postgres", default=os.environ.get(
        "TOKENSTORE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))  # fmt: skip
    args = parser.parse_args()
    script, script_args = SCRIPTS[args.load]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-rekey-")))
        url = stack.enter_context(database(args.backend, args.postgres, workdir, "bench_rekey"))
        engine = make_engine(url, pool_size=1)
        upgrade(engine)
        seeded = seed(engine, tokens=args.tokens, hash_key=HASH_SECRET.encode())
        engine.dispose()
        tokens_file = workdir / "tokens.txt"
        tokens_file.write_text("\n".join(seeded.sample) + "\n")
        pair = f"{seeded.api_key}:{seeded.api_secret}".encode()
        auth = "Basic " + base64.b64encode(pair).decode()
        base = stack.enter_context(
            server(url, args.workers, workdir, {"TOKENSTORE_HASH_SECRETS": f"{ONE},{TWO}"})
        )

        def load(seconds: int) -> Measure:
            return wrk(base, concurrency=args.concurrency, seconds=seconds, script=script,
                       args=[str(tokens_file), auth, *script_args])  # fmt: skip

        load(3)  # warm-up
        pairs = [measure_round(round_, load, url, workdir, args) for round_ in range(args.rounds)]
        rps = statistics.median(b.rps / a.rps for a, b in pairs)
        p99 = statistics.median(b.p99_ms / a.p99_ms for a, b in pairs)
        errors = sum(a.errors + b.errors for a, b in pairs)
        print(f"rekey_{args.backend}_{args.load} rps_beside_vs_alone={rps:.2f} "
              f"p99_beside_vs_alone={p99:.2f} errors={errors}"
              + (" (control: no rekey)" if args.control else ""))  # fmt: skip


if __name__ == "__main__":
    main()
