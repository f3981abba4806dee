"""Credentials the operator changes take effect at once on every worker, and a wrong
credential tells nothing about which part of it was wrong.

"At once" is the very next requests after the operator's 2xx answer, without any sleep:
the workers may keep what they know of credentials, but never serve a stale one. The
requests go over fresh connections from a few threads, so that both workers (which have
both served the credentials before) answer some of them.
"""

from __future__ import annotations

import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import migrated_database
from tests.resilience.tenant import ADMIN, server_environment, tenant_with_tokens
from tests.servers import serving

REQUESTS = 40
THREADS = 4

Auth = tuple[str, str] | None


def statuses(base: str, path: str, body: dict[str, str], *, auth: Auth = None,
             bearer: str | None = None) -> list[int]:  # fmt: skip
    """The statuses of `REQUESTS` POSTs, each over a fresh connection, from a few threads."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    with (
        httpx.Client(base_url=base, auth=auth, headers=headers, limits=no_keep_alive) as client,
        ThreadPoolExecutor(THREADS) as pool,
    ):
        return list(pool.map(lambda _: client.post(path, json=body).status_code, range(REQUESTS)))


def service_access_token(base: str, api_key: str) -> tuple[str, str]:
    """A v3 service access token the operator issues: its id and its value."""
    made = httpx.post(
        f"{base}/api/service/{api_key}/access_token/create",
        json={"description": "resilience test"},
        auth=ADMIN,
    )
    assert made.status_code == 200, made.text
    return made.json()["tokenId"], made.json()["accessToken"]


def test_a_service_the_operator_deletes_stops_working_at_once_on_every_worker(
    backend: str, tmp_path: Path
) -> None:
    with (
        migrated_database(backend, tmp_path) as url,
        serving(tmp_path, server_environment(url), "--workers", "2") as (base, _),
    ):
        auth, [token] = tenant_with_tokens(base, 1)
        other_auth, [other_token] = tenant_with_tokens(base, 1)
        _, bearer = service_access_token(base, auth[0])
        v3_path = f"/api/{auth[0]}/auth/introspection"
        introspect = {"token": token}

        before = statuses(base, "/api/auth/introspection", introspect, auth=auth)
        before_v3 = statuses(base, v3_path, introspect, bearer=bearer)
        deleted = httpx.delete(f"{base}/api/service/delete/{auth[0]}", auth=ADMIN)
        after = statuses(base, "/api/auth/introspection", introspect, auth=auth)
        after_v3 = statuses(base, v3_path, introspect, bearer=bearer)
        other = statuses(base, "/api/auth/introspection", {"token": other_token}, auth=other_auth)

    assert before == before_v3 == [200] * REQUESTS
    assert deleted.status_code == 204
    assert after == [401] * REQUESTS, "the deleted service's key and secret still open the API"
    assert after_v3 == [401] * REQUESTS, "the deleted service's access token still opens it"
    assert other == [200] * REQUESTS  # another service is untouched


def test_a_service_access_token_the_operator_revokes_stops_working_at_once_on_every_worker(
    backend: str, tmp_path: Path
) -> None:
    with (
        migrated_database(backend, tmp_path) as url,
        serving(tmp_path, server_environment(url), "--workers", "2") as (base, _),
    ):
        auth, [token] = tenant_with_tokens(base, 1)
        token_id, revoked = service_access_token(base, auth[0])
        _, kept = service_access_token(base, auth[0])
        path = f"/api/{auth[0]}/auth/introspection"
        introspect = {"token": token}

        before = statuses(base, path, introspect, bearer=revoked)
        revocation = httpx.delete(
            f"{base}/api/service/{auth[0]}/access_token/delete/{token_id}", auth=ADMIN
        )
        after = statuses(base, path, introspect, bearer=revoked)
        kept_after = statuses(base, path, introspect, bearer=kept)
        basic_after = statuses(base, "/api/auth/introspection", introspect, auth=auth)

    assert before == [200] * REQUESTS
    assert revocation.status_code == 204
    assert after == [401] * REQUESTS, "a revoked service access token still opens the API"
    assert kept_after == [200] * REQUESTS  # the service's other token still works
    assert basic_after == [200] * REQUESTS  # and so do its key and secret


# --- Unknown key or wrong secret: the same answer, in the same time --------------------------

SAMPLES = 300
WARM_UP = 30
TOLERANCE = 0.25  # of the faster median ...
TOLERANCE_FLOOR = 0.0003  # ... or this many seconds, whichever is larger
IGNORED_HEADERS = {"x-request-id", "date"}  # per request, and per second


def test_an_unknown_api_key_and_a_wrong_secret_are_answered_alike(
    backend: str, tmp_path: Path
) -> None:
    with (
        migrated_database(backend, tmp_path) as url,
        serving(tmp_path, server_environment(url), "--workers", "1") as (base, _),
    ):
        (api_key, _secret), [token] = tenant_with_tokens(base, 1)
        unknown_key = str(int(api_key) + 1 + secrets.randbelow(10**9))
        assert httpx.get(f"{base}/api/service/get/{unknown_key}", auth=ADMIN).status_code == 404
        wrong_secret = secrets.token_urlsafe(32)
        kinds: dict[str, tuple[str, str]] = {
            "unknown key": (unknown_key, wrong_secret),
            "wrong secret": (api_key, wrong_secret),
        }
        answers: dict[str, list[httpx.Response]] = {kind: [] for kind in kinds}
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        # One kept-alive connection: the times are the server's, not connection setup.
        with httpx.Client(base_url=base, timeout=10) as client:
            for round_number in range(WARM_UP + SAMPLES):
                # Interleaved, each kind first every other round: drift hits both alike.
                order = list(kinds) if round_number % 2 else list(reversed(kinds))
                for kind in order:
                    began = time.perf_counter()
                    response = client.post(
                        "/api/auth/introspection", json={"token": token}, auth=kinds[kind]
                    )
                    took = time.perf_counter() - began
                    if round_number >= WARM_UP:
                        answers[kind].append(response)
                        times[kind].append(took)

    def shape(response: httpx.Response) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
        headers = tuple(
            sorted((k, v) for k, v in response.headers.items() if k not in IGNORED_HEADERS)
        )
        return response.status_code, response.content, headers

    shapes = {kind: {shape(response) for response in answers[kind]} for kind in kinds}
    assert len(shapes["unknown key"]) == 1, shapes["unknown key"]
    assert shapes["unknown key"] == shapes["wrong secret"]
    [(status, _, _)] = shapes["unknown key"]
    assert status == 401
    medians = {kind: statistics.median(times[kind]) for kind in kinds}
    allowed = max(TOLERANCE * min(medians.values()), TOLERANCE_FLOOR)
    difference = abs(medians["unknown key"] - medians["wrong secret"])
    assert difference < allowed, (
        f"median times differ by {difference * 1000:.3f} ms (allowed {allowed * 1000:.3f} ms): "
        + ", ".join(f"{kind} {median * 1000:.3f} ms" for kind, median in medians.items())
    )
