"""The token decisions, as pure functions: the rules of `/auth/token/update` (docs/api.md,
rules 1 to 11), and issuing a new token (`issue`).

Nothing here does I/O, reads a clock or draws randomness: `now` (milliseconds since the
epoch) and the candidate new token value are passed in, so every rule can be tested with a
fixed `now`. The service loads the token under a lock, calls `apply_update`, and writes
what the returned `Decision` says.

Every check runs before anything is decided, so an invalid field rejects the whole request
and changes nothing (docs/api.md, "The update rules").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from app.errors import BadRequestAction
from app.kit.durations import (
    MAX_TIMESTAMP_MS,
    duration_or,
    expiry_after,
    is_expired,
    parse_duration,
)
from app.kit.hashing import is_sha256_b64url, token_hash

# The scope attributes that carry durations (docs/api.md, "Data model": a decimal string of
# seconds; any other value is ignored).
ACCESS_DURATION_ATTRIBUTE = "access_token.duration"
REFRESH_DURATION_ATTRIBUTE = "refresh_token.duration"

# How deep `otherFields` may nest (RFC 9396 details are a few levels deep). Deeper JSON is
# refused before anything walks it: CPython's parser gives up near 1,000 levels anyway.
MAX_OTHER_FIELDS_DEPTH = 32


class Lookup(Enum):
    """How the request names its token (rule 1), in order of precedence."""

    VALUE = "accessToken"
    HASH = "accessTokenHash"
    REFRESH_VALUE = "refreshToken"
    REFRESH_HASH = "refreshTokenHash"
    TOKEN_ID = "tokenId"  # noqa: S105 - a field name

    @property
    def by_refresh_token(self) -> bool:
        return self in (Lookup.REFRESH_VALUE, Lookup.REFRESH_HASH)

    @property
    def by_value(self) -> bool:
        """The text is a token value, to hash before lookup (not a hash, not an id)."""
        return self in (Lookup.VALUE, Lookup.REFRESH_VALUE)


@dataclass(frozen=True, slots=True)
class Identifier:
    kind: Lookup
    text: str


@dataclass(frozen=True, slots=True)
class Property:
    key: str
    value: str
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class PropertyInput:
    """A property as the caller sent it, before validation."""

    key: str | None
    value: str | None
    hidden: bool | None = None


@dataclass(frozen=True, slots=True)
class AuthzElement:
    """One RFC 9396 authorization details element, in Authlete's wire form: the standard
    members, and the others as a JSON string in `other_fields`."""

    type: str
    locations: tuple[str, ...] | None = None
    actions: tuple[str, ...] | None = None
    data_types: tuple[str, ...] | None = None
    identifier: str | None = None
    privileges: tuple[str, ...] | None = None
    other_fields: str | None = None


def element_document(element: AuthzElement) -> dict[str, Any]:
    """An authorization details element in Authlete's wire form, without absent members."""
    document = {
        "type": element.type,
        "locations": element.locations,
        "actions": element.actions,
        "dataTypes": element.data_types,
        "identifier": element.identifier,
        "privileges": element.privileges,
        "otherFields": element.other_fields,
    }
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in document.items()
        if value is not None
    }


def element_from(document: Mapping[str, Any]) -> AuthzElement:
    """The element of its wire (and stored) document."""

    def strings(key: str) -> tuple[str, ...] | None:
        value = document.get(key)
        return None if value is None else tuple(value)

    return AuthzElement(
        type=document["type"],
        locations=strings("locations"),
        actions=strings("actions"),
        data_types=strings("dataTypes"),
        identifier=document.get("identifier"),
        privileges=strings("privileges"),
        other_fields=document.get("otherFields"),
    )


@dataclass(frozen=True, slots=True)
class AuthzElementInput:
    type: str | None
    locations: tuple[str, ...] | None = None
    actions: tuple[str, ...] | None = None
    data_types: tuple[str, ...] | None = None
    identifier: str | None = None
    privileges: tuple[str, ...] | None = None
    other_fields: str | None = None


