"""The HTTP edge shared by every router: body parsing, the size limit, error rendering."""

from __future__ import annotations

import logging
import sqlite3
import traceback
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import parse_qsl, unquote

import psycopg
import pydantic_core
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import FOREIGN_KEY_VIOLATION, is_unique_violation, sqlstate
from app.errors import (
    ApiError,
    Conflict,
    InternalError,
    MalformedRequest,
    PayloadTooLarge,
    ServiceBusy,
    ServiceUnavailable,
    Unauthenticated,
)
from app.wire import MAX_ID, unstorable

log = logging.getLogger("tokenstore.http")

M = TypeVar("M", bound=BaseModel)

WWW_AUTHENTICATE = 'Basic realm="tokenstore", charset="UTF-8", Bearer realm="tokenstore"'
JSON_TYPES = ("application/json", "")
FORM_TYPE = "application/x-www-form-urlencoded"

# Numeric identifiers and page bounds: out of range is a malformed call (400), never a
# 64-bit overflow in the database.
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
PageStart = Annotated[int, Query(ge=0, le=2**31)]
PageEnd = Annotated[int, Query(ge=0, le=2**31)]


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def describe(error: ValidationError) -> str:
    """A readable sentence for the first few problems pydantic found."""
    parts = []
    for problem in error.errors()[:3]:
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        parts.append(f"{where}: {problem['msg']}")
    more = len(error.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "") + "."


def parse_json(model: type[M], raw: bytes) -> M:
    """Strict JSON (RFC 8259) into `model`. The parser (pydantic-core's) refuses nesting
    deeper than 200 levels; NaN and Infinity, which it would take, are refused here."""
    if not raw.strip():
        raise MalformedRequest("The request body is empty; send a JSON object.")
    if (b"NaN" in raw or b"Infinity" in raw) and not _finite(raw):
        raise MalformedRequest("The request body is not valid JSON: NaN and Infinity are not JSON.")
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        if any(problem["type"] == "json_invalid" for problem in error.errors()):
            raise MalformedRequest("The request body is not valid JSON.") from None
        raise MalformedRequest(f"Invalid request: {describe(error)}") from None


def _finite(raw: bytes) -> bool:
    """Whether JSON that mentions NaN or Infinity holds them only inside strings."""
    try:
        pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError:
        return False
    return True


class JsonBody(Generic[M]):
    """A dependency that reads a JSON body into `model`, with HTTP 400 on any problem.

    The OpenAPI document takes a route's request body from here (app.openapi): a route
    names its body model once, in the parameter that receives it. `form_without`, when
    set, says a form is accepted too, with all the model's members but those."""

    form_without: frozenset[str] | None = None

    def __init__(self, model: type[M]) -> None:
        self.model = model

    async def __call__(self, request: Request) -> M:
        kind = media_type(request)
        if kind not in JSON_TYPES and not kind.endswith("+json"):
            raise MalformedRequest(f"Content-Type {kind!r} is not accepted; send application/json.")
        return parse_json(self.model, await request.body())


def json_body(model: type[M]) -> JsonBody[M]:
    return JsonBody(model)


def json_response(model: BaseModel) -> Response:
    """Our own output, serialized once: FastAPI would validate a returned model against the
    route's response model again before serializing it (the model stays the documentation)."""
    return Response(
        model.model_dump_json(by_alias=True, exclude_none=True), media_type="application/json"
    )


def form_fields(raw: bytes) -> dict[str, list[str]]:
    """`application/x-www-form-urlencoded` fields, each with all its values."""
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise MalformedRequest("The form body is not UTF-8.") from None
    fields: dict[str, list[str]] = {}
    for key, value in pairs:
        fields.setdefault(key, []).append(value)
    return fields


