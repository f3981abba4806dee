"""The OpenAPI document declares what the API does: every path parameter, the statuses each
kind of route answers with their error body, and no FastAPI 422."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from httpx import AsyncClient

pytestmark = pytest.mark.anyio

Operation = tuple[str, str, dict[str, Any]]


async def operations(http: AsyncClient) -> tuple[dict[str, Any], list[Operation]]:
    document: dict[str, Any] = (await http.get("/openapi.json")).json()
    found = [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    return document, found


def statuses(operation: dict[str, Any]) -> set[int]:
    return {int(code) for code in operation["responses"]}


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    name = schema["$ref"].rsplit("/", 1)[-1]
    resolved: dict[str, Any] = document["components"]["schemas"][name]
    return resolved


def strings(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        if schema.get("type") == "string":
            yield schema
        for value in schema.values():
            yield from strings(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from strings(item)


async def test_every_path_parameter_is_declared(http: AsyncClient) -> None:
    _, found = await operations(http)
    for path, method, operation in found:
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)


async def test_no_operation_claims_422_and_every_error_has_the_error_body(
    http: AsyncClient,
) -> None:
    document, found = await operations(http)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, method, operation in found:
        assert 422 not in statuses(operation), (method, path)
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, code)


async def test_each_kind_of_route_declares_the_statuses_it_answers(http: AsyncClient) -> None:
    _, found = await operations(http)
    for path, method, operation in found:
        answers = statuses(operation)
        assert {400, 413} <= answers, (method, path)
        if path == "/health":
            assert answers == {200, 400, 413}
            continue
        assert {500, 503} <= answers, (method, path)
        assert (404 in answers) == ("{" in path), (method, path)
        behind_credentials = path.startswith(("/api/", "/auth/"))
        assert (401 in answers) == behind_credentials, (method, path)
        if behind_credentials:
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
            assert operation["security"], (method, path)
        # Changes made in a unit of work (not the hot path's update and introspections).
        hot = path.endswith(("/auth/token/update", "/introspection", "/introspection/standard"))
        changes = method in ("post", "delete") and not hot
        assert (409 in answers) == changes, (method, path)


async def test_request_strings_exclude_nul_and_revoke_needs_something_to_revoke(
    http: AsyncClient,
) -> None:
    document, found = await operations(http)
    for path, method, operation in found:
        for parameter in operation.get("parameters", []):
            for schema in strings(parameter["schema"]):
                assert "pattern" in schema, (method, path, parameter["name"])
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            for schema in strings(resolve(document, body["schema"])):
                assert "pattern" in schema or "enum" in schema, (method, path)
    revoke = document["components"]["schemas"]["TokenRevokeIn"]
    assert [choice["required"] for choice in revoke["anyOf"]] == [
        ["accessTokenIdentifier"], ["refreshTokenIdentifier"], ["clientIdentifier"], ["subject"]
    ]  # fmt: skip
