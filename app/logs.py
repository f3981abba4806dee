"""Logging: one line per request with the route template, never the raw path or body.

Raw paths can carry token values (`/auth/token/delete/{accessTokenIdentifier}`), and bodies
carry values and secrets, so neither is ever logged.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("tokenstore.access")


def configure(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "request_id=%s method=%s route=%s status=%d ms=%.1f",
                request_id,
                scope["method"],
                _route_template(scope),
                status,
                (time.perf_counter() - started) * 1000,
            )


def _route_template(scope: Scope) -> str:
    # The router records the matched route in the (shared) scope.
    route = scope.get("route")
    return str(getattr(route, "path", "(no route)"))