class BodySizeLimit:
    """Refuses bodies over `limit` bytes with 413, before the application reads them
    whole: by `Content-Length` when given, else by counting chunked bytes as they come."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await too_large(self.limit)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(f"The request body is over {self.limit} bytes.")
            return message

        await self.app(scope, limited_receive, send)


class StorableText:
    """Refuses a path or query holding NUL, a lone surrogate or invalid UTF-8 (after
    percent-decoding) with 400, before it can reach the database as a lookup value."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                texts = [scope["path"], unquote(scope["query_string"].decode("ascii"),
                                                errors="strict")]  # fmt: skip
            except (UnicodeDecodeError, ValueError):
                texts = ["\x00"]
            if any(unstorable(text) for text in texts):
                response = render(
                    MalformedRequest("The path or query holds characters no identifier has.")
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def too_large(limit: int) -> JSONResponse:
    return render(PayloadTooLarge(f"The request body is over {limit} bytes."))


def render(error: ApiError) -> JSONResponse:
    body: dict[str, Any] = {"resultCode": error.result_code, "resultMessage": error.message}
    if error.action is not None:
        body["action"] = error.action
    headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if isinstance(error, Unauthenticated) else None
    return JSONResponse(body, status_code=error.status_code, headers=headers)


# PostgreSQL's SQLSTATEs (its manual, appendix A) that tell a database error's meaning: a
# statement cancelled by the statement timeout, a lock not obtained, the class of too few
# resources (too many connections, out of memory), the class of a transaction rolled back
# to settle a conflict (deadlock_detected, serialization_failure), and the classes of a
# broken or refused connection and of the server's shutdowns and restarts.
QUERY_CANCELED = "57014"
LOCK_NOT_AVAILABLE = "55P03"
INSUFFICIENT_RESOURCES = "53"
TRANSACTION_ROLLBACK = "40"
UNREACHABLE = ("08", "57")
# Errors whose text can quote a statement's parameters or the server's DETAIL, which holds
# a row's values (a client's alias, a name): logged by class and SQLSTATE only. All of
# SQLAlchemy's, since some quote another's text (PendingRollbackError quotes the failure
# that rolled the session back).
DATABASE_ERRORS = (SQLAlchemyError, psycopg.Error, sqlite3.Error)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)  # noqa: S101 - registered for ApiError only
        if error.status_code >= 500:
            log.error("request failed: %s", error.message)
        return render(error)

    async def on_validation(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)  # noqa: S101
        problems = [
            f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()[:3]
        ]
        return render(MalformedRequest("Invalid request: " + "; ".join(problems) + "."))

    async def on_http(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)  # noqa: S101
        rendered = render(_http_error(error.status_code, str(error.detail)))
        if error.headers:
            rendered.headers.update(error.headers)
        return rendered

    async def on_database(request: Request, error: Exception) -> JSONResponse:
        # Nothing was committed. Only the error's class and SQLSTATE are logged.
        outcome = database_outcome(error)
        if outcome is None:
            return await on_unexpected(request, error)
        if isinstance(outcome, ServiceBusy):
            log.warning("database busy: %s", error_summary(error))
        elif isinstance(outcome, Conflict):
            log.warning("transaction rolled back for a concurrent one: %s", error_summary(error))
        else:
            log.error("database unavailable: %s", error_summary(error))
        return render(outcome)

    async def on_integrity(request: Request, error: Exception) -> JSONResponse:
        # A write refused by a constraint, most often after a concurrent request's write.
        outcome = integrity_outcome(error)
        if outcome is None:
            return await on_unexpected(request, error)
        log.info("write refused by a constraint: %s", error_summary(error))
        return render(outcome)

    async def on_pool_exhausted(_request: Request, error: Exception) -> JSONResponse:
        # Every pooled connection stayed busy for the pool timeout: overload, not a fault.
        log.warning("no database connection became free in time: %s", type(error).__name__)
        return render(ServiceBusy("Every database connection is busy; retry later."))

    async def on_unfit_value(_request: Request, error: Exception) -> JSONResponse:
        # A value the edge let through but the database refuses (out of range, too long):
        # the caller's input, not a fault of the service. Rolled back like any error.
        log.warning("value refused by the database: %s", error_summary(error))
        return render(MalformedRequest("A value is out of range or too long to store."))

    async def on_client_gone(_request: Request, _error: Exception) -> Response:
        # The client closed the connection before its body arrived: nobody will read an
        # answer, and it is no fault of the service. Nothing was written.
        log.info("client disconnected before the request was read")
        return Response(status_code=400)

    async def on_unexpected(_request: Request, error: Exception) -> JSONResponse:
        # The traceback as text, without what a database error's text would carry.
        log.error("unexpected failure: %s\n%s", error_summary(error), redacted_traceback(error))
        return render(InternalError("An unexpected error occurred; nothing was changed."))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(OperationalError, on_database)
    app.add_exception_handler(IntegrityError, on_integrity)
    app.add_exception_handler(PoolTimeout, on_pool_exhausted)
    app.add_exception_handler(DataError, on_unfit_value)
    app.add_exception_handler(DBAPIError, _database_or_unexpected(on_database, on_unexpected))
    app.add_exception_handler(
        psycopg.Error, _driver_error(on_database, on_integrity, on_unfit_value, on_unexpected)
    )
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(Exception, on_unexpected)
    # Starlette's outermost middleware answers with that handler and then raises the error
    # again, for the server to log: uvicorn would log the whole traceback, a database
    # error's text included. It was answered and logged (redacted) already: it stops here.
    build_stack = app.build_middleware_stack

    def stack_that_keeps_its_errors() -> ASGIApp:
        return _KeepAnsweredErrors(build_stack())

    app.build_middleware_stack = stack_that_keeps_its_errors  # type: ignore[method-assign]


class _KeepAnsweredErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:  # answered 500 and logged (redacted) by on_unexpected
            if scope["type"] != "http":
                raise