@dataclass(frozen=True, slots=True)
class TokenState:
    """What the rules read and write of one stored token."""

    access_hash: str
    scopes: tuple[str, ...]
    access_expires_at: int
    persistent: bool
    refresh_expires_at: int | None  # None: the token has no refresh token
    properties: tuple[Property, ...] = ()
    authorization_details: tuple[AuthzElement, ...] | None = None
    certificate_thumbprint: str | None = None
    dpop_key_thumbprint: str | None = None
    for_external_attachment: bool = False
    # Fields below are kept in the row's `attributes` document (app.tokens.models): a new
    # one needs a default here, and is a JSON scalar or a tuple of them.
    resources: tuple[str, ...] = ()  # RFC 8707 resource indicators
    acr: str | None = None  # of the user authentication that led to the token
    auth_time: int = 0  # when that authentication happened, seconds since 1970 (0: unknown)
    session_id: str | None = None

    @property
    def has_refresh_token(self) -> bool:
        return self.refresh_expires_at is not None

    @property
    def token_type(self) -> str:
        # RFC 9449 section 7.1: a DPoP-bound access token has the token type "DPoP".
        return "DPoP" if self.dpop_key_thumbprint else "Bearer"


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """The update request as the rules see it. `None` always means "not given"."""

    access_token_expires_at: int | None = None
    refresh_token_expires_at: int | None = None
    access_token_persistent: bool | None = None
    scopes: tuple[str, ...] | None = None
    access_expiry_on_scope_update: bool = False
    refresh_expiry_on_scope_update: bool = False
    properties: tuple[PropertyInput, ...] | None = None
    authorization_details: tuple[AuthzElementInput, ...] | None = None
    certificate_thumbprint: str | None = None
    dpop_key_thumbprint: str | None = None
    for_external_attachment: bool | None = None
    value_updated: bool = False


@dataclass(frozen=True, slots=True)
class ScopeDurations:
    access_seconds: int | None = None
    refresh_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class ScopePolicy:
    """What scopes a token of one client may carry: those the service supports (with the
    durations their attributes give) and, when the client restricts them, only those the
    client may request."""

    supported: Mapping[str, ScopeDurations]
    requestable: frozenset[str] | None = None  # None: the client does not restrict scopes


@dataclass(frozen=True, slots=True)
class Decision:
    state: TokenState
    new_value: str | None  # the regenerated token value, when rule 11 applied


# --- Rule 1: which token ------------------------------------------------------------------


def choose_identifier(
    *,
    access_token: str | None,
    access_token_hash: str | None,
    token_id: str | None,
    refresh_token: str | None = None,
    refresh_token_hash: str | None = None,
) -> Identifier:
    """The first non-empty one of `accessToken`, `accessTokenHash`, `refreshToken`,
    `refreshTokenHash` and `tokenId`. An empty string counts as absent: a form field left
    blank names nothing."""
    if access_token:
        return Identifier(Lookup.VALUE, access_token)
    if access_token_hash:
        _check_hash("accessTokenHash", access_token_hash)
        return Identifier(Lookup.HASH, access_token_hash)
    if refresh_token:
        return Identifier(Lookup.REFRESH_VALUE, refresh_token)
    if refresh_token_hash:
        _check_hash("refreshTokenHash", refresh_token_hash)
        return Identifier(Lookup.REFRESH_HASH, refresh_token_hash)
    if token_id:
        return Identifier(Lookup.TOKEN_ID, token_id)
    raise BadRequestAction(
        "Name the token with accessToken, accessTokenHash, refreshToken, refreshTokenHash "
        "or tokenId."
    )


def _check_hash(name: str, text: str) -> None:
    # A hash that no SHA-256 digest can have names no token: a bad request, not NOT_FOUND.
    if not is_sha256_b64url(text):
        raise BadRequestAction(
            f"{name} must be base64url(SHA-256(token)) without padding (43 characters)."
        )


class TokenStatus(Enum):
    """Which tokens a list shows (Authlete's `TokenStatus`, java-common 3.96)."""

    VALID = "VALID"  # alive: `is_alive`
    INVALID = "INVALID"  # access and refresh tokens both expired, not yet purged
    ALL = "ALL"


def is_alive(state: TokenState, now: int) -> bool:
    """A token can be found unless its access token and its refresh token have both expired
    (a token without a refresh token counts as having an expired one)."""
    access_alive = state.persistent or not is_expired(state.access_expires_at, now)
    refresh_alive = state.refresh_expires_at is not None and not is_expired(
        state.refresh_expires_at, now
    )
    return access_alive or refresh_alive


# --- Scopes (rules 4 and 5) ---------------------------------------------------------------


