"""The OpenAPI document at /openapi.json: FastAPI's, completed in one place.

FastAPI documents what a route declares in its signature, and cannot see the rest of what
the API does: bodies that a dependency parses, a path parameter read from the request, the
statuses that the edge (`app.http`) and the credentials (`app.auth`) answer with. This
module adds them when the document is built (once, on the first request for it), from the
routes themselves, so that a new route or field needs no edit here:

- the bodies that a dependency parses by hand (`openapi_body`);
- the v3 prefix's `serviceId`, which `app.auth` reads from the path (`PATH_PARAMETERS`);
- every status a route answers besides its success, by the kind of route it is
  (`ANSWERS`), each with the error body `app.http.render` writes (`ErrorOut`), as are
  the statuses a route names itself (`responses=` on its decorator);
- the credentials each route takes (`SECURITY_SCHEMES`);
- that no request string may hold NUL (`NUL_FREE`), in a member the API ignores too;
- the form that `/auth/token/update` also takes, derived from its JSON body;

and it removes FastAPI's 422 and its `HTTPValidationError`: validation errors are 400.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Collection, Iterator
from enum import Enum
from typing import Any

from fastapi import routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.routing import BaseRoute

from app.auth import require_operator, require_service
from app.http import FORM_TYPE, JsonBody
from app.transactions import unit_of_work
from app.wire import WireResponse

# JSON Schema (ECMA 262) for "holds no NUL": `app.wire` refuses NUL in a body, and
# `app.http.StorableText` in a path or query, before they can reach the database.
NUL_FREE = "^[^\\u0000]*$"

# Routes that do not touch the database (everything else may answer 500 and 503).
WITHOUT_DATABASE = frozenset({"/health"})

SCHEMAS = "#/components/schemas/"

# Unknown members of a request object are ignored (docs/api.md), but their strings are checked
# for NUL all the same (`app.wire`).
STORABLE_JSON: dict[str, Any] = {
    "description": "Any JSON value without NUL in its strings and member names.",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": NUL_FREE},
        {"type": "array", "items": {"$ref": SCHEMAS + "StorableJson"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NUL_FREE},
            "additionalProperties": {"$ref": SCHEMAS + "StorableJson"},
        },
    ],
}


class ErrorOut(WireResponse):
    """Every answer that is not a success or a business outcome (`app.http.render`)."""

    result_code: str
    result_message: str
    action: str | None = None  # INTERNAL_SERVER_ERROR on 500 and 503 only


class Kind(Enum):
    """What a route is, as far as the statuses it may answer go."""

    ANY = "every route"
    PATH_PARAMETER = "a path parameter"
    CREDENTIALS = "credentials"
    DATABASE = "the database"
    WRITE = "a change in a unit of work"


# Which statuses each kind of route answers besides its success (README, "Envelope and
# errors"); the handlers named are those that answer them.
ANSWERS: dict[Kind, tuple[int, ...]] = {
    # app.http: StorableText checks every path and query, BodySizeLimit every body.
    Kind.ANY: (400, 413),
    # A resource that the caller does not have (services.service, clients.service,
    # tokens.service: ResourceNotFound), or a v3 `serviceId` that is not a number, which
    # no route matches.
    Kind.PATH_PARAMETER: (404,),
    # app.auth: missing or wrong credentials, or those of another service than the path's.
    Kind.CREDENTIALS: (401,),
    # app.http's handlers: the database unreachable, busy or timed out (503), anything
    # unexpected (500). Credentials are read from the database while its replica reloads.
    Kind.DATABASE: (500, 503),
    # A change (POST, DELETE) in the request's unit of work (app.transactions.unit_of_work):
    # the database refused it for a concurrent request's change (a client alias taken, a
    # row deleted meanwhile, a deadlock still there after the retries; app.http).
    Kind.WRITE: (409,),
}

DESCRIPTIONS: dict[int, str] = {
    400: (
        "Not a well-formed call (REQUEST_MALFORMED, REQUEST_INVALID): a body that is not "
        "JSON of the documented shape or content type, a parameter outside its schema, NUL "
        "in the path or query; or a management value the service refuses (VALUE_INVALID: "
        "start > end, a page over 1,000 entries, scope names that repeat or hold spaces)."
    ),
    401: (
        "Missing or wrong credentials, or those of another service than the path names "
        "(CREDENTIALS_INVALID)."
    ),
    404: (
        "No such service, client or token for this caller (RESOURCE_NOT_FOUND), or a "
        "serviceId that is not a decimal number (ENDPOINT_NOT_FOUND)."
    ),
    409: (
        "A concurrent request changed the same data first, e.g. took the client alias "
        "(RESOURCE_CONFLICT); nothing was changed."
    ),
    413: "The body is over the configured limit (REQUEST_TOO_LARGE).",
    500: "An unexpected failure; nothing was changed (INTERNAL_ERROR).",
    503: (
        "The database is unavailable (DATABASE_UNAVAILABLE) or busy (SERVICE_BUSY); "
        "nothing was changed, a retry may succeed."
    ),
}

WWW_AUTHENTICATE_HEADER = {
    "WWW-Authenticate": {
        "description": "The schemes accepted: Basic and Bearer.",
        "required": True,
        "schema": {"type": "string"},
    }
}

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "operator": {
        "type": "http",
        "scheme": "basic",
        "description": "The operator's TOKENSTORE_ADMIN_API_KEY and TOKENSTORE_ADMIN_API_SECRET.",
    },
    "service": {
        "type": "http",
        "scheme": "basic",
        "description": "A service's apiKey and apiSecret.",
    },
    "serviceAccessToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A service access token that the operator created (Authlete API v3).",
    },
}
SECURITY: dict[Callable[..., Any], list[dict[str, list[str]]]] = {
    require_operator: [{"operator": []}],
    require_service: [{"service": []}, {"serviceAccessToken": []}],
}

# Path parameters that a route reads from `request.path_params` without declaring them.
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "serviceId": {
        "name": "serviceId",
        "in": "path",
        "required": True,
        "description": "The service (its apiKey) whose credentials the request carries.",
        "schema": {"type": "integer", "minimum": 0},
    },
}


# --- Bodies parsed by hand -----------------------------------------------------------------

# Models whose bodies a dependency parses by hand; `document` adds their schemas to the
# components. Filled at import time by the routers, read once, when the document is built.
DOCUMENTED_BODIES: dict[str, type[BaseModel]] = {}
# The same for a form: the model, and the members accepted in JSON only.
DOCUMENTED_FORMS: dict[str, tuple[type[BaseModel], frozenset[str]]] = {}


def openapi_body(
    model: type[BaseModel], *, form_without: Collection[str] | None = None
) -> dict[str, Any]:
    """`openapi_extra` for a route whose body a dependency parses by hand: JSON, and also
    `application/x-www-form-urlencoded` with the JSON body's scalar and list members when
    `form_without` names the others."""
    DOCUMENTED_BODIES[model.__name__] = model
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": SCHEMAS + model.__name__}}}
    if form_without is not None:
        name = f"{model.__name__}Form"
        DOCUMENTED_FORMS[name] = (model, frozenset(form_without))
        content[FORM_TYPE] = {"schema": {"$ref": SCHEMAS + name}}
    return {"requestBody": {"required": True, "content": content}}


# --- The document ---------------------------------------------------------------------------


def document(
    routes: list[BaseRoute], *, title: str, version: str, summary: str | None = None
) -> dict[str, Any]:
    openapi = get_openapi(title=title, version=version, summary=summary, routes=routes)
    for path, method, dependant in _operations(routes):
        _complete(openapi["paths"][path][method], path, method, dependant)
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for name, model in DOCUMENTED_BODIES.items():
        schema = _request_schema(model)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    for name, (model, json_only) in DOCUMENTED_FORMS.items():
        schemas[name] = _form_schema(_request_schema(model), json_only)
    schemas["StorableJson"] = copy.deepcopy(STORABLE_JSON)
    schemas[ErrorOut.__name__] = ErrorOut.model_json_schema(by_alias=True)
    openapi["components"]["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    return openapi


def _request_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, ref_template=SCHEMAS + "{model}")
    for definition in [schema, *schema.get("$defs", {}).values()]:
        forbid_nul(definition)
        if definition.get("type") == "object":
            definition.setdefault("propertyNames", {"pattern": NUL_FREE})
            definition.setdefault("additionalProperties", {"$ref": SCHEMAS + "StorableJson"})
    return schema


def _form_schema(body: dict[str, Any], json_only: frozenset[str]) -> dict[str, Any]:
    """A form as `app.http.form_fields` reads it: the body's members but those accepted in
    JSON only, none of them null (a form has no null), and unknown fields single strings."""
    members: dict[str, Any] = {}
    for name, schema in body["properties"].items():
        if name in json_only:
            continue
        member = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
        choices = [choice for choice in schema.get("anyOf", ()) if choice.get("type") != "null"]
        if len(choices) == 1:
            member.update(choices[0])
        elif choices:
            member["anyOf"] = choices
        members[name] = member
    return {
        "title": body.get("title", "") + " (form)",
        "type": "object",
        "properties": members,
        "propertyNames": {"pattern": NUL_FREE},
        "additionalProperties": {"type": "string", "pattern": NUL_FREE},
        "not": {"anyOf": [{"required": [name]} for name in sorted(json_only)]},
    }


def _operations(routes: list[BaseRoute]) -> Iterator[tuple[str, str, Dependant]]:
    """Each documented operation's path, method and dependencies (as `get_openapi` finds
    the routes, prefixes included)."""
    for context in routing.iter_route_contexts(routes):
        route = context.original_route
        if not isinstance(route, routing.APIRoute) or not route.include_in_schema:
            continue
        for method in sorted(context.methods or ()):
            yield str(context.path_format), method.lower(), context.dependant


def _complete(operation: dict[str, Any], path: str, method: str, dependant: Dependant) -> None:
    _declare_parameters(operation, path)
    calls = set(_calls(dependant))
    for call in calls:
        if isinstance(call, JsonBody):  # the body a dependency parses by hand (app.http)
            form_without = None if call.form_without is None else sorted(call.form_without)
            operation.update(openapi_body(call.model, form_without=form_without))
    security = [scheme for call, schemes in SECURITY.items() if call in calls for scheme in schemes]
    if security:
        operation["security"] = security
    kinds = {Kind.ANY}
    if re.search(r"{\w+}", path):
        kinds.add(Kind.PATH_PARAMETER)
    if security:
        kinds.add(Kind.CREDENTIALS)
    if path not in WITHOUT_DATABASE:
        kinds.add(Kind.DATABASE)
    if unit_of_work in calls and method in ("post", "delete"):
        kinds.add(Kind.WRITE)
    _declare_responses(operation, sorted(status for kind in kinds for status in ANSWERS[kind]))


def _declare_parameters(operation: dict[str, Any], path: str) -> None:
    parameters = operation.setdefault("parameters", [])
    declared = {parameter["name"] for parameter in parameters if parameter["in"] == "path"}
    for name in re.findall(r"{(\w+)}", path):
        if name not in declared:
            # A KeyError here: a new undeclared path parameter, to describe in PATH_PARAMETERS.
            parameters.insert(0, copy.deepcopy(PATH_PARAMETERS[name]))
    for parameter in parameters:
        forbid_nul(parameter["schema"])
    if not parameters:
        del operation["parameters"]


def _declare_responses(operation: dict[str, Any], statuses: list[int]) -> None:
    responses: dict[str, Any] = operation["responses"]
    responses.pop("422", None)
    for status in statuses:
        responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
    for code, response in responses.items():
        if int(code) >= 400:
            response.setdefault(
                "content", {"application/json": {"schema": {"$ref": SCHEMAS + "ErrorOut"}}}
            )
        if code == "401":
            response.setdefault("headers", copy.deepcopy(WWW_AUTHENTICATE_HEADER))
    operation["responses"] = dict(sorted(responses.items()))


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def forbid_nul(schema: Any) -> None:
    """Adds `NUL_FREE` to every string schema within `schema` that has no pattern of its
    own (a pattern of its own excludes NUL too), in place."""
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not {"enum", "const", "pattern"} & schema.keys():
        schema["pattern"] = NUL_FREE
    for keyword in ("items", "additionalProperties", "not"):
        forbid_nul(schema.get(keyword))
    for keyword in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for subschema in schema.get(keyword, ()):
            forbid_nul(subschema)
    for keyword in ("properties", "patternProperties", "$defs"):
        for subschema in schema.get(keyword, {}).values():
            forbid_nul(subschema)
