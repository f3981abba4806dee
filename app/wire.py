"""Shared pieces of the wire format: camelCase models and the result envelope.

Request models are strict about JSON types (a string where a number belongs is not a
well-formed call: HTTP 400) and ignore unknown fields, because Authlete's DTOs carry many
fields tokenstore does not use.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# Integers travel as 64-bit numbers at the most; lists are bounded so that one request
# cannot ask for more bind parameters than a database accepts.
MAX_ID = 2**63 - 1
WireInt = Annotated[int, Field(ge=-(2**63), le=MAX_ID)]
WireId = Annotated[int, Field(ge=0, le=MAX_ID)]
MAX_ITEMS = 1000


# NUL and lone surrogates: PostgreSQL cannot store them, and no client means them.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(text: str) -> bool:
    return _UNSTORABLE.search(text) is not None


def _check_text(value: Any, where: str) -> None:
    if isinstance(value, str):
        if unstorable(value):
            raise ValueError(f"{where or 'a value'} holds a NUL character or a lone surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_text(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, f"{where}[{index}]")


class WireRequest(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="ignore",
        strict=True,
        frozen=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        _check_text(data, "")
        return data


class WireResponse(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )


class Envelope(WireResponse):
    result_code: str
    result_message: str


class PageEnvelope(Envelope):
    """A page of a list (Authlete's `start`, `end` and `totalCount`)."""

    start: int
    end: int
    total_count: int


class ActionEnvelope(Envelope):
    action: str