def scope_durations(attributes: Iterable[tuple[str | None, str | None]]) -> ScopeDurations:
    """The durations a scope's attributes give; a later valid attribute overrides."""
    access: int | None = None
    refresh: int | None = None
    for key, value in attributes:
        seconds = parse_duration(value)
        if seconds is None:
            continue
        if key == ACCESS_DURATION_ATTRIBUTE:
            access = seconds
        elif key == REFRESH_DURATION_ATTRIBUTE:
            refresh = seconds
    return ScopeDurations(access, refresh)


def filter_scopes(requested: Sequence[str], policy: ScopePolicy) -> tuple[str, ...]:
    """The given scopes, in order, without duplicates, keeping only those the service
    supports and, when the client restricts them, that the client may request."""
    kept: dict[str, None] = {}
    for scope in requested:
        if scope not in policy.supported:
            continue
        if policy.requestable is not None and scope not in policy.requestable:
            continue
        kept.setdefault(scope)
    return tuple(kept)


@dataclass(frozen=True, slots=True)
class GrantedScopes:
    """What a subject granted a client, as its live tokens tell (docs/decisions.md)."""

    latest: tuple[str, ...] | None  # the newest token's scopes; None: no live token
    merged: tuple[str, ...] | None  # every scope of any live token, in order of appearance
    modified_at: int  # the last change of any of those tokens (ms), 0 without one


def granted_scopes(tokens: Sequence[tuple[Sequence[str], int]]) -> GrantedScopes:
    """From the live tokens' (scopes, updated_at), oldest token first."""
    if not tokens:
        return GrantedScopes(None, None, 0)
    merged: dict[str, None] = {}
    for scopes, _ in tokens:
        merged.update(dict.fromkeys(scopes))
    return GrantedScopes(
        latest=tuple(tokens[-1][0]),
        merged=tuple(merged),
        modified_at=max(updated_at for _, updated_at in tokens),
    )


def smallest_duration(scopes: Iterable[str], policy: ScopePolicy, *, refresh: bool) -> int | None:
    """The smallest duration among the scopes' attributes, or None when none has one."""
    found = [
        seconds
        for scope in scopes
        if (durations := policy.supported.get(scope)) is not None
        and (seconds := durations.refresh_seconds if refresh else durations.access_seconds)
        is not None
    ]
    return min(found, default=None)


# --- Validation of every field, before anything is decided --------------------------------


def _check_timestamp(name: str, value: int | None) -> None:
    if value is not None and value > MAX_TIMESTAMP_MS:
        raise BadRequestAction(f"{name} is after the year 9999; send milliseconds since 1970.")


def check_thumbprint(name: str, value: str | None) -> None:
    # Rule 9: a 43-character base64url SHA-256 thumbprint binds, "" unbinds.
    if value is None or value == "" or is_sha256_b64url(value):
        return
    raise BadRequestAction(
        f"{name} must be a base64url SHA-256 thumbprint (43 characters), "
        "or an empty string to remove the binding."
    )


def validate_properties(properties: Sequence[PropertyInput]) -> tuple[Property, ...]:
    """Rule 7: keys present and unique, values strings, `hidden` a boolean (null: false)."""
    seen: set[str] = set()
    valid: list[Property] = []
    for index, prop in enumerate(properties):
        if not prop.key:
            raise BadRequestAction(f"properties[{index}] has no key.")
        if prop.key in seen:
            raise BadRequestAction(f"properties[{index}] repeats the key {prop.key!r}.")
        if prop.value is None:
            raise BadRequestAction(f"properties[{index}] ({prop.key!r}) has no value.")
        seen.add(prop.key)
        valid.append(Property(prop.key, prop.value, bool(prop.hidden)))
    return tuple(valid)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _is_json_object(text: str) -> bool:
    """Strict JSON (RFC 8259: no NaN, no Infinity) holding an object, at most
    `MAX_OTHER_FIELDS_DEPTH` levels deep."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and json_depth(value) <= MAX_OTHER_FIELDS_DEPTH


def json_depth(value: object) -> int:
    """How deep containers nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def validate_authorization_details(
    elements: Sequence[AuthzElementInput],
) -> tuple[AuthzElement, ...]:
    """Rule 8: every element has a non-empty `type` (RFC 9396 section 2), and
    `otherFields`, when given, is a JSON object holding the non-standard members."""
    valid: list[AuthzElement] = []
    for index, element in enumerate(elements):
        if not element.type:
            raise BadRequestAction(f"authorizationDetails.elements[{index}] has no type.")
        if element.other_fields is not None and not _is_json_object(element.other_fields):
            raise BadRequestAction(
                f"authorizationDetails.elements[{index}].otherFields must be a JSON object "
                f"written as a string, nested {MAX_OTHER_FIELDS_DEPTH} levels at the most, "
                "without NaN or Infinity."
            )
        valid.append(
            AuthzElement(
                type=element.type,
                locations=element.locations,
                actions=element.actions,
                data_types=element.data_types,
                identifier=element.identifier,
                privileges=element.privileges,
                other_fields=element.other_fields,
            )
        )
    return tuple(valid)


