"""Wire models of the service API, in Authlete's shapes (`Service`, `Scope`, `Pair`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from app.kit.durations import MAX_DURATION_SECONDS
from app.services import keys
from app.services.models import ServiceRow
from app.services.service import ScopeSpec, ServiceSpec
from app.wire import MAX_ITEMS, Envelope, PageEnvelope, WireInt, WireRequest, WireResponse


class PairIn(WireRequest):
    key: str | None = None
    value: str | None = None


# A scope name is a non-empty string without spaces (RFC 6749 section 3.3), which
# `service.create` and `service.update` check (VALUE_INVALID): no character that Python's
# `str.isspace` counts as one, and no NUL.
SCOPE_NAME = (
    r"^[^\u0000\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f"
    r"\u205f\u3000]+$"
)
# Durations over 11 digits are refused (VALUE_INVALID): documented, not enforced here.
Duration = Annotated[WireInt, Field(json_schema_extra={"maximum": MAX_DURATION_SECONDS})]


class ScopeIn(WireRequest):
    name: str = Field(max_length=255, json_schema_extra={"pattern": SCOPE_NAME})
    description: str | None = None
    attributes: Annotated[list[PairIn], Field(max_length=MAX_ITEMS)] | None = None


class ServiceIn(WireRequest):
    """Authlete's `Service`; the fields tokenstore does not use are ignored."""

    service_name: str | None = Field(default=None, max_length=255)
    description: str | None = None
    supported_scopes: Annotated[list[ScopeIn], Field(max_length=MAX_ITEMS)] | None = None
    access_token_duration: Duration | None = None
    refresh_token_duration: Duration | None = None
    dpop_nonce_required: bool | None = None
    dpop_nonce_duration: Duration | None = None
    # The service's JWK set, as a JSON string (Authlete's `jwks`), with its private keys;
    # "" removes it. Checked on write (app.services.keys.check); never shown back.
    jwks: str | None = None
    introspection_signature_key_id: str | None = Field(default=None, max_length=255)

    def spec(self) -> ServiceSpec:
        return ServiceSpec(
            name=self.service_name,
            description=self.description,
            scopes=None
            if self.supported_scopes is None
            else tuple(
                ScopeSpec(
                    name=scope.name,
                    description=scope.description,
                    attributes=tuple((p.key, p.value) for p in scope.attributes or ()),
                )
                for scope in self.supported_scopes
            ),
            access_token_duration=self.access_token_duration,
            refresh_token_duration=self.refresh_token_duration,
            dpop_nonce_required=self.dpop_nonce_required,
            dpop_nonce_duration=self.dpop_nonce_duration,
            jwks=self.jwks,
            introspection_signature_key_id=self.introspection_signature_key_id,
        )


class PairOut(WireResponse):
    # Omitted when null (the routes exclude None), so neither is required.
    key: str | None = None
    value: str | None = None


class ScopeOut(WireResponse):
    name: str
    description: str | None = None
    attributes: list[PairOut]


class ServiceOut(WireResponse):
    api_key: int
    api_secret: str | None = None
    service_name: str | None = None
    description: str | None = None
    supported_scopes: list[ScopeOut]
    access_token_duration: int
    refresh_token_duration: int
    dpop_nonce_required: bool
    dpop_nonce_duration: int  # 0: not set (nonces then live 300 s)
    # The public keys of the service's JWK set only (app.services.keys.public_text).
    jwks: str | None = None
    introspection_signature_key_id: str | None = None
    created_at: int
    modified_at: int

    @classmethod
    def of(cls, row: ServiceRow, *, api_secret: str | None = None) -> ServiceOut:
        return cls(
            api_key=row.api_key,
            api_secret=api_secret,
            service_name=row.name,
            description=row.description,
            supported_scopes=[
                ScopeOut(
                    name=scope.name,
                    description=scope.description,
                    attributes=[PairOut(key=a["key"], value=a["value"]) for a in scope.attributes],
                )
                for scope in row.scopes
            ],
            access_token_duration=row.access_token_duration,
            refresh_token_duration=row.refresh_token_duration,
            dpop_nonce_required=bool(row.dpop_nonce_required),
            dpop_nonce_duration=row.dpop_nonce_duration or 0,
            jwks=keys.public_text(row.jwks),
            introspection_signature_key_id=row.introspection_signature_key_id,
            created_at=row.created_at,
            modified_at=row.modified_at,
        )


class JwksOut(BaseModel):
    """A JWK set (RFC 7517 section 5): the service's public keys."""

    keys: list[dict[str, Any]]


class ServiceListOut(PageEnvelope):
    services: list[ServiceOut]


class AccessTokenCreateIn(WireRequest):
    description: str | None = Field(default=None, max_length=255)


class ServiceAccessTokenOut(WireResponse):
    token_id: str
    description: str | None = None
    created_at: int
    access_token: str | None = None  # the value: in the creation's answer only


class ServiceAccessTokenListOut(Envelope):
    access_tokens: list[ServiceAccessTokenOut]
