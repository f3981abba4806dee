"""A tenant built over HTTP, as an operator and an authorization server would build it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from httpx import AsyncClient, Response

from tests.conftest import OPERATOR

SCOPES: list[dict[str, Any]] = [
    {
        "name": "read",
        "attributes": [
            {"key": "access_token.duration", "value": "600"},
            {"key": "refresh_token.duration", "value": "7200"},
        ],
    },
    {"name": "write", "attributes": [{"key": "access_token.duration", "value": "300"}]},
    {
        "name": "profile",
        "attributes": [
            {"key": "access_token.duration", "value": "10000"},
            {"key": "refresh_token.duration", "value": "3600"},
        ],
    },
    {"name": "admin", "attributes": [{"key": "colour", "value": "blue"}]},
]


def ok(response: Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


@dataclass
class World:
    http: AsyncClient
    api_key: int
    api_secret: str
    client_id: int

    @property
    def auth(self) -> tuple[str, str]:
        return (str(self.api_key), self.api_secret)

    @classmethod
    async def create(cls, http: AsyncClient, *, requestable: list[str] | None = None) -> World:
        service = ok(
            await http.post(
                "/api/service/create",
                json={"serviceName": "test", "supportedScopes": SCOPES},
                auth=OPERATOR,
            )
        )
        auth = (str(service["apiKey"]), service["apiSecret"])
        extension = (
            {"requestableScopesEnabled": True, "requestableScopes": requestable}
            if requestable is not None
            else None
        )
        client = ok(
            await http.post(
                "/api/client/create",
                json={"clientName": "app", "extension": extension},
                auth=auth,
            )
        )
        return cls(http, service["apiKey"], service["apiSecret"], client["clientId"])

    async def token(self, **fields: Any) -> dict[str, Any]:
        body = {
            "grantType": "AUTHORIZATION_CODE",
            "clientId": self.client_id,
            "subject": "alice",
            "scopes": ["read"],
            **fields,
        }
        created = ok(await self.http.post("/api/auth/token/create", json=body, auth=self.auth))
        assert created["action"] == "OK", created
        return created

    async def update(self, path: str = "/auth/token/update", **fields: Any) -> dict[str, Any]:
        return ok(await self.http.post(path, json=fields, auth=self.auth))
