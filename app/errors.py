"""The error hierarchy: each class carries its HTTP status, result code and `action`.

Pure on purpose (standard library only), so the update rules can raise these without
pulling in the web framework. The one handler that renders them lives in `app.http`.

Business outcomes of the Authlete-style APIs travel as HTTP 200 with an `action`
(docs/api.md, "Responses"); everything else uses a real 4xx/5xx status.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of every expected failure. Never carries a secret, a token value or a hash."""

    status_code: int = 400
    result_code: str = "REQUEST_INVALID"
    action: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- Not a well-formed API call at all: HTTP 4xx without an action -------------------------


class MalformedRequest(ApiError):
    """Unparseable body, a field of the wrong JSON type, an unknown content type."""

    status_code = 400
    result_code = "REQUEST_MALFORMED"


class PayloadTooLarge(ApiError):
    status_code = 413
    result_code = "REQUEST_TOO_LARGE"


class Unauthenticated(ApiError):
    """A missing or wrong credential. Rendered with a `WWW-Authenticate` header."""

    status_code = 401
    result_code = "CREDENTIALS_INVALID"


class ResourceNotFound(ApiError):
    """A management resource (service, client) that does not exist for the caller."""

    status_code = 404
    result_code = "RESOURCE_NOT_FOUND"


class Conflict(ApiError):
    status_code = 409
    result_code = "RESOURCE_CONFLICT"


class InvalidValue(ApiError):
    """A management request with a well-typed but unacceptable value."""

    status_code = 400
    result_code = "VALUE_INVALID"


# --- Business outcomes: HTTP 200 with an action ---------------------------------------------


class ActionError(ApiError):
    status_code = 200


class BadRequestAction(ActionError):
    """The call is well-formed but a value breaks a rule; nothing was changed."""

    action = "BAD_REQUEST"
    result_code = "TOKEN_REQUEST_INVALID"


class TokenNotFound(ActionError):
    """No such token in the caller's service, or both of its tokens have expired."""

    action = "NOT_FOUND"
    result_code = "TOKEN_NOT_FOUND"


class ClientUnknown(ActionError):
    """Token creation for a client the caller's service does not have."""

    action = "BAD_REQUEST"
    result_code = "TOKEN_CLIENT_UNKNOWN"


class InternalError(ApiError):
    status_code = 500
    result_code = "INTERNAL_ERROR"
    action = "INTERNAL_SERVER_ERROR"


class ServiceUnavailable(InternalError):
    """The database cannot be reached; retrying later may succeed."""

    status_code = 503
    result_code = "DATABASE_UNAVAILABLE"


class ServiceBusy(ServiceUnavailable):
    """Overload, not a fault: no pooled connection (or SQLite writer turn) came free within
    the pool timeout, or PostgreSQL cancelled a statement at the statement timeout."""

    result_code = "SERVICE_BUSY"
