"""A tenant made over HTTP on a running server, for the resilience tests."""

from __future__ import annotations

import httpx

from tests.servers import clean_environment

ADMIN = ("operator", "a" * 40)


def server_environment(database_url: str) -> dict[str, str]:
    return clean_environment(
        TOKENSTORE_ENV="production", TOKENSTORE_DATABASE_URL=database_url,
        TOKENSTORE_ADMIN_API_KEY=ADMIN[0], TOKENSTORE_ADMIN_API_SECRET=ADMIN[1],
        TOKENSTORE_HASH_SECRET="h" * 40,
    )  # fmt: skip


def tenant_with_tokens(base: str, count: int) -> tuple[tuple[str, str], list[str]]:
    service = httpx.post(f"{base}/api/service/create", json={}, auth=ADMIN).json()
    auth = (str(service["apiKey"]), service["apiSecret"])
    client = httpx.post(f"{base}/api/client/create", json={}, auth=auth).json()
    tokens = []
    for _ in range(count):
        token = httpx.post(
            f"{base}/api/auth/token/create",
            json={"grantType": "PASSWORD", "clientId": client["clientId"], "subject": "s"},
            auth=auth,
        ).json()
        tokens.append(token["accessToken"])
    return auth, tokens