def database_outcome(error: BaseException) -> ApiError | None:
    """What an operational database error tells the caller, by its SQLSTATE; None when it
    is a fault of the service (500). "Unavailable" only when the database is out of reach:
    a database that answers is busy, or refused a transaction, but it is up."""
    code = sqlstate(error)
    if code == QUERY_CANCELED:
        # The statement timeout: a lock held too long, or an overloaded database.
        return ServiceBusy("The database did not answer in time; retry later.")
    if code == LOCK_NOT_AVAILABLE or _sqlite_busy(error):
        return ServiceBusy("The database is busy; retry later.")
    if code is not None and code.startswith(INSUFFICIENT_RESOURCES):
        return ServiceBusy("The database is short of resources; retry later.")
    if code is not None and code.startswith(TRANSACTION_ROLLBACK):
        # A deadlock or a serialization failure, as often as app.transactions runs a
        # unit of work again: concurrent requests contended for the same rows.
        return Conflict(
            "Concurrent requests changed the same data and this one was rolled back; "
            "nothing was changed, retry it."
        )
    if code is None or code.startswith(UNREACHABLE):
        # The connection broke or could not be made (a driver error without a SQLSTATE,
        # or SQLite's file), or the server is shutting down: a retry may succeed.
        return ServiceUnavailable("The database is unavailable; retry later.")
    return None


def integrity_outcome(error: BaseException) -> ApiError | None:
    """What a write refused by a constraint tells the caller; None for a fault of ours
    (a NOT NULL or CHECK constraint the service should never break)."""
    if is_unique_violation(error):
        return Conflict(
            "A value that must be unique is already taken, possibly by a concurrent "
            "request; nothing was changed."
        )
    dangling = sqlstate(error) == FOREIGN_KEY_VIOLATION
    if dangling or _sqlite_error(error, "SQLITE_CONSTRAINT_FOREIGNKEY"):
        return Conflict(
            "What this request refers to was deleted meanwhile, possibly by a concurrent "
            "request; nothing was changed."
        )
    return None


def _sqlite_error(error: BaseException, prefix: str) -> bool:
    name = getattr(getattr(error, "orig", error), "sqlite_errorname", None)
    return isinstance(name, str) and name.startswith(prefix)


def _sqlite_busy(error: BaseException) -> bool:
    """SQLite's "database is locked": another writer outlasted the busy timeout."""
    return _sqlite_error(error, "SQLITE_BUSY") or _sqlite_error(error, "SQLITE_LOCKED")


def error_summary(error: BaseException) -> str:
    """An error's class, with its driver error's class and SQLSTATE for a database error:
    never a database error's text, which can quote the statement's parameters and the
    server's DETAIL (the values of a row)."""
    if not isinstance(error, DATABASE_ERRORS):
        return type(error).__name__
    parts = [type(error).__name__]
    driver_error = getattr(error, "orig", None)
    if isinstance(driver_error, BaseException):
        parts.append(type(driver_error).__name__)
    code = sqlstate(error)
    if code is not None:
        parts.append(f"sqlstate={code}")
    return " ".join(parts)


def redacted_traceback(error: BaseException) -> str:
    """The traceback of `error` and of the errors it arose from, as Python prints them,
    except that a database error shows only its `error_summary`."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and not any(current is seen for seen in chain):
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__
    blocks = []
    for link in reversed(chain):
        if isinstance(link, DATABASE_ERRORS):
            last = f"{type(link).__module__}.{type(link).__qualname__}: {error_summary(link)}"
        else:
            last = "".join(traceback.format_exception_only(link)).rstrip()
        frames = "".join(traceback.format_tb(link.__traceback__))
        blocks.append(f"Traceback (most recent call last):\n{frames}{last}")
    return "\n\nwhich led to:\n\n".join(blocks)


def _database_or_unexpected(
    on_database: Callable[[Request, Exception], Awaitable[JSONResponse]],
    on_unexpected: Callable[[Request, Exception], Awaitable[JSONResponse]],
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, error: Exception) -> JSONResponse:
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return await on_database(request, error)
        return await on_unexpected(request, error)

    return handler


def _driver_error(
    on_database: Callable[[Request, Exception], Awaitable[JSONResponse]],
    on_integrity: Callable[[Request, Exception], Awaitable[JSONResponse]],
    on_unfit_value: Callable[[Request, Exception], Awaitable[JSONResponse]],
    on_unexpected: Callable[[Request, Exception], Awaitable[JSONResponse]],
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """The hot path's errors straight from psycopg (app.tokens.repository), sorted as their
    SQLAlchemy-wrapped twins are above."""

    async def handler(request: Request, error: Exception) -> JSONResponse:
        if isinstance(error, psycopg.OperationalError):
            # QueryCanceled (the statement timeout) is one too; on_database tells it apart.
            return await on_database(request, error)
        if isinstance(error, psycopg.IntegrityError):
            return await on_integrity(request, error)
        if isinstance(error, psycopg.DataError):
            return await on_unfit_value(request, error)
        return await on_unexpected(request, error)

    return handler


def _http_error(status: int, detail: str) -> ApiError:
    error = ApiError(detail if status != 404 else "No such endpoint.")
    error.status_code = status
    error.result_code = {404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(
        status, "REQUEST_INVALID"
    )
    return error
