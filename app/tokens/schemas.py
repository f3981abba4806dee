"""Wire models of the token API, in Authlete's shapes and field names."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from app.errors import MalformedRequest
from app.kit.durations import MAX_DURATION_SECONDS, MAX_TIMESTAMP_MS
from app.tokens import jwt_introspection
from app.tokens.introspection import Introspection, IntrospectionCommand, StandardCommand
from app.tokens.jwt_introspection import JwtAsk
from app.tokens.rules import (
    MAX_VALUE_LENGTH,
    AuthzElement,
    AuthzElementInput,
    IssueRequest,
    PropertyInput,
    TokenState,
    UpdateRequest,
    element_document,
    response_expires_at,
)
from app.wire import (
    MAX_ITEMS,
    ActionEnvelope,
    Envelope,
    PageEnvelope,
    WireId,
    WireInt,
    WireRequest,
    WireResponse,
)

Strings = Annotated[list[str], Field(max_length=MAX_ITEMS)]

# Constraints that the rules check once the body is parsed, answering with action
# BAD_REQUEST (docs/api.md): the schema documents them; the models do not enforce them, or a
# value out of bounds would be HTTP 400 instead.
Timestamp = Annotated[WireInt, Field(json_schema_extra={"maximum": MAX_TIMESTAMP_MS})]
Duration = Annotated[WireInt, Field(json_schema_extra={"maximum": MAX_DURATION_SECONDS})]
TokenValue = Annotated[str, Field(json_schema_extra={"maxLength": MAX_VALUE_LENGTH})]
# A canonical base64url SHA-256 digest (`hashing.is_sha256_b64url`), or "" (rule 9: no
# binding; rule 1: not given).
Sha256 = Annotated[
    str, Field(json_schema_extra={"pattern": "^([A-Za-z0-9_-]{42}[AEIMQUYcgkosw048])?$"})
]
Named = Annotated[str, Field(json_schema_extra={"minLength": 1})]  # a key, a type
# An absolute URI (RFC 8707 section 2: a resource indicator), at most 2,048 characters.
Uri = Annotated[str, Field(max_length=2048, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")]
# An ACR value as it can travel in RFC 9470's space-separated, quoted `acr_values`: visible
# ASCII without the double quote and the backslash.
AcrValue = Annotated[str, Field(max_length=255, pattern=r"^[!#-\[\]-~]+$")]


class GrantType(StrEnum):
    """Authlete's `GrantType` names, as they travel on the wire."""

    AUTHORIZATION_CODE = "AUTHORIZATION_CODE"
    IMPLICIT = "IMPLICIT"
    PASSWORD = "PASSWORD"  # noqa: S105 - a grant type, not a password
    CLIENT_CREDENTIALS = "CLIENT_CREDENTIALS"
    REFRESH_TOKEN = "REFRESH_TOKEN"  # noqa: S105
    CIBA = "CIBA"
    DEVICE_CODE = "DEVICE_CODE"
    TOKEN_EXCHANGE = "TOKEN_EXCHANGE"  # noqa: S105
    JWT_BEARER = "JWT_BEARER"
    PRE_AUTHORIZED_CODE = "PRE_AUTHORIZED_CODE"


class PropertyIO(WireRequest):
    key: Named | None = None
    value: str | None = None
    hidden: bool | None = None

    def input(self) -> PropertyInput:
        return PropertyInput(self.key, self.value, self.hidden)


class AuthzElementIO(WireRequest):
    type: Named | None = None
    locations: Strings | None = None
    actions: Strings | None = None
    data_types: Strings | None = None
    identifier: str | None = None
    privileges: Strings | None = None
    other_fields: str | None = None

    def input(self) -> AuthzElementInput:
        def strings(value: list[str] | None) -> tuple[str, ...] | None:
            return None if value is None else tuple(value)

        return AuthzElementInput(
            type=self.type,
            locations=strings(self.locations),
            actions=strings(self.actions),
            data_types=strings(self.data_types),
            identifier=self.identifier,
            privileges=strings(self.privileges),
            other_fields=self.other_fields,
        )


class AuthzDetailsIO(WireRequest):
    """Authlete's wire form of RFC 9396 `authorization_details`: `{"elements": [...]}`."""

    elements: Annotated[list[AuthzElementIO], Field(max_length=MAX_ITEMS)] | None = None

    def inputs(self) -> tuple[AuthzElementInput, ...]:
        return tuple(element.input() for element in self.elements or ())


# --- Update --------------------------------------------------------------------------------


