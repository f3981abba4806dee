"""What a token change records, decided pure: the event's fields and its changes.

Imports only the standard library and the token rules' own value types. The shell passes
in the clock (`now`) and the random part of the event's id, as the update rules take theirs.

An event never holds a token value, a hash, a secret or a hidden property's value
(docs/events.md): a new access token is recorded as `accessToken` changing from one
redacted value to another, a hidden property's value as `"<hidden>"`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.tokens.rules import TokenState, element_document

SPEC_VERSION = "1.0"
TYPE_PREFIX = "tokenstore."
# What stands for a value an event must not carry.
REDACTED = "<redacted>"
HIDDEN = "<hidden>"
# Crockford's base32, as ULID uses it: ids sort as their text, oldest first.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_RANDOM_BYTES = 10


class EventType(enum.StrEnum):
    CREATED = "token.created"
    UPDATED = "token.updated"
    REVOKED = "token.revoked"
    DELETED = "token.deleted"
    PURGED = "token.purged"

    @property
    def cloudevents_type(self) -> str:
        return TYPE_PREFIX + self.value


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made a change and in which request: the actor is `service:<apiKey>`,
    `service-token:<id>` (an API v3 service access token), `operator` or `purge`."""

    actor: str
    request_id: str | None = None

    @classmethod
    def of_service(cls, api_key: int, request_id: str | None = None) -> Origin:
        return cls(f"service:{api_key}", request_id)


PURGE = Origin("purge")


@dataclass(frozen=True, slots=True)
class TokenFacts:
    """What names a token in its events, besides its state."""

    service_api_key: int
    token_id: str
    client_id: int
    subject: str | None


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One entry of the log, as written (the database adds its sequence numbers)."""

    id: str
    service_api_key: int
    token_id: str
    client_id: int
    subject: str | None
    type: EventType
    actor: str
    request_id: str | None
    time: int  # milliseconds since 1970
    changes: Mapping[str, Mapping[str, Any]]


def event_id(now: int, random_bytes: bytes) -> str:
    """A ULID: 48 bits of milliseconds and 80 random bits, 26 characters of Crockford's
    base32. Sortable by time, unique without coordination."""
    if len(random_bytes) != ID_RANDOM_BYTES:
        raise ValueError(f"an event id needs {ID_RANDOM_BYTES} random bytes")
    number = (now & (2**48 - 1)) << 80 | int.from_bytes(random_bytes, "big")
    return "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(125, -1, -5))


def record(
    kind: EventType,
    token: TokenFacts,
    origin: Origin,
    *,
    now: int,
    random_bytes: bytes,
    before: TokenState | None = None,
    after: TokenState | None = None,
) -> TokenEvent:
    """The event of one change of one token: its changes are `diff(before, after)`."""
    return TokenEvent(
        id=event_id(now, random_bytes),
        service_api_key=token.service_api_key,
        token_id=token.token_id,
        client_id=token.client_id,
        subject=token.subject,
        type=kind,
        actor=origin.actor,
        request_id=origin.request_id,
        time=now,
        changes=diff(before, after),
    )


# Wire names (Authlete's) of the state's fields where they are not simply camelCase.
_WIRE_NAMES = {
    "access_hash": "accessToken",
    "access_expires_at": "accessTokenExpiresAt",
    "persistent": "accessTokenPersistent",
    "refresh_expires_at": "refreshTokenExpiresAt",
}


def wire_name(field: str) -> str:
    if field in _WIRE_NAMES:
        return _WIRE_NAMES[field]
    head, *rest = field.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _wire_value(field: str, value: Any) -> Any:
    if field == "access_hash":
        return None if value is None else REDACTED
    if field == "authorization_details" and value is not None:
        return [element_document(element) for element in value]
    return list(value) if isinstance(value, tuple) else value


def _properties(state: TokenState | None) -> dict[str, Any]:
    if state is None:
        return {}
    return {p.key: HIDDEN if p.hidden else p.value for p in state.properties}


def _hidden_values(state: TokenState | None) -> dict[str, str]:
    if state is None:
        return {}
    return {p.key: p.value for p in state.properties if p.hidden}


def diff(before: TokenState | None, after: TokenState | None) -> dict[str, dict[str, Any]]:
    """`{wireName: {"from": ..., "to": ...}}` for every field whose value differs.

    Creation (`before` None) records every field that has a value; a deletion (`after`
    None) records nothing: the event's type says it. A regenerated access token is
    `accessToken` from and to `REDACTED`. Properties are recorded one by one, as
    `properties.<key>`; a hidden one's value is `HIDDEN`, and a hidden value that changed
    is recorded as a change from `HIDDEN` to `HIDDEN`, never with either value."""
    if after is None:
        return {}
    changes: dict[str, dict[str, Any]] = {}
    for field in dataclasses.fields(TokenState):
        if field.name == "properties":
            continue
        new = getattr(after, field.name)
        old = None if before is None else getattr(before, field.name)
        if before is None and new in (None, (), False) and field.name != "persistent":
            continue
        if old != new:
            changes[wire_name(field.name)] = {
                "from": _wire_value(field.name, old),
                "to": _wire_value(field.name, new),
            }
    old_props, new_props = _properties(before), _properties(after)
    old_hidden, new_hidden = _hidden_values(before), _hidden_values(after)
    for key in sorted(old_props.keys() | new_props.keys()):
        old_value, new_value = old_props.get(key), new_props.get(key)
        hidden_changed = (
            key in old_hidden and key in new_hidden and (old_hidden[key] != new_hidden[key])
        )
        if old_value != new_value or hidden_changed:
            changes[f"properties.{key}"] = {"from": old_value, "to": new_value}
    return changes


def rfc3339(milliseconds: int) -> str:
    moment = datetime.fromtimestamp(milliseconds / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloudevent(event: TokenEvent) -> dict[str, Any]:
    """The event as a CloudEvents 1.0 JSON object (its JSON format, section 3), the same
    in the history API, the poll feed and the NATS message body."""
    return {
        "specversion": SPEC_VERSION,
        "id": event.id,
        "source": f"tokenstore/{event.service_api_key}",
        "type": event.type.cloudevents_type,
        "subject": event.token_id,
        "time": rfc3339(event.time),
        "datacontenttype": "application/json",
        "data": {
            "tokenId": event.token_id,
            "clientId": event.client_id,
            "subject": event.subject,
            "actor": event.actor,
            "requestId": event.request_id,
            "changes": {name: dict(change) for name, change in event.changes.items()},
        },
    }


def nats_subject(event: TokenEvent, prefix: str = "tokenstore.events") -> str:
    """`tokenstore.events.<serviceApiKey>.<type without "tokenstore.">`."""
    return f"{prefix}.{event.service_api_key}.{event.type.value}"
