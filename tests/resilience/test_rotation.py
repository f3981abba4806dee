"""Rotating the hash secret of a loaded deployment end to end (issue 13, item 6), on both
databases, as the README's "Rotating secrets" tells an operator:

1. `serve` with k1: services, their service access tokens (API v3), confidential clients,
   tokens with and without refresh tokens, generated and chosen by the caller;
2. restart with k2,k1: everything works, and a new token is keyed under k2;
3. `tokenstore rekey` under load: no request fails;
4. `tokenstore keys` names what still depends on k1: the credentials never used during
   the overlap, nothing else;
5. restart with k2 alone: refused while those depend on k1; with `--force` every token
   works and so does every credential used during the overlap, and the ones reported are
   the ones lost.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from app.db import make_engine
from app.kit.keys import HashKey
from app.tokens.models import TokenRow
from tests.conftest import migrated_database
from tests.keyed_rows import K1, K2, environment_value
from tests.resilience.load import Load
from tests.resilience.tenant import ADMIN
from tests.servers import clean_environment, command, serving

TOKENS = 120  # with refresh tokens; and a few without, and two chosen by the caller


def environment(url: str, *keys: HashKey) -> dict[str, str]:
    return clean_environment(
        TOKENSTORE_ENV="production", TOKENSTORE_DATABASE_URL=url,
        TOKENSTORE_ADMIN_API_KEY=ADMIN[0], TOKENSTORE_ADMIN_API_SECRET=ADMIN[1],
        TOKENSTORE_HASH_SECRETS=environment_value(*keys),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Service:
    api_key: str
    secret: str
    access_token: str  # a service access token (API v3, Bearer)
    client_id: int
    client_secret: str  # CLIENT_SECRET_BASIC

    @property
    def auth(self) -> tuple[str, str]:
        return self.api_key, self.secret


@dataclass(frozen=True, slots=True)
class Token:
    token_id: str
    access: str
    refresh: str | None


def make_service(http: httpx.Client) -> Service:
    made = http.post("/api/service/create", json={}, auth=ADMIN).json()
    api_key, secret = str(made["apiKey"]), made["apiSecret"]
    bearer = http.post(
        f"/api/service/{api_key}/access_token/create", json={"description": "v3"}, auth=ADMIN
    ).json()["accessToken"]
    client = http.post("/api/client/create", json={}, auth=(api_key, secret)).json()
    assert client["tokenAuthMethod"] == "CLIENT_SECRET_BASIC"
    return Service(api_key, secret, bearer, client["clientId"], client["clientSecret"])


def make_token(http: httpx.Client, service: Service, **fields: Any) -> Token:
    body = {"grantType": "PASSWORD", "clientId": service.client_id, "subject": "s", **fields}
    made = http.post("/api/auth/token/create", json=body, auth=service.auth).json()
    assert made["action"] == "OK", made
    return Token(made["tokenId"], made["accessToken"], made.get("refreshToken"))


def make_tokens(http: httpx.Client, service: Service) -> list[Token]:
    tokens = [make_token(http, service) for _ in range(TOKENS)]
    tokens += [make_token(http, service, grantType="CLIENT_CREDENTIALS") for _ in range(5)]
    tokens.append(make_token(http, service, accessToken="chosen-1234", refreshToken="chosen-4321"))
    return tokens


def token_works(http: httpx.Client, service: Service, token: Token) -> bool:
    """Its access token introspects as OK, and its refresh token as active (RFC 7662)."""
    answer = http.post("/api/auth/introspection", json={"token": token.access}, auth=service.auth)
    if answer.status_code != 200 or answer.json()["action"] != "OK":
        return False
    if token.refresh is None:
        return True
    form = f"token={token.refresh}&token_type_hint=refresh_token"
    standard = http.post(
        "/api/auth/introspection/standard", json={"parameters": form}, auth=service.auth
    )
    return standard.status_code == 200 and json.loads(standard.json()["responseContent"])["active"]


def basic_works(http: httpx.Client, service: Service) -> bool:
    return http.get("/api/client/get/list", auth=service.auth).status_code == 200


def bearer_works(http: httpx.Client, service: Service) -> bool:
    """The service access token, on the v3 path."""
    headers = {"Authorization": f"Bearer {service.access_token}"}
    answer = http.get(f"/api/{service.api_key}/client/get/list", headers=headers)
    return answer.status_code == 200


def client_secret_works(http: httpx.Client, service: Service, client_id: int, secret: str) -> bool:
    """Revocation's client authentication (CLIENT_SECRET_BASIC); the token named does not
    exist, which RFC 7009 answers OK, so nothing is revoked."""
    answer = http.post(
        "/api/auth/revocation",
        json={"parameters": "token=none", "clientId": str(client_id), "clientSecret": secret},
        auth=service.auth,
    ).json()
    assert answer["action"] in ("OK", "INVALID_CLIENT"), answer
    return bool(answer["action"] == "OK")


def credentials_work(http: httpx.Client, service: Service) -> bool:
    """The service's API secret, its service access token and its client's secret."""
    return (
        basic_works(http, service)
        and bearer_works(http, service)
        and client_secret_works(http, service, service.client_id, service.client_secret)
    )


@dataclass
class Introspections:
    """Threads that introspect the tokens over the v3 path with the service access token,
    recording every answer, until stopped."""

    base: str
    service: Service
    tokens: list[Token]
    threads: int = 2
    answers: list[tuple[int, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self, start: int) -> None:
        headers = {"Authorization": f"Bearer {self.service.access_token}"}
        path = f"/api/{self.service.api_key}/auth/introspection"
        with httpx.Client(base_url=self.base, headers=headers, timeout=10) as client:
            n = start
            while not self._stop.is_set():
                token = self.tokens[n % len(self.tokens)]
                n += 1
                try:
                    answer = client.post(path, json={"token": token.access})
                    self.answers.append((answer.status_code, answer.json().get("action")))
                except httpx.TransportError:
                    self.answers.append((0, None))

    def __enter__(self) -> Introspections:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=(n * 7,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)


def key_id_of(url: str, token_id: str) -> str:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            key_id: str = connection.execute(
                select(TokenRow.key_id).where(TokenRow.token_id == token_id)
            ).scalar_one()
            return key_id
    finally:
        engine.dispose()


def test_every_secret_rotates_under_load_without_a_failed_request(
    backend: str, tmp_path: Path
) -> None:
    with migrated_database(backend, tmp_path) as url:
        # 1. k1 alone.
        with (
            serving(tmp_path, environment(url, K1)) as (base, _),
            httpx.Client(base_url=base) as http,
        ):
            used, unused = make_service(http), make_service(http)
            # A second client of the used service, whose secret is not used in the overlap.
            idle = http.post("/api/client/create", json={}, auth=used.auth).json()
            tokens = make_tokens(http, used)

        # 2. k2 first, k1 still listed.
        overlap = environment(url, K2, K1)
        with (
            serving(tmp_path, overlap, "--workers", "2") as (base, _),
            httpx.Client(base_url=base) as http,
        ):
            assert [t for t in tokens if not token_works(http, used, t)] == []
            assert credentials_work(http, used)
            new = make_token(http, used)
            assert key_id_of(url, new.token_id) == "k2"
            tokens.append(new)

            # 3. The re-key, under a load of updates and introspections.
            with (
                Load(base, used.auth, [t.access for t in tokens[:60]], threads=6) as updates,
                Introspections(base, used, tokens) as reads,
            ):
                time.sleep(0.5)
                started = time.monotonic()
                rekeyed = command("rekey", "--batch-size", "25", cwd=tmp_path, env=overlap)
                took = time.monotonic() - started
                time.sleep(0.5)
            assert rekeyed.returncode == 0, rekeyed.stderr
            # Every token is under k2: the ones the load did not update moved by the re-key.
            assert not rekeyed.stdout.startswith("re-keyed 0 ")
            assert (
                "token rows left: 0 under older listed keys, 0 not sealed, 0 under key ids "
                "that are not listed." in rekeyed.stdout
            )
            failed = [
                (status, body and body.get("action"))
                for _, status, body in updates.answers
                if status != 200 or body is None or body["action"] != "OK"
            ] + [answer for answer in reads.answers if answer != (200, "OK")]
            assert len(updates.answers) > 50
            assert len(reads.answers) > 50
            assert failed == [], f"{len(failed)} failed requests while rekey ran {took:.1f} s"

            # 4. What still depends on k1, before k1 goes.
            keys = command("keys", "--json", cwd=tmp_path, env=overlap)
            assert keys.returncode == 0, keys.stderr
            depending = json.loads(keys.stdout)["keys"]

        assert depending["k1"] == {
            "status": "listed", "tokens": 0, "unsealed_tokens": 0, "service_secrets": 1,
            "service_access_tokens": 1, "client_secrets": 2,
        }  # fmt: skip
        assert depending["k2"]["tokens"] == len(tokens)

        # 5. k2 alone: refused while the unused credentials depend on k1, then forced.
        alone = environment(url, K2)
        refused = command("serve", cwd=tmp_path, env=alone)
        assert refused.returncode == 2
        assert (
            "'k1' (1 service secrets, 1 service access tokens, 2 client secrets)"
            in refused.stderr.splitlines()[-1]
        )
        with (
            serving(tmp_path, alone, "--force", "--workers", "2") as (base, _),
            httpx.Client(base_url=base) as http,
        ):
            assert [t for t in tokens if not token_works(http, used, t)] == []
            assert credentials_work(http, used)
            # The credentials `tokenstore keys` reported are the ones lost.
            assert not client_secret_works(http, used, idle["clientId"], idle["clientSecret"])
            assert not basic_works(http, unused)
            assert not bearer_works(http, unused)
