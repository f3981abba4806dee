"""Logging: JSON lines, each with the request id of the request it belongs to.

Never logged: token values, hashes, secrets, request bodies, and raw paths (a path can
carry a token value, `/auth/token/delete/{accessTokenIdentifier}`): the access log names
the route template instead.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from contextvars import ContextVar
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics

access_log = logging.getLogger("tokenstore.access")
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, and any fields
    passed as `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        document.update(getattr(record, "fields", {}))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request's id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure(level: str, style: Literal["json", "text"] = "json") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if style == "json":
        handler.setFormatter(JsonFormatter())
        handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class AccessLog:
    """Gives each request an id (echoed as `X-Request-Id`), logs one line when it ends, and
    feeds the request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        current = uuid.uuid4().hex[:16]
        token = request_id.set(current)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", current.encode())]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = _route_template(scope)
            metrics.observe_request(route, scope["method"], status, seconds)
            access_log.info(
                "%s %s %d",
                scope["method"],
                route,
                status,
                extra={
                    "fields": {
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "ms": round(seconds * 1000, 2),
                    }
                },
            )
            request_id.reset(token)


def _route_template(scope: Scope) -> str:
    """The matched route's template (`/api/auth/token/delete/{accessTokenIdentifier}`): one
    label per route for the metrics, and never a value from the path (a token value, say)
    in a log line. An unmatched path is one fixed label."""
    # FastAPI (0.163) keeps the matched route's full template, router prefixes included, in
    # its scope; `scope["route"].path` lacks the prefixes. tests/api/test_operations.py
    # checks the result, so an upgrade that moves it cannot go unnoticed.
    context = scope.get("fastapi", {}).get("effective_route_context")
    template = getattr(context, "path", None) or getattr(scope.get("route"), "path", None)
    return template if isinstance(template, str) else "(no route)"
