"""Shared pieces of the wire format: camelCase models and the result envelope.

Request models are strict about JSON types (a string where a number belongs is not a
well-formed call: HTTP 400) and ignore unknown fields, because Authlete's DTOs carry many
fields tokenstore does not use.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireRequest(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="ignore",
        strict=True,
        frozen=True,
    )


class WireResponse(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )


class Envelope(WireResponse):
    result_code: str
    result_message: str


class ActionEnvelope(Envelope):
    action: str