class TokenUpdateIn(WireRequest):
    """Authlete's `TokenUpdateRequest`. `null` means "not given" for every field."""

    access_token: str | None = None
    access_token_hash: Sha256 | None = None
    # Not in Authlete's specs (docs/decisions.md): the token named by its refresh token.
    refresh_token: str | None = None
    refresh_token_hash: Sha256 | None = None
    token_id: str | None = None
    access_token_expires_at: Timestamp | None = None
    refresh_token_expires_at: Timestamp | None = None
    access_token_persistent: bool | None = None
    scopes: Strings | None = None
    access_token_expires_at_updated_on_scope_update: bool | None = None
    refresh_token_expires_at_updated_on_scope_update: bool | None = None
    properties: Annotated[list[PropertyIO], Field(max_length=MAX_ITEMS)] | None = None
    authorization_details: AuthzDetailsIO | None = None
    certificate_thumbprint: Sha256 | None = None
    dpop_key_thumbprint: Sha256 | None = None
    for_external_attachment: bool | None = None
    access_token_value_updated: bool | None = None

    def changes(self) -> UpdateRequest:
        return UpdateRequest(
            access_token_expires_at=self.access_token_expires_at,
            refresh_token_expires_at=self.refresh_token_expires_at,
            access_token_persistent=self.access_token_persistent,
            scopes=None if self.scopes is None else tuple(self.scopes),
            access_expiry_on_scope_update=bool(
                self.access_token_expires_at_updated_on_scope_update
            ),
            refresh_expiry_on_scope_update=bool(
                self.refresh_token_expires_at_updated_on_scope_update
            ),
            properties=None
            if self.properties is None
            else tuple(p.input() for p in self.properties),
            authorization_details=None
            if self.authorization_details is None
            else self.authorization_details.inputs(),
            certificate_thumbprint=self.certificate_thumbprint,
            dpop_key_thumbprint=self.dpop_key_thumbprint,
            for_external_attachment=self.for_external_attachment,
            value_updated=bool(self.access_token_value_updated),
        )


_FORM_BOOLEANS = {
    "accessTokenPersistent",
    "accessTokenExpiresAtUpdatedOnScopeUpdate",
    "refreshTokenExpiresAtUpdatedOnScopeUpdate",
    "forExternalAttachment",
    "accessTokenValueUpdated",
}
_FORM_INTEGERS = {"accessTokenExpiresAt", "refreshTokenExpiresAt"}
FORM_JSON_ONLY = frozenset({"properties", "authorizationDetails"})


def update_from_form(fields: dict[str, list[str]]) -> dict[str, Any]:
    """A form-encoded update as the JSON document it stands for. `scopes` may repeat and
    each value may hold several space-separated scopes (RFC 6749 section 3.3)."""
    document: dict[str, Any] = {}
    for name, values in fields.items():
        if name in FORM_JSON_ONLY:
            raise MalformedRequest(f"{name} is accepted in JSON bodies only.")
        if name == "scopes":
            document[name] = [scope for value in values for scope in value.split()]
            continue
        if len(values) > 1:
            raise MalformedRequest(f"The form field {name} is given more than once.")
        value = values[0]
        if name in _FORM_BOOLEANS:
            if value.lower() not in ("true", "false"):
                raise MalformedRequest(f"{name} must be true or false.")
            document[name] = value.lower() == "true"
        elif name in _FORM_INTEGERS:
            try:
                document[name] = int(value)
            except ValueError:
                raise MalformedRequest(f"{name} must be an integer.") from None
        else:
            document[name] = value
    return document


class PropertyOut(WireResponse):
    key: str
    value: str
    hidden: bool


class AuthzDetailsOut(WireResponse):
    elements: list[dict[str, Any]]

    @classmethod
    def of(cls, elements: tuple[AuthzElement, ...] | None) -> AuthzDetailsOut | None:
        if elements is None:
            return None
        return cls(elements=[element_document(e) for e in elements])


def properties_out(state: TokenState) -> list[PropertyOut]:
    return [PropertyOut(key=p.key, value=p.value, hidden=p.hidden) for p in state.properties]


def state_fields(state: TokenState) -> dict[str, Any]:
    """The token's state in the wire fields the update, create and list answers share."""
    return {
        "access_token_hash": state.access_hash,
        "token_type": state.token_type,
        "access_token_persistent": state.persistent,
        "refresh_token_expires_at": state.refresh_expires_at or 0,
        "scopes": list(state.scopes),
        "properties": properties_out(state),
        "authorization_details": AuthzDetailsOut.of(state.authorization_details),
        "certificate_thumbprint": state.certificate_thumbprint,
        "dpop_key_thumbprint": state.dpop_key_thumbprint,
        "for_external_attachment": state.for_external_attachment,
    }


class TokenStateOut(ActionEnvelope):
    """The fields `state_fields()` fills, shared by the update and create answers."""

    access_token: str | None = None  # the value: shown only when the caller may see it
    access_token_hash: str | None = None
    token_type: str | None = None
    access_token_persistent: bool | None = None
    refresh_token_expires_at: int | None = None
    scopes: list[str] | None = None
    properties: list[PropertyOut] | None = None
    authorization_details: AuthzDetailsOut | None = None
    certificate_thumbprint: str | None = None
    dpop_key_thumbprint: str | None = None
    for_external_attachment: bool | None = None
    token_id: str | None = None


