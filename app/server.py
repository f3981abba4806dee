"""The HTTP server's front door: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds neither the size of a request's head nor the time a client may take to
send it, and keeps a new connection that sends nothing open for ever. Anyone who can
reach the port could hold memory and connections without a credential. This protocol
adds, per connection:

- a bound on the request head, request line and headers together (`max_header_bytes`)
  and on the number of header fields (`max_headers`): beyond either the answer is 431 and
  the connection closes, before the head is buffered whole;
- a deadline for the head, from its first byte (`header_timeout_seconds`), and one for
  the body, from the end of the head (`body_timeout_seconds`): past either, 408 and the
  connection closes (for the body, only when no answer has started);
- the keep-alive timeout (`keep_alive_seconds`) from the moment a connection opens, not
  only after a first response: a connection that never sends a byte is closed as well.

The limits come from Settings (`TOKENSTORE_*`, docs/api.md "Limits"), read once per process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import Settings

log = logging.getLogger("tokenstore.http")

PROTOCOL = "app.server:BoundedHttpToolsProtocol"


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int
    max_headers: int
    header_timeout_seconds: float
    body_timeout_seconds: float


@cache
def limits() -> Limits:
    settings = Settings()
    return Limits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout_seconds=settings.header_timeout_seconds,
        body_timeout_seconds=settings.body_timeout_seconds,
    )


def _answer(status: int, reason: str, result_code: str, message: str) -> bytes:
    """A whole response, written by the protocol itself (no request reached the app)."""
    body = json.dumps({"resultCode": result_code, "resultMessage": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing at once."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits()
        self._head_pending = False  # between a request's first byte and its last header
        self._body_pending = False  # between its last header and the end of its body
        self._head_buffered = 0  # bytes of unfinished heads, as they arrive
        self._head_bytes = 0  # the request line and headers parsed so far
        self._header_count = 0
        self._deadline: asyncio.TimerHandle | None = None

    # --- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response; arm it now too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadTooLarge) or self.transport.is_closing():
                return
            self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        except httptools.HttpParserUpgrade:
            # As uvicorn: no WebSocket endpoint here, so a warning and plain HTTP.
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._body_pending and self._deadline is None:
            # Armed only when a body is still to come after this chunk: most requests end
            # in the chunk that ends their head, and need no timer for their body.
            self._set_deadline(self.limits.body_timeout_seconds, self._body_timed_out)
        elif self._head_pending:
            # The whole chunk went to a head that is not complete yet: counted raw, so a
            # header that never ends is cut off after one more chunk at the most.
            self._head_buffered += len(data)
            if self._head_buffered > self.limits.max_header_bytes:
                self._head_too_large()

    # --- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True
        self._head_buffered = 0
        self._head_bytes = 0
        self._header_count = 0
        self._set_deadline(self.limits.header_timeout_seconds, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if (
            self._head_bytes > self.limits.max_header_bytes
            or self._header_count > self.limits.max_headers
        ):
            self._head_too_large()
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._body_pending = True
        self._cancel_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_pending = False
        self._cancel_deadline()
        super().on_message_complete()

    # --- refusals -----------------------------------------------------------------------

    def _invalid(self) -> None:
        log.info("malformed HTTP request refused (400)")
        self._refuse(_answer(400, "Bad Request", "REQUEST_MALFORMED", "Malformed HTTP request."))

    def _head_too_large(self) -> None:
        log.info(
            "request head over %d bytes or %d fields refused (431)",
            self.limits.max_header_bytes,
            self.limits.max_headers,
        )
        message = (
            f"The request line and headers are over {self.limits.max_header_bytes} bytes or "
            f"{self.limits.max_headers} fields."
        )
        self._refuse(
            _answer(431, "Request Header Fields Too Large", "REQUEST_HEADERS_TOO_LARGE", message)
        )

    def _head_timed_out(self) -> None:
        log.info("request head not received in %s s (408)", self.limits.header_timeout_seconds)
        self._timed_out()

    def _body_timed_out(self) -> None:
        cycle = self.cycle
        if cycle is not None and (cycle.response_started or cycle.response_complete):
            return  # the app answered already; the body it did not need is not waited for
        log.info("request body not received in %s s (408)", self.limits.body_timeout_seconds)
        if cycle is not None:
            # The app waits for the rest of the body: it hears the client is gone, and
            # whatever it answers is dropped (uvicorn ignores sends after a disconnect).
            cycle.disconnected = True
            cycle.message_event.set()
        self._timed_out()

    def _timed_out(self) -> None:
        message = "The request did not arrive in time."
        self._refuse(_answer(408, "Request Timeout", "REQUEST_TIMEOUT", message))

    def _refuse(self, response: bytes) -> None:
        self._cancel_deadline()
        self._head_pending = self._body_pending = False
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    # --- timers -------------------------------------------------------------------------

    def _set_deadline(self, seconds: float, callback: Any) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(seconds, callback)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
