"""The peer of the introspection benchmark: node-oidc-provider (npm, pinned in
bench/peer/package.json) on the same PostgreSQL server, through the adapter of
bench/peer/adapter.mjs, with two cluster workers (bench/peer/server.mjs).

`install()` runs `npm ci` when bench/peer/node_modules is missing; `seed()` fills the
provider's table in bulk (COPY) with access tokens and their grants as oidc-provider
itself stores them; `server()` runs the provider until the block ends.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

PEER = Path(__file__).parent / "peer"
CLIENT_ID = "bench"
CLIENT_SECRET = "bench-peer-secret-" + secrets.token_hex(16)
INTROSPECTION_PATH = "/token/introspection"
SCOPE = "openid offline_access"
TOKEN_DAYS = 30


@dataclass(frozen=True)
class PeerSeeded:
    sample: list[str]  # access token values the load generator may use
    auth: str  # the client's Authorization header (client_secret_basic)


def install() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("bench needs node (20 or later) and npm for its peer, oidc-provider")
    if (PEER / "node_modules" / "oidc-provider").is_dir():
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER, check=True
    )


def basic_auth() -> str:
    return "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()


def seed(url: str, *, tokens: int, sample_size: int = 20_000, batch: int = 50_000) -> PeerSeeded:
    """N access tokens, each with its grant (one authorization code grant with
    offline_access per token), COPYed into the provider's table. The payloads are those
    oidc-provider's AccessToken and Grant models save (lib/models/formats/opaque.js): the
    opaque value (256 bits, base64url) is the jti and the row's id."""
    subprocess.run(
        ["node", "server.mjs", "--schema"], cwd=PEER, check=True,
        env={**os.environ, "PEER_DATABASE_URL": url}, capture_output=True,
    )  # fmt: skip
    now = int(time.time())
    exp = now + TOKEN_DAYS * 86_400
    expires_at = datetime.fromtimestamp(exp, UTC).isoformat()
    sample: list[str] = []
    with psycopg.connect(url) as connection:
        with (
            connection.cursor() as cursor,
            cursor.copy(
                "COPY oidc_payloads (id, type, payload, grant_id, expires_at) FROM STDIN"
            ) as copy,
        ):
            lines: list[str] = []
            for index in range(tokens):
                jti = secrets.token_urlsafe(32)
                grant = secrets.token_urlsafe(32)
                account = f"user{index % 1000}"
                if len(sample) < sample_size:
                    sample.append(jti)
                lines.append(
                    f'{jti}\tAccessToken\t{{"iat": {now}, "exp": {exp}, "jti": "{jti}", '
                    f'"kind": "AccessToken", "clientId": "{CLIENT_ID}", '
                    f'"gty": "authorization_code", "grantId": "{grant}", '
                    f'"accountId": "{account}", "scope": "{SCOPE}"}}\t{grant}\t{expires_at}\n'
                    f'{grant}\tGrant\t{{"accountId": "{account}", "clientId": "{CLIENT_ID}", '
                    f'"openid": {{"scope": "{SCOPE}"}}, "iat": {now}, "exp": {exp}, '
                    f'"jti": "{grant}", "kind": "Grant"}}\t\\N\t{expires_at}\n'
                )
                if len(lines) >= batch:
                    copy.write("".join(lines))
                    lines.clear()
            copy.write("".join(lines))
        connection.commit()
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE oidc_payloads")
    return PeerSeeded(sample, basic_auth())


@contextmanager
def server(url: str, *, port: int, workers: int, workdir: Path) -> Iterator[str]:
    env = {
        **os.environ,
        "PEER_DATABASE_URL": url,
        "PEER_PORT": str(port),
        "PEER_WORKERS": str(workers),
        "PEER_CLIENT_ID": CLIENT_ID,
        "PEER_CLIENT_SECRET": CLIENT_SECRET,
        "NODE_ENV": "production",
    }
    log_path = workdir / f"peer-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["node", "server.mjs"], cwd=PEER, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "READY" not in log_path.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text()[-3000:]
                    raise SystemExit(f"the peer did not start; its log ends:\n{tail}")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the primary's workers
                process.wait()


def check(base: str, sample: list[str]) -> None:
    """A sample of seeded tokens must be active, an unknown one not: else the peer would
    be measured answering something other than a real introspection."""
    headers = {"Authorization": basic_auth()}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        for token in [*sample[:5], *secrets.SystemRandom().sample(sample, min(len(sample), 20))]:
            answer = client.post(
                INTROSPECTION_PATH, data={"token": token, "token_type_hint": "access_token"}
            )
            if answer.status_code != 200 or answer.json().get("active") is not True:
                raise SystemExit(
                    f"the peer does not find a seeded token: {answer.status_code} {answer.text}"
                )
        unknown = client.post(INTROSPECTION_PATH, data={"token": secrets.token_urlsafe(32)})
        if unknown.json() != {"active": False}:
            raise SystemExit(f"the peer says an unknown token is active: {unknown.text}")
        wrong = httpx.post(
            f"{base}{INTROSPECTION_PATH}", data={"token": sample[0]},
            auth=(CLIENT_ID, "wrong-secret"), timeout=10,
        )  # fmt: skip
        if wrong.status_code != 401:
            raise SystemExit(f"the peer accepts a wrong client secret: {wrong.status_code}")