class TokenUpdateOut(TokenStateOut):
    access_token_expires_at: int | None = None

    @classmethod
    def of(cls, state: TokenState, *, token_id: str, shown_value: str | None) -> TokenUpdateOut:
        return cls(
            action="OK",
            result_code="TOKEN_UPDATED",
            result_message="The token was updated.",
            access_token=shown_value,
            access_token_expires_at=response_expires_at(state),
            token_id=token_id,
            **state_fields(state),
        )


# --- Create --------------------------------------------------------------------------------


class TokenCreateIn(WireRequest):
    """Authlete's `TokenCreateRequest`."""

    grant_type: GrantType | None = None
    client_id: WireId | None = None
    subject: Annotated[str, Field(max_length=255)] | None = None
    scopes: Strings | None = None
    access_token_duration: Duration | None = None
    refresh_token_duration: Duration | None = None
    properties: Annotated[list[PropertyIO], Field(max_length=MAX_ITEMS)] | None = None
    access_token: TokenValue | None = None
    refresh_token: TokenValue | None = None
    access_token_persistent: bool | None = None
    certificate_thumbprint: Sha256 | None = None
    dpop_key_thumbprint: Sha256 | None = None
    authorization_details: AuthzDetailsIO | None = None
    for_external_attachment: bool | None = None
    resources: Annotated[list[Uri], Field(max_length=MAX_ITEMS)] | None = None
    acr: Annotated[str, Field(max_length=255)] | None = None
    auth_time: Annotated[int, Field(ge=0, le=MAX_TIMESTAMP_MS // 1000)] | None = None
    session_id: Annotated[str, Field(max_length=255)] | None = None

    def request(self) -> IssueRequest:
        return IssueRequest(
            grant_type=self.grant_type.value if self.grant_type else None,
            client_id=self.client_id,
            subject=self.subject,
            scopes=tuple(self.scopes or ()),
            access_token_duration=self.access_token_duration,
            refresh_token_duration=self.refresh_token_duration,
            properties=tuple(p.input() for p in self.properties or ()),
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            access_token_persistent=bool(self.access_token_persistent),
            certificate_thumbprint=self.certificate_thumbprint,
            dpop_key_thumbprint=self.dpop_key_thumbprint,
            authorization_details=None
            if self.authorization_details is None
            else self.authorization_details.inputs(),
            for_external_attachment=bool(self.for_external_attachment),
            resources=tuple(self.resources or ()),
            acr=self.acr,
            auth_time=self.auth_time or 0,
            session_id=self.session_id,
        )


class TokenCreateOut(TokenStateOut):
    grant_type: GrantType | None = None
    client_id: int | None = None
    subject: str | None = None
    expires_in: int | None = None
    expires_at: int | None = None
    refresh_token: str | None = None


# --- List ----------------------------------------------------------------------------------


class AccessTokenOut(WireResponse):
    """Authlete's `AccessToken` as listed: hashes, never values."""

    access_token_hash: str
    refresh_token_hash: str | None = None
    token_id: str
    client_id: int
    subject: str | None = None
    grant_type: GrantType | None = None
    scopes: list[str]
    token_type: str
    access_token_expires_at: int
    access_token_persistent: bool
    refresh_token_expires_at: int
    created_at: int
    last_refreshed_at: int
    properties: list[PropertyOut]
    authorization_details: AuthzDetailsOut | None = None
    certificate_thumbprint: str | None = None
    dpop_key_thumbprint: str | None = None
    for_external_attachment: bool


class TokenListOut(PageEnvelope):
    client: dict[str, Any] | None = None
    subject: str | None = None
    access_tokens: list[AccessTokenOut] | None = None  # None: `end - start <= 0`


# --- Introspection -------------------------------------------------------------------------


class IntrospectionIn(WireRequest):
    """Authlete's `IntrospectionRequest` (the fields tokenstore uses)."""

    token: str | None = None
    scopes: Strings | None = None
    subject: str | None = None
    client_certificate: str | None = None
    dpop: str | None = None
    htm: str | None = None
    htu: str | None = None
    resources: Annotated[list[Uri], Field(max_length=MAX_ITEMS)] | None = None
    acr_values: Annotated[list[AcrValue], Field(max_length=MAX_ITEMS)] | None = None
    max_age: WireInt | None = None  # seconds; 0 or less: no check
    dpop_nonce_required: bool | None = None

    def command(self) -> IntrospectionCommand:
        def strings(value: list[str] | None) -> tuple[str, ...] | None:
            return None if value is None else tuple(value)

        return IntrospectionCommand(
            token=self.token,
            scopes=strings(self.scopes),
            subject=self.subject,
            client_certificate=self.client_certificate,
            dpop=self.dpop,
            htm=self.htm,
            htu=self.htu,
            resources=strings(self.resources),
            acr_values=strings(self.acr_values),
            max_age=self.max_age,
            dpop_nonce_required=bool(self.dpop_nonce_required),
        )


class IntrospectionOut(ActionEnvelope):
    response_content: str | None = None
    client_id: int | None = None
    client_id_alias: str | None = None
    client_id_alias_used: bool | None = None
    subject: str | None = None
    scopes: list[str] | None = None
    existent: bool
    usable: bool
    sufficient: bool
    refreshable: bool
    expires_at: int | None = None
    properties: list[PropertyOut] | None = None
    certificate_thumbprint: str | None = None
    authorization_details: AuthzDetailsOut | None = None
    for_external_attachment: bool | None = None
    grant_type: GrantType | None = None
    resources: list[str] | None = None
    access_token_resources: list[str] | None = None
    acr: str | None = None
    auth_time: int | None = None
    dpop_nonce: str | None = None

    @classmethod
    def of(cls, result: Introspection) -> IntrospectionOut:
        out = cls(
            action=result.action,
            result_code=result.result_code,
            result_message=result.message,
            response_content=result.response_content,
            existent=result.token is not None,
            usable=result.usable,
            sufficient=result.sufficient,
            refreshable=result.refreshable,
            dpop_nonce=result.dpop_nonce,
        )
        token = result.token
        if token is None:
            return out
        state = token.state
        return out.model_copy(
            update={
                "client_id": token.client_id,
                "client_id_alias": token.client_id_alias,
                "client_id_alias_used": False,
                "subject": token.subject,
                "scopes": list(state.scopes),
                "expires_at": response_expires_at(state),
                # Hidden properties are for the authorization server only.
                "properties": [p for p in properties_out(state) if not p.hidden],
                "certificate_thumbprint": state.certificate_thumbprint,
                "authorization_details": AuthzDetailsOut.of(state.authorization_details),
                "for_external_attachment": state.for_external_attachment,
                "grant_type": GrantType(token.grant_type) if token.grant_type else None,
                # One set of resources per token: the token's (RFC 8707), as both.
                "resources": list(state.resources),
                "access_token_resources": list(state.resources),
                "acr": state.acr,
                "auth_time": state.auth_time,
            }
        )


class StandardIntrospectionIn(WireRequest):
    """Authlete's `StandardIntrospectionRequest`: RFC 7662 parameters as a form string, and
    what the resource server wants of the answer (a JWT, RFC 9701). The shared and public
    keys of Authlete's request are ignored: HMAC signatures and encryption are refused."""

    parameters: str | None = None
    with_hidden_properties: bool | None = None
    rs_uri: str | None = Field(default=None, max_length=2048)
    http_accept_header: str | None = Field(default=None, max_length=4096)
    introspection_sign_alg: str | None = Field(default=None, max_length=64)
    introspection_encryption_alg: str | None = Field(default=None, max_length=64)

    def command(self) -> StandardCommand:
        jwt = None
        if jwt_introspection.wanted(self.http_accept_header):
            jwt = JwtAsk(
                rs_uri=self.rs_uri,
                sign_alg=self.introspection_sign_alg,
                encryption_alg=self.introspection_encryption_alg,
            )
        return StandardCommand(
            parameters=self.parameters,
            with_hidden_properties=bool(self.with_hidden_properties),
            rs_uri=self.rs_uri,
            jwt=jwt,
        )


class StandardIntrospectionOut(ActionEnvelope):
    """`responseContent`: the RFC 7662 JSON (action OK), the signed JWT of RFC 9701
    (action JWT), or an error object (BAD_REQUEST, INTERNAL_SERVER_ERROR)."""

    response_content: str


# --- Revoke --------------------------------------------------------------------------------


def _given(name: str, **string: Any) -> dict[str, Any]:
    """JSON Schema: the body holds `name`, a string (with the constraints given)."""
    return {"required": [name], "properties": {name: {"type": "string", **string}}}


class TokenRevokeIn(WireRequest):
    # What `service.revoke` needs, else HTTP 400: a non-empty access or refresh token
    # identifier or client identifier, or a subject.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                _given("accessTokenIdentifier", minLength=1),
                _given("refreshTokenIdentifier", minLength=1),
                _given("clientIdentifier", minLength=1),
                _given("subject"),
            ]
        }
    )

    access_token_identifier: str | None = None
    refresh_token_identifier: str | None = None
    client_identifier: str | None = None
    subject: str | None = None


class TokenRevokeOut(Envelope):
    count: int
