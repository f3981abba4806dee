"""Property-based calls of every operation in the app's own OpenAPI document: no 5xx, and
no response that contradicts its documented schema or content type."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)
from sqlalchemy import Engine

from app.clients import service as clients
from app.clients.service import ClientSpec
from app.config import Settings
from app.db import make_sessionmaker
from app.services import service as services
from app.services.service import ScopeSpec, ServiceSpec
from tests.conftest import OPERATOR

Credentials = Callable[[str], dict[str, str]]


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


@pytest.fixture(scope="session")
def api_schema(base_url: str) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


@pytest.fixture(scope="session")
def credentials(settings: Settings, engine: Engine) -> Credentials:
    """Real credentials, so that generated calls get past authentication: the operator's
    for /api/service/*, a service's (with scopes and a client) for the rest."""
    with make_sessionmaker(engine).begin() as session:
        service, secret = services.create(
            session,
            spec=ServiceSpec("fuzzed", None, (ScopeSpec("read", None, ()),), None, None),
            hash_key=settings.hash_key,
            now=1_800_000_000_000,
        )
        clients.create(
            session, service_api_key=service.api_key,
            spec=ClientSpec("c", None, None, None, None), now=1_800_000_000_000,
        )  # fmt: skip
    operator = {"Authorization": basic(*OPERATOR)}
    tenant = {"Authorization": basic(str(service.api_key), secret)}

    def for_path(path: str) -> dict[str, str]:
        return operator if path.startswith("/api/service/") else tenant

    return for_path


# Examples per operation: enough for CI; a deeper hunt sets TOKENSTORE_SCHEMATHESIS_EXAMPLES.
EXAMPLES = int(os.environ.get("TOKENSTORE_SCHEMATHESIS_EXAMPLES", "15"))


def test_no_operation_answers_5xx_or_off_its_schema(
    api_schema: BaseSchema, credentials: Credentials
) -> None:
    # Driven by hand rather than through schemathesis' pytest plugin, whose lazy-fixture
    # support reads a pytest internal that pytest 9 removed.
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    failures: dict[str, str] = {}
    results = list(api_schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the OpenAPI document has invalid operations"
    assert len(operations) >= 30
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES, deadline=None, database=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def call(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers=credentials(case.path), checks=checks)

        try:
            call()
        except Exception as error:  # every operation is reported together
            failures[operation.label] = str(error)[:500]
    assert failures == {}