# --- The update ---------------------------------------------------------------------------


def apply_update(
    token: TokenState,
    request: UpdateRequest,
    policy: ScopePolicy,
    *,
    now: int,
    new_value: str,
) -> Decision:
    """Apply rules 2 to 11 to a token that rule 1 found alive. `new_value` is a freshly
    generated value, used only when the request asks for regeneration (rule 11)."""
    properties, details = _validated(request)
    state = _expiry_and_scopes(token, request, policy, now=now)
    if properties is not None:  # rule 7
        state = replace(state, properties=properties)
    if details is not None:  # rule 8
        state = replace(state, authorization_details=details)
    if request.certificate_thumbprint is not None:  # rule 9
        state = replace(state, certificate_thumbprint=request.certificate_thumbprint or None)
    if request.dpop_key_thumbprint is not None:
        state = replace(state, dpop_key_thumbprint=request.dpop_key_thumbprint or None)
    if request.for_external_attachment is not None:  # rule 10
        state = replace(state, for_external_attachment=request.for_external_attachment)
    if request.value_updated:  # rule 11
        return Decision(replace(state, access_hash=token_hash(new_value)), new_value)
    return Decision(state, None)


def _validated(
    request: UpdateRequest,
) -> tuple[tuple[Property, ...] | None, tuple[AuthzElement, ...] | None]:
    """Every check of the request, before anything is decided."""
    _check_timestamp("accessTokenExpiresAt", request.access_token_expires_at)
    _check_timestamp("refreshTokenExpiresAt", request.refresh_token_expires_at)
    check_thumbprint("certificateThumbprint", request.certificate_thumbprint)
    check_thumbprint("dpopKeyThumbprint", request.dpop_key_thumbprint)
    properties = None if request.properties is None else validate_properties(request.properties)
    details = (
        None
        if request.authorization_details is None
        else validate_authorization_details(request.authorization_details)
    )
    return properties, details


def _expiry_and_scopes(
    token: TokenState, request: UpdateRequest, policy: ScopePolicy, *, now: int
) -> TokenState:
    """Rules 2 to 6."""
    explicit_access = _positive(request.access_token_expires_at)
    explicit_refresh = _positive(request.refresh_token_expires_at)

    # Rules 2 and 3: persistence wins over an explicit expiry; a positive explicit expiry
    # (even one in the past) makes a persistent token expiring again.
    persistent = token.persistent
    access_expires_at = token.access_expires_at
    if request.access_token_persistent:
        persistent = True
    elif explicit_access is not None:
        persistent = False
        access_expires_at = explicit_access

    # Rule 4: a new scope set, filtered by the service and the client.
    scopes = token.scopes
    if request.scopes is not None:
        scopes = filter_scopes(request.scopes, policy)
        # Rule 5: durations from the new scopes' attributes, smallest wins. Read literally,
        # "does the same" keeps every condition for the refresh token too, including
        # "token not persistent"; README.md records that reading.
        if not persistent:
            if request.access_expiry_on_scope_update and explicit_access is None:
                seconds = smallest_duration(scopes, policy, refresh=False)
                if seconds is not None:
                    access_expires_at = expiry_after(now, seconds)
            if request.refresh_expiry_on_scope_update and explicit_refresh is None:
                seconds = smallest_duration(scopes, policy, refresh=True)
                if seconds is not None:
                    explicit_refresh = expiry_after(now, seconds)

    # Rule 6: the refresh token's expiry, only where there is a refresh token.
    refresh_expires_at = token.refresh_expires_at
    if token.has_refresh_token and explicit_refresh is not None:
        refresh_expires_at = explicit_refresh

    return replace(
        token,
        scopes=scopes,
        access_expires_at=access_expires_at,
        persistent=persistent,
        refresh_expires_at=refresh_expires_at,
    )


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


