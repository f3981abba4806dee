"""What a token change records (app.events.changes), table-driven, with a fixed `now` and
fixed random bytes, no database."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from app.events.changes import (
    HIDDEN,
    REDACTED,
    EventType,
    Origin,
    TokenFacts,
    cloudevent,
    diff,
    event_id,
    nats_subject,
    record,
    rfc3339,
)
from app.kit.hashing import token_hash
from app.tokens.rules import AuthzElement, Property, TokenState

NOW = 1_700_000_000_123
HOUR_MS = 3_600_000
SECRET = "the-hidden-value-s3cr3t"
OTHER_SECRET = "another-hidden-value-t0p"
ZEROS = bytes(10)
ONES = b"\xff" * 10

TOKEN = TokenState(
    access_hash=token_hash("old-value-" + "x" * 33),
    scopes=("read",),
    access_expires_at=NOW + HOUR_MS,
    persistent=False,
    refresh_expires_at=NOW + 24 * HOUR_MS,
    properties=(Property("colour", "blue"), Property("pin", SECRET, hidden=True)),
)
FACTS = TokenFacts(service_api_key=4242, token_id="tok-1", client_id=77, subject="alice")


def change(before: Any, after: Any) -> dict[str, Any]:
    return {"from": before, "to": after}


# --- diff ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (TOKEN, TOKEN, {}),
        (TOKEN, None, {}),
        (TOKEN, replace(TOKEN, scopes=("read", "write")),
         {"scopes": change(["read"], ["read", "write"])}),
        (TOKEN, replace(TOKEN, scopes=()), {"scopes": change(["read"], [])}),
        (TOKEN, replace(TOKEN, access_expires_at=NOW + 5),
         {"accessTokenExpiresAt": change(NOW + HOUR_MS, NOW + 5)}),
        (TOKEN, replace(TOKEN, refresh_expires_at=NOW + 7),
         {"refreshTokenExpiresAt": change(NOW + 24 * HOUR_MS, NOW + 7)}),
        (TOKEN, replace(TOKEN, persistent=True), {"accessTokenPersistent": change(False, True)}),
        (TOKEN, replace(TOKEN, access_hash=token_hash("new-value-" + "y" * 33)),
         {"accessToken": change(REDACTED, REDACTED)}),
        (TOKEN, replace(TOKEN, properties=(Property("colour", "blue"),
                                           Property("pin", OTHER_SECRET, hidden=True))),
         {"properties.pin": change(HIDDEN, HIDDEN)}),
        (TOKEN, replace(TOKEN, properties=(*TOKEN.properties, Property("size", "L"))),
         {"properties.size": change(None, "L")}),
        (TOKEN, replace(TOKEN, properties=(Property("pin", SECRET, hidden=True),)),
         {"properties.colour": change("blue", None)}),
        (TOKEN, replace(TOKEN, properties=(Property("colour", "blue"),)),
         {"properties.pin": change(HIDDEN, None)}),
        (TOKEN, replace(TOKEN, properties=(Property("colour", "red"),
                                           Property("pin", SECRET, hidden=True))),
         {"properties.colour": change("blue", "red")}),
        (TOKEN, replace(TOKEN, properties=(Property("colour", "blue", hidden=True),
                                           Property("pin", SECRET, hidden=True))),
         {"properties.colour": change("blue", HIDDEN)}),
        (TOKEN, replace(TOKEN, dpop_key_thumbprint="jkt", certificate_thumbprint="x5t"),
         {"certificateThumbprint": change(None, "x5t"), "dpopKeyThumbprint": change(None, "jkt")}),
        (TOKEN, replace(TOKEN, for_external_attachment=True, resources=("https://rs",),
                        acr="urn:acr:2", auth_time=1_700_000_000, session_id="sid"),
         {"forExternalAttachment": change(False, True), "resources": change([], ["https://rs"]),
          "acr": change(None, "urn:acr:2"), "authTime": change(0, 1_700_000_000),
          "sessionId": change(None, "sid")}),
        (TOKEN, replace(TOKEN, authorization_details=(AuthzElement("payment", actions=("pay",)),)),
         {"authorizationDetails": change(None, [{"type": "payment", "actions": ["pay"]}])}),
    ],
    ids=[
        "no change",
        "a deletion records no field",
        "scopes added",
        "scopes withdrawn",
        "access token expiry",
        "refresh token expiry",
        "made persistent",
        "regenerated access token is redacted on both sides",
        "hidden value changed: hidden on both sides",
        "property added",
        "property removed",
        "hidden property removed",
        "visible property changed",
        "property made hidden",
        "binding thumbprints",
        "fields kept in the attributes document",
        "authorization details in their wire form",
    ],
)  # fmt: skip
def test_an_update_records_exactly_the_fields_that_changed_under_their_wire_names(
    before: TokenState, after: TokenState | None, expected: dict[str, Any]
) -> None:
    assert diff(before, after) == expected


def test_a_creation_records_every_field_that_has_a_value_from_null() -> None:
    created = replace(TOKEN, scopes=("read", "write"), resources=("https://rs",))
    assert diff(None, created) == {
        "accessToken": change(None, REDACTED),
        "scopes": change(None, ["read", "write"]),
        "accessTokenExpiresAt": change(None, NOW + HOUR_MS),
        "accessTokenPersistent": change(None, False),  # recorded even when false
        "refreshTokenExpiresAt": change(None, NOW + 24 * HOUR_MS),
        "resources": change(None, ["https://rs"]),
        "properties.colour": change(None, "blue"),
        "properties.pin": change(None, HIDDEN),
    }


def test_a_token_without_refresh_token_is_created_without_its_expiry() -> None:
    created = replace(TOKEN, refresh_expires_at=None, properties=())
    assert "refreshTokenExpiresAt" not in diff(None, created)


@pytest.mark.parametrize(
    "after",
    [
        replace(TOKEN, properties=(Property("pin", OTHER_SECRET, hidden=True),)),
        replace(TOKEN, properties=()),
        replace(TOKEN, access_hash=token_hash("new-value-" + "y" * 33)),
    ],
    ids=["hidden value changed", "hidden property removed", "regenerated"],
)
def test_no_hidden_value_and_no_hash_is_ever_recorded(after: TokenState) -> None:
    for before, state in ((TOKEN, after), (None, TOKEN), (None, after)):
        text = json.dumps(diff(before, state))
        for forbidden in (SECRET, OTHER_SECRET, TOKEN.access_hash, after.access_hash):
            assert forbidden not in text


# --- Event ids -------------------------------------------------------------------------------


def test_an_event_id_is_a_ulid_as_its_specification_spells_it() -> None:
    # github.com/ulid/spec: the smallest and largest ULIDs, and "01ARYZ6S41" is the time
    # 1469918176385 in the examples of its reference implementation.
    assert event_id(0, ZEROS) == "0" * 26
    assert event_id(2**48 - 1, ONES) == "7" + "Z" * 25
    assert event_id(1_469_918_176_385, ZEROS) == "01ARYZ6S41" + "0" * 16


@pytest.mark.parametrize("random_bytes", [ZEROS, ONES, bytes(range(10))])
def test_an_event_id_is_26_characters_of_crockfords_base32(random_bytes: bytes) -> None:
    identifier = event_id(NOW, random_bytes)
    assert len(identifier) == 26
    assert set(identifier) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@pytest.mark.parametrize("later_by", [1, 1000, 365 * 24 * HOUR_MS])
def test_event_ids_sort_by_time_whatever_their_random_part(later_by: int) -> None:
    assert event_id(NOW, ONES) < event_id(NOW + later_by, ZEROS)


def test_event_ids_of_one_millisecond_differ_by_their_random_bytes() -> None:
    ids = {event_id(NOW, bytes([n]) + bytes(9)) for n in range(256)}
    ids |= {event_id(NOW, bytes(9) + bytes([n])) for n in range(256)}
    assert len(ids) == 511  # the all-zero bytes are in both sets
    assert event_id(NOW, ONES) == event_id(NOW, ONES)


@pytest.mark.parametrize("length", [0, 9, 11])
def test_an_event_id_needs_ten_random_bytes(length: int) -> None:
    with pytest.raises(ValueError, match="10 random bytes"):
        event_id(NOW, bytes(length))


# --- The recorded event and its CloudEvents form ---------------------------------------------


def test_an_event_carries_the_token_the_origin_the_time_and_the_diff() -> None:
    after = replace(TOKEN, scopes=())
    event = record(
        EventType.UPDATED, FACTS, Origin.of_service(4242, "req-1"), now=NOW,
        random_bytes=ONES, before=TOKEN, after=after,
    )  # fmt: skip
    assert (event.id, event.time, event.type) == (event_id(NOW, ONES), NOW, EventType.UPDATED)
    assert (event.service_api_key, event.token_id, event.client_id, event.subject) == (
        4242, "tok-1", 77, "alice",
    )  # fmt: skip
    assert (event.actor, event.request_id) == ("service:4242", "req-1")
    assert event.changes == {"scopes": change(["read"], [])}


@pytest.mark.parametrize(
    ("kind", "origin", "name"),
    [
        (EventType.CREATED, Origin("service:4242", "r1"), "token.created"),
        (EventType.UPDATED, Origin("service-token:st-9", "r2"), "token.updated"),
        (EventType.REVOKED, Origin("operator", "r3"), "token.revoked"),
        (EventType.DELETED, Origin("operator"), "token.deleted"),
        (EventType.PURGED, Origin("purge"), "token.purged"),
    ],
)
def test_an_event_is_a_cloudevents_1_0_json_object(
    kind: EventType, origin: Origin, name: str
) -> None:
    before = TOKEN if kind is EventType.UPDATED else None
    after = None if kind in (EventType.DELETED, EventType.PURGED, EventType.REVOKED) else TOKEN
    if kind is EventType.UPDATED:
        after = replace(TOKEN, persistent=True)
    event = record(kind, FACTS, origin, now=NOW, random_bytes=ZEROS, before=before, after=after)
    document = cloudevent(event)
    assert document == {
        "specversion": "1.0",
        "id": event.id,
        "source": "tokenstore/4242",
        "type": f"tokenstore.{name}",
        "subject": "tok-1",
        "time": "2023-11-14T22:13:20.123Z",
        "datacontenttype": "application/json",
        "data": {
            "tokenId": "tok-1",
            "clientId": 77,
            "subject": "alice",
            "actor": origin.actor,
            "requestId": origin.request_id,
            "changes": diff(before, after),
        },
    }
    assert json.loads(json.dumps(document)) == document  # plain JSON all the way down
    assert nats_subject(event) == f"tokenstore.events.4242.{name}"


@pytest.mark.parametrize(
    ("milliseconds", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (NOW, "2023-11-14T22:13:20.123Z"),
        (1_700_000_000_001, "2023-11-14T22:13:20.001Z"),
        (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
    ],
)
def test_the_event_time_is_rfc_3339_in_utc_with_milliseconds(milliseconds: int, text: str) -> None:
    assert rfc3339(milliseconds) == text
    assert datetime.fromisoformat(text).timestamp() * 1000 == milliseconds