# --- Issuing (`/auth/token/create`) --------------------------------------------------------

# Grant types after which Authlete issues no refresh token (RFC 6749 sections 4.2.2, 4.4.3).
NO_REFRESH_GRANTS = frozenset({"CLIENT_CREDENTIALS", "IMPLICIT"})
MAX_VALUE_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """A token creation as the rules see it (Authlete's `TokenCreateRequest`)."""

    grant_type: str | None
    client_id: int | None
    subject: str | None
    scopes: tuple[str, ...] = ()
    access_token_duration: int | None = None
    refresh_token_duration: int | None = None
    properties: tuple[PropertyInput, ...] = ()
    access_token: str | None = None  # a value the caller chose, else a new one
    refresh_token: str | None = None
    access_token_persistent: bool = False
    certificate_thumbprint: str | None = None
    dpop_key_thumbprint: str | None = None
    authorization_details: tuple[AuthzElementInput, ...] | None = None
    for_external_attachment: bool = False
    resources: tuple[str, ...] = ()
    acr: str | None = None
    auth_time: int = 0
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Issued:
    state: TokenState
    access_value: str
    refresh_value: str | None  # None: the grant type gets no refresh token
    refresh_hash: str | None
    expires_in: int  # seconds


def check_issue_request(request: IssueRequest) -> None:
    """What can be refused before anything is read: every field's form."""
    if not request.grant_type:
        raise BadRequestAction("grantType is required.")
    if request.subject is None and request.grant_type != "CLIENT_CREDENTIALS":
        raise BadRequestAction("subject is required unless grantType is CLIENT_CREDENTIALS.")
    if not request.client_id:
        raise BadRequestAction("clientId is required.")
    for name, value in (("accessToken", request.access_token),
                        ("refreshToken", request.refresh_token)):  # fmt: skip
        if value is not None and (len(value) > MAX_VALUE_LENGTH or not value.isprintable()):
            raise BadRequestAction(f"{name} must be printable and at most {MAX_VALUE_LENGTH} long.")
    check_thumbprint("certificateThumbprint", request.certificate_thumbprint)
    check_thumbprint("dpopKeyThumbprint", request.dpop_key_thumbprint)


def issue(
    request: IssueRequest,
    policy: ScopePolicy,
    *,
    access_seconds: int,
    refresh_seconds: int,
    now: int,
    new_values: tuple[str, str],
) -> Issued:
    """The state of a new token. `access_seconds` and `refresh_seconds` are the defaults
    (the service's); `new_values` are two fresh token values, used where the caller chose
    none."""
    check_issue_request(request)
    properties = validate_properties(request.properties)
    details = (
        None
        if request.authorization_details is None
        else validate_authorization_details(request.authorization_details)
    )
    access_seconds = duration_or(request.access_token_duration, access_seconds)
    refresh_seconds = duration_or(request.refresh_token_duration, refresh_seconds)
    access_value = request.access_token or new_values[0]
    refresh_value = None
    if request.grant_type not in NO_REFRESH_GRANTS:
        refresh_value = request.refresh_token or new_values[1]
    state = TokenState(
        access_hash=token_hash(access_value),
        scopes=filter_scopes(request.scopes, policy),
        access_expires_at=expiry_after(now, access_seconds),
        persistent=request.access_token_persistent,
        refresh_expires_at=None if refresh_value is None else expiry_after(now, refresh_seconds),
        properties=properties,
        authorization_details=details,
        certificate_thumbprint=request.certificate_thumbprint or None,
        dpop_key_thumbprint=request.dpop_key_thumbprint or None,
        for_external_attachment=request.for_external_attachment,
        resources=request.resources,
        acr=request.acr or None,
        auth_time=max(request.auth_time, 0),
        session_id=request.session_id or None,
    )
    refresh_hash = None if refresh_value is None else token_hash(refresh_value)
    return Issued(state, access_value, refresh_value, refresh_hash, access_seconds)


def response_expires_at(state: TokenState) -> int:
    """docs/api.md: `accessTokenExpiresAt` is 0 for a persistent token."""
    return 0 if state.persistent else state.access_expires_at
