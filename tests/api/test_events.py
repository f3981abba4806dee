"""The token event log through HTTP (docs/events.md): one event per changed token, written in
the change's transaction; the history API and the poll feed, each bounded to its own
service; no token value, hash or secret in any event; retention. On both databases."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.clients import repository as client_rows
from app.clock import system_clock
from app.config import Settings
from app.db import make_sessionmaker
from app.events import repository as event_log
from app.events.changes import HIDDEN, REDACTED, EventType, Origin, TokenFacts
from app.events.models import TokenEventRow
from app.events.service import new_event
from app.jobs import MS_PER_DAY, purge_expired
from app.kit.hashing import token_hash
from app.main import event_relay
from app.services import repository as service_rows
from tests.api.world import World, ok
from tests.conftest import OPERATOR

pytestmark = pytest.mark.anyio

PREFIXES = ["/api", "/api/{serviceId}"]
UPDATE_PATHS = [
    "/auth/token/update",
    "/api/auth/token/update",
    "/api/{serviceId}/auth/token/update",
]
EVENTS = TokenEventRow.metadata.tables["token_events"]
# How long a test waits for the relay to put committed events on the feed. The `relay`
# fixture's is woken right after each commit; when another relay holds the lock (a test
# server's, in the same session) that one finds them at its next poll (settings
# `events_poll_seconds`). Reached only when something is broken.
FEED_WAIT_S = 15.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def request_id(response: Response) -> str:
    """The id the access log gives the request (app.logs), which its events carry."""
    return response.headers["x-request-id"]


def path(prefix: str, world: World, rest: str) -> str:
    return prefix.format(serviceId=world.api_key) + rest


async def create(world: World, **fields: Any) -> tuple[dict[str, Any], str]:
    """A token, and the id of the request that created it."""
    body = {"grantType": "AUTHORIZATION_CODE", "clientId": world.client_id, "subject": "alice",
            "scopes": ["read"], **fields}  # fmt: skip
    response = await world.http.post("/api/auth/token/create", json=body, auth=world.auth)
    created = ok(response)
    assert created["action"] == "OK", created
    return created, request_id(response)


async def update_token(world: World, url: str = "/auth/token/update", **fields: Any) -> str:
    response = await world.http.post(url, json=fields, auth=world.auth)
    assert ok(response)["action"] == "OK", response.text
    return request_id(response)


async def history(
    world: World, identifier: str, *, prefix: str = "/api", start: int = 0, end: int = 1000
) -> Response:
    url = path(prefix, world, f"/auth/token/history/{identifier}")
    return await world.http.get(url, params={"start": start, "end": end}, auth=world.auth)


async def events_of(world: World, identifier: str) -> list[dict[str, Any]]:
    answer = ok(await history(world, identifier))
    events: list[dict[str, Any]] = answer["events"]
    assert answer["totalCount"] == len(events)
    return events


def logged(engine: Engine, api_key: int) -> list[dict[str, Any]]:
    """Every stored event of the service, straight from `token_events`, in insertion order:
    what the history and the feed could ever show of it."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(EVENTS).where(EVENTS.c.service_api_key == api_key).order_by(EVENTS.c.seq)
        )
        return [dict(row._mapping) for row in rows]


def event_ids(engine: Engine, api_key: int) -> list[str]:
    """The ids of the service's stored events (not their relay marks, which a relay running
    meanwhile may set)."""
    return [row["id"] for row in logged(engine, api_key)]


def made_by(engine: Engine, api_key: int, request: str) -> list[tuple[str, str, str]]:
    """(type, tokenId, actor) of each event the request recorded."""
    return [
        (row["type"], row["token_id"], row["actor"])
        for row in logged(engine, api_key)
        if row["request_id"] == request
    ]


def summary(event: dict[str, Any]) -> tuple[str, str, int, str | None, str, str | None]:
    data = event["data"]
    assert event["subject"] == data["tokenId"]
    return (event["type"], data["tokenId"], data["clientId"], data["subject"], data["actor"],
            data["requestId"])  # fmt: skip


def changes(event: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = event["data"]["changes"]
    return found


def change(before: Any, after: Any) -> dict[str, Any]:
    return {"from": before, "to": after}


async def new_client(world: World, **fields: Any) -> dict[str, Any]:
    return ok(await world.http.post("/api/client/create", json=fields, auth=world.auth))


async def service_token(world: World) -> tuple[str, dict[str, str]]:
    """An API v3 service access token for the world's service: its id, and the header."""
    issued = ok(await world.http.post(f"/api/service/{world.api_key}/access_token/create",
                                      json={}, auth=OPERATOR))  # fmt: skip
    return issued["tokenId"], {"Authorization": f"Bearer {issued['accessToken']}"}


@pytest.fixture
async def relay(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """The event relay as `serve` runs it in the app's lifespan, which the `app` fixture
    does not run: the feed shows an event only once the relay has given it a position."""
    async with event_relay(settings, system_clock, app.state.database):
        yield


async def feed_of(world: World, count: int, *, after: str = "0") -> list[dict[str, Any]]:
    """The service's feed after the cursor once it holds `count` events (the relay positions
    them right after their commit), or whatever it holds after `FEED_WAIT_S`."""
    deadline = time.monotonic() + FEED_WAIT_S
    while True:
        answer = ok(await world.http.get("/api/auth/token/events", auth=world.auth,
                                         params={"after": after, "limit": 1000}))  # fmt: skip
        events: list[dict[str, Any]] = answer["events"]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        await anyio.sleep(0.02)


# --- One event per changed token -------------------------------------------------------------


async def test_a_created_token_has_one_created_event_with_every_field_from_null(
    world: World, engine: Engine
) -> None:
    created, request = await create(
        world, scopes=["read", "write"],
        properties=[{"key": "colour", "value": "blue"},
                    {"key": "pin", "value": "1234-secret", "hidden": True}],
    )  # fmt: skip
    token_id = created["tokenId"]
    [event] = await events_of(world, token_id)
    assert summary(event) == ("tokenstore.token.created", token_id, world.client_id, "alice",
                              f"service:{world.api_key}", request)  # fmt: skip
    assert event["source"] == f"tokenstore/{world.api_key}"
    assert changes(event) == {
        "accessToken": change(None, REDACTED),
        "scopes": change(None, ["read", "write"]),
        "accessTokenExpiresAt": change(None, created["expiresAt"]),
        "accessTokenPersistent": change(None, False),
        "refreshTokenExpiresAt": change(None, created["refreshTokenExpiresAt"]),
        "properties.colour": change(None, "blue"),
        "properties.pin": change(None, HIDDEN),
    }
    assert made_by(engine, world.api_key, request) == [
        ("token.created", token_id, f"service:{world.api_key}")
    ]


@pytest.mark.parametrize("url", UPDATE_PATHS)
async def test_an_update_records_one_event_with_the_fields_that_changed(
    world: World, engine: Engine, url: str
) -> None:
    token = await world.token(scopes=["read", "write"])
    expires_at = now_ms() + 123_456
    request = await update_token(
        world, url.format(serviceId=world.api_key), accessToken=token["accessToken"],
        accessTokenExpiresAt=expires_at, scopes=["write"],
    )  # fmt: skip
    created, updated = await events_of(world, token["tokenId"])
    assert created["type"] == "tokenstore.token.created"
    assert summary(updated) == ("tokenstore.token.updated", token["tokenId"], world.client_id,
                                "alice", f"service:{world.api_key}", request)  # fmt: skip
    assert changes(updated) == {
        "scopes": change(["read", "write"], ["write"]),
        "accessTokenExpiresAt": change(token["expiresAt"], expires_at),
    }
    assert len(made_by(engine, world.api_key, request)) == 1


async def test_a_regenerated_access_token_is_recorded_redacted(world: World) -> None:
    token = await world.token()
    response = await world.http.post(
        "/auth/token/update", json={"tokenId": token["tokenId"], "accessTokenValueUpdated": True},
        auth=world.auth,
    )  # fmt: skip
    new_value = ok(response)["accessToken"]
    assert new_value != token["accessToken"]
    [*_, regenerated] = await events_of(world, token["tokenId"])
    assert changes(regenerated) == {"accessToken": change(REDACTED, REDACTED)}
    assert regenerated["data"]["requestId"] == request_id(response)
    # The new value names the token, and its history, from now on.
    assert await events_of(world, new_value) == await events_of(world, token["tokenId"])


async def test_properties_are_recorded_key_by_key_and_a_hidden_value_never(
    world: World,
) -> None:
    token = await world.token(properties=[
        {"key": "colour", "value": "blue"},
        {"key": "pin", "value": "first-hidden-value", "hidden": True},
    ])  # fmt: skip
    await update_token(world, tokenId=token["tokenId"], properties=[
        {"key": "pin", "value": "second-hidden-value", "hidden": True},
        {"key": "size", "value": "L"},
    ])  # fmt: skip
    await update_token(world, tokenId=token["tokenId"], properties=[{"key": "size", "value": "L"}])
    _, changed, removed = await events_of(world, token["tokenId"])
    assert changes(changed) == {
        "properties.colour": change("blue", None),
        "properties.pin": change(HIDDEN, HIDDEN),
        "properties.size": change(None, "L"),
    }
    assert changes(removed) == {"properties.pin": change(HIDDEN, None)}
    text = (await history(world, token["tokenId"])).text
    assert "first-hidden-value" not in text
    assert "second-hidden-value" not in text


async def test_a_deletion_records_one_event_and_the_history_stays_readable_by_token_id(
    world: World, engine: Engine
) -> None:
    token, other = await world.token(), await world.token()
    response = await world.http.delete(
        f"/api/auth/token/delete/{token_hash(token['accessToken'])}", auth=world.auth
    )
    assert response.status_code == 204
    created, deleted = await events_of(world, token["tokenId"])
    assert created["type"] == "tokenstore.token.created"
    assert summary(deleted) == (
        "tokenstore.token.deleted", token["tokenId"], world.client_id, "alice",
        f"service:{world.api_key}", request_id(response),
    )  # fmt: skip
    assert changes(deleted) == {}
    assert made_by(engine, world.api_key, request_id(response)) == [
        ("token.deleted", token["tokenId"], f"service:{world.api_key}")
    ]
    assert len(await events_of(world, other["tokenId"])) == 1


async def test_a_revocation_records_one_revoked_event_per_token_it_removes(
    world: World, engine: Engine
) -> None:
    second_client = (await new_client(world))["clientId"]
    by_access, by_refresh = await world.token(), await world.token()
    alices = [await world.token(clientId=second_client) for _ in range(2)]
    bobs = [await world.token(subject="bob"), await world.token(subject="bob")]
    bystander = await world.token(subject="carol")
    actor = f"service:{world.api_key}"

    async def revoke(**fields: Any) -> str:
        response = await world.http.post("/api/auth/token/revoke", json=fields, auth=world.auth)
        ok(response)
        return request_id(response)

    one = await revoke(accessTokenIdentifier=by_access["accessToken"])
    assert made_by(engine, world.api_key, one) == [("token.revoked", by_access["tokenId"], actor)]
    one = await revoke(refreshTokenIdentifier=by_refresh["refreshToken"])
    assert made_by(engine, world.api_key, one) == [("token.revoked", by_refresh["tokenId"], actor)]
    of_client = await revoke(clientIdentifier=str(second_client))
    assert sorted(made_by(engine, world.api_key, of_client)) == sorted(
        ("token.revoked", t["tokenId"], actor) for t in alices
    )
    of_subject = await revoke(subject="bob")
    assert sorted(made_by(engine, world.api_key, of_subject)) == sorted(
        ("token.revoked", t["tokenId"], actor) for t in bobs
    )
    assert made_by(engine, world.api_key, await revoke(subject="nobody")) == []
    [revoked] = (await events_of(world, bobs[0]["tokenId"]))[1:]
    assert summary(revoked) == ("tokenstore.token.revoked", bobs[0]["tokenId"], world.client_id,
                                "bob", actor, of_subject)  # fmt: skip
    assert changes(revoked) == {}
    assert len(await events_of(world, bystander["tokenId"])) == 1


async def test_an_rfc_7009_revocation_records_one_event_only_when_the_token_went(
    world: World, engine: Engine
) -> None:
    client = await new_client(world)
    mine = await world.token(clientId=client["clientId"])
    theirs = await world.token()
    credentials = {"clientId": str(client["clientId"]), "clientSecret": client["clientSecret"]}

    async def revoke(token: str) -> str:
        body = {"parameters": f"token={token}", **credentials}
        response = await world.http.post("/api/auth/revocation", json=body, auth=world.auth)
        assert ok(response)["action"] == "OK"
        return request_id(response)

    revoked = await revoke(mine["refreshToken"])
    assert made_by(engine, world.api_key, revoked) == [
        ("token.revoked", mine["tokenId"], f"service:{world.api_key}")
    ]
    # Another client's token and an unknown one: answered OK, and nothing happened.
    assert made_by(engine, world.api_key, await revoke(theirs["accessToken"])) == []
    assert made_by(engine, world.api_key, await revoke("never-issued")) == []
    assert made_by(engine, world.api_key, await revoke(mine["accessToken"])) == []  # gone


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_connected_apps_record_one_event_per_token_they_change(
    world: World, engine: Engine, prefix: str
) -> None:
    alices = [await world.token(scopes=["read"]), await world.token(scopes=["profile"])]
    bob = await world.token(subject="bob")
    base = path(prefix, world, "/client")
    actor = f"service:{world.api_key}"
    ids = sorted(t["tokenId"] for t in alices)

    response = await world.http.post(f"{base}/authorization/update/{world.client_id}",
                                     json={"subject": "alice", "scopes": ["write"]},
                                     auth=world.auth)  # fmt: skip
    assert ok(response)["count"] == 2
    assert sorted(made_by(engine, world.api_key, request_id(response))) == [
        ("token.updated", token_id, actor) for token_id in ids
    ]
    for token, scopes in zip(alices, (["read"], ["profile"]), strict=True):
        assert changes((await events_of(world, token["tokenId"]))[-1]) == {
            "scopes": change(scopes, ["write"])
        }
    # No scopes given: the tokens are counted, and nothing changes.
    response = await world.http.post(f"{base}/authorization/update/{world.client_id}",
                                     json={"subject": "alice"}, auth=world.auth)  # fmt: skip
    assert ok(response)["count"] == 2
    assert made_by(engine, world.api_key, request_id(response)) == []

    response = await world.http.delete(
        f"{base}/granted_scopes/delete/{world.client_id}/alice", auth=world.auth
    )
    assert ok(response)["count"] == 2
    assert sorted(made_by(engine, world.api_key, request_id(response))) == [
        ("token.updated", token_id, actor) for token_id in ids
    ]
    assert changes((await events_of(world, ids[0]))[-1]) == {"scopes": change(["write"], [])}

    response = await world.http.delete(
        f"{base}/authorization/delete/{world.client_id}/alice", auth=world.auth
    )
    assert ok(response)["count"] == 2
    assert sorted(made_by(engine, world.api_key, request_id(response))) == [
        ("token.deleted", token_id, actor) for token_id in ids
    ]
    assert len(await events_of(world, bob["tokenId"])) == 1  # bob's token: untouched


async def test_a_client_deletion_records_one_deleted_event_per_token_of_the_client(
    world: World, engine: Engine
) -> None:
    doomed = (await new_client(world))["clientId"]
    tokens = [await world.token(clientId=doomed), await world.token(clientId=doomed, subject="b")]
    kept = await world.token()
    response = await world.http.delete(f"/api/client/delete/{doomed}", auth=world.auth)
    assert response.status_code == 204
    assert sorted(made_by(engine, world.api_key, request_id(response))) == sorted(
        ("token.deleted", t["tokenId"], f"service:{world.api_key}") for t in tokens
    )
    [*_, deleted] = await events_of(world, tokens[1]["tokenId"])
    assert summary(deleted)[1:4] == (tokens[1]["tokenId"], doomed, "b")
    assert len(await events_of(world, kept["tokenId"])) == 1


@pytest.mark.parametrize("how", ["operator", "itself with Basic", "itself with Bearer"])
async def test_a_service_deletion_records_one_deleted_event_per_token_that_outlives_it(
    world: World, engine: Engine, how: str
) -> None:
    second_client = (await new_client(world))["clientId"]
    tokens = [await world.token(), await world.token(subject="bob"),
              await world.token(clientId=second_client)]  # fmt: skip
    if how == "operator":
        response = await world.http.delete(f"/api/service/delete/{world.api_key}", auth=OPERATOR)
        actor = "operator"
    elif how == "itself with Basic":
        response = await world.http.delete(f"/api/{world.api_key}/service/delete", auth=world.auth)
        actor = f"service:{world.api_key}"
    else:
        token_id, bearer = await service_token(world)
        response = await world.http.delete(f"/api/{world.api_key}/service/delete", headers=bearer)
        actor = f"service-token:{token_id}"
    assert response.status_code == 204
    assert sorted(made_by(engine, world.api_key, request_id(response))) == sorted(
        ("token.deleted", t["tokenId"], actor) for t in tokens
    )


async def test_a_v3_service_access_token_is_recorded_as_the_actor(world: World) -> None:
    token = await world.token()
    token_id, bearer = await service_token(world)
    response = await world.http.post(
        f"/api/{world.api_key}/auth/token/update", headers=bearer,
        json={"tokenId": token["tokenId"], "scopes": []},
    )  # fmt: skip
    assert ok(response)["action"] == "OK"
    seen = ok(await world.http.get(
        f"/api/{world.api_key}/auth/token/history/{token['tokenId']}", headers=bearer
    ))  # fmt: skip
    assert [e["data"]["actor"] for e in seen["events"]] == [
        f"service:{world.api_key}",
        f"service-token:{token_id}",
    ]
    assert seen["events"][1]["data"]["requestId"] == request_id(response)


async def test_the_purge_records_one_purged_event_per_token_it_removes(
    world: World, engine: Engine
) -> None:
    dead = [await world.token(), await world.token(subject="bob")]
    alive = await world.token()
    past = now_ms() - 1_000
    for token in dead:
        await update_token(world, tokenId=token["tokenId"], accessTokenExpiresAt=past,
                           refreshTokenExpiresAt=past)  # fmt: skip
    purge_expired(make_sessionmaker(engine), now=now_ms(), batch_size=100)
    purged = [row for row in logged(engine, world.api_key) if row["type"] == "token.purged"]
    assert sorted((r["token_id"], r["actor"], r["request_id"]) for r in purged) == sorted(
        (t["tokenId"], "purge", None) for t in dead
    )
    [created, expired, gone] = await events_of(world, dead[1]["tokenId"])
    assert (created["type"], expired["type"]) == (
        "tokenstore.token.created", "tokenstore.token.updated",
    )  # fmt: skip
    assert summary(gone) == ("tokenstore.token.purged", dead[1]["tokenId"], world.client_id,
                             "bob", "purge", None)  # fmt: skip
    assert len(await events_of(world, alive["tokenId"])) == 1


# --- What fails leaves no event --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "body", "action"),
    [
        ("/auth/token/update", {"tokenId": "no-such-token", "scopes": []}, "NOT_FOUND"),
        ("/auth/token/update", {"tokenId": "{expired}", "scopes": []}, "NOT_FOUND"),
        ("/auth/token/update", {"tokenId": "{live}", "properties": [{"value": "v"}]},
         "BAD_REQUEST"),
        ("/api/auth/token/create", {"grantType": "PASSWORD", "clientId": "{client}",
                                    "accessToken": "{taken}"}, "BAD_REQUEST"),
        ("/api/auth/token/create", {"grantType": "PASSWORD", "clientId": 1}, "BAD_REQUEST"),
    ],
    ids=["update of an unknown token", "update of an expired token", "update refused",
         "create with a value in use", "create for an unknown client"],
)  # fmt: skip
async def test_a_refused_change_leaves_no_event(
    world: World, engine: Engine, url: str, body: dict[str, Any], action: str
) -> None:
    live = await world.token(accessToken="chosen-value-" + str(world.api_key))
    expired = await world.token()
    past = now_ms() - 1_000
    await update_token(world, tokenId=expired["tokenId"], accessTokenExpiresAt=past,
                       refreshTokenExpiresAt=past)  # fmt: skip
    names = {"{live}": live["tokenId"], "{expired}": expired["tokenId"],
             "{client}": world.client_id, "{taken}": live["accessToken"]}  # fmt: skip
    filled = {key: names.get(value, value) if isinstance(value, str) else value
              for key, value in body.items()}  # fmt: skip
    before = event_ids(engine, world.api_key)
    answer = ok(await world.http.post(url, json=filled, auth=world.auth))
    assert answer["action"] == action, answer
    assert event_ids(engine, world.api_key) == before


async def test_deleting_or_revoking_nothing_leaves_no_event(world: World, engine: Engine) -> None:
    token = await world.token()
    before = event_ids(engine, world.api_key)
    missing = await world.http.delete("/api/auth/token/delete/no-such-token", auth=world.auth)
    assert missing.status_code == 404
    unknown_client = await world.http.delete("/api/client/delete/1", auth=world.auth)
    assert unknown_client.status_code == 404
    revoked = ok(await world.http.post(
        "/api/auth/token/revoke", json={"accessTokenIdentifier": "no-such-token"}, auth=world.auth
    ))  # fmt: skip
    assert revoked["count"] == 0
    assert event_ids(engine, world.api_key) == before
    assert len(await events_of(world, token["tokenId"])) == 1


@pytest.mark.parametrize("what", ["client", "service"])
async def test_a_deletion_that_rolls_back_takes_its_events_with_it(
    world: World, engine: Engine, stored: Any, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """The tokens and their `deleted` events are written, then the last step finds the
    client (or service) gone, as when a concurrent request removed it: the request fails
    and its transaction rolls back, events and all."""
    tokens = [await world.token(), await world.token(subject="bob")]
    before = event_ids(engine, world.api_key)
    if what == "client":
        monkeypatch.setattr(client_rows, "delete_client", lambda *_: False)
        response = await world.http.delete(f"/api/client/delete/{world.client_id}", auth=world.auth)
    else:
        monkeypatch.setattr(service_rows, "delete_service", lambda *_: False)
        response = await world.http.delete(f"/api/service/delete/{world.api_key}", auth=OPERATOR)
    assert response.status_code == 404
    assert all(stored(t["tokenId"]) is not None for t in tokens)
    assert event_ids(engine, world.api_key) == before


# --- The history -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_the_history_is_found_by_value_hash_or_token_id_and_paged_oldest_first(
    world: World, prefix: str
) -> None:
    token = await world.token(scopes=["read"])
    for scopes in (["write"], ["profile"], ["read", "write"]):
        await update_token(world, tokenId=token["tokenId"], scopes=scopes)
    await world.token()  # another token's events are not in this history

    by: dict[str, list[dict[str, Any]]] = {}
    for name, identifier in (("value", token["accessToken"]),
                             ("hash", token_hash(token["accessToken"])),
                             ("tokenId", token["tokenId"])):  # fmt: skip
        answer = ok(await history(world, identifier, prefix=prefix))
        assert (answer["resultCode"], answer["totalCount"]) == ("TOKEN_HISTORY_OK", 4)
        assert answer["resultMessage"] == "4 of 4 events."
        by[name] = answer["events"]
    assert by["value"] == by["hash"] == by["tokenId"]
    events = by["tokenId"]
    assert [e["type"] for e in events] == ["tokenstore.token.created"] + [
        "tokenstore.token.updated"
    ] * 3
    assert [changes(e)["scopes"]["to"] for e in events] == [
        ["read"],
        ["write"],
        ["profile"],
        ["read", "write"],
    ]
    assert {e["data"]["tokenId"] for e in events} == {token["tokenId"]}
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)
    assert len({e["id"] for e in events}) == 4

    page = ok(await history(world, token["tokenId"], prefix=prefix, start=1, end=3))
    assert page["events"] == events[1:3]
    assert (page["totalCount"], page["resultMessage"]) == (4, "2 of 4 events.")
    last = ok(await history(world, token["tokenId"], prefix=prefix, start=3, end=10))
    assert last["events"] == events[3:]
    counted = ok(await history(world, token["tokenId"], prefix=prefix, start=2, end=2))
    assert (counted["events"], counted["totalCount"]) == ([], 4)


@pytest.mark.parametrize("identifier", ["no-such-token", token_hash("never-issued")])
async def test_an_identifier_that_names_no_token_and_no_event_is_404(
    world: World, identifier: str
) -> None:
    await world.token()
    response = await history(world, identifier)
    assert (response.status_code, response.json()["resultCode"]) == (404, "RESOURCE_NOT_FOUND")


async def test_a_history_page_out_of_bounds_is_400(world: World) -> None:
    token = await world.token()
    for start, end in ((-1, 10), (0, 1001), (5, 1006)):
        response = await history(world, token["tokenId"], start=start, end=end)
        assert response.status_code == 400, (start, end, response.text)
    assert (await world.http.get(f"/api/auth/token/history/{token['tokenId']}")).status_code == 401


async def test_another_service_sees_neither_the_history_nor_the_feed_entries(
    http: AsyncClient, engine: Engine, relay: None
) -> None:
    owner, stranger = await World.create(http), await World.create(http)
    token = await owner.token()
    await update_token(owner, tokenId=token["tokenId"], scopes=[])
    own = await stranger.token()
    for identifier in (token["tokenId"], token["accessToken"], token_hash(token["accessToken"])):
        for prefix in PREFIXES:
            response = await history(stranger, identifier, prefix=prefix)
            assert response.status_code == 404, response.text
    # The owner's path with the stranger's credentials: not the stranger's service.
    response = await stranger.http.get(
        f"/api/{owner.api_key}/auth/token/events", auth=stranger.auth
    )
    assert response.status_code == 401
    assert len(await feed_of(owner, 2)) == 2
    seen = await feed_of(stranger, 1)
    assert [e["data"]["tokenId"] for e in seen] == [own["tokenId"]]
    assert {e["source"] for e in seen} == {f"tokenstore/{stranger.api_key}"}
    # Even an event of the stranger's own under the same tokenId (no token id collides
    # today, but the log is read by service and tokenId) leaves the owner's events unseen.
    facts = TokenFacts(stranger.api_key, token["tokenId"], stranger.client_id, "mallory")
    with Session(engine) as session, session.begin():
        event_log.append(session, [new_event(EventType.DELETED, facts, Origin("operator"),
                                             now=now_ms())])  # fmt: skip
    [theirs] = await events_of(stranger, token["tokenId"])
    assert (theirs["source"], theirs["data"]["subject"]) == (
        f"tokenstore/{stranger.api_key}", "mallory",
    )  # fmt: skip
    assert [e["data"]["subject"] for e in await events_of(owner, token["tokenId"])] == [
        "alice", "alice",
    ]  # fmt: skip


# --- The poll feed ---------------------------------------------------------------------------


async def test_the_feed_pages_through_every_event_exactly_once_in_commit_order(
    world: World, relay: None
) -> None:
    first, second, third = await world.token(), await world.token(), await world.token()
    await update_token(world, tokenId=first["tokenId"], scopes=[])
    ok(await world.http.post("/api/auth/token/revoke", auth=world.auth,
                             json={"accessTokenIdentifier": second["accessToken"]}))  # fmt: skip
    deleted = await world.http.delete(f"/api/auth/token/delete/{third['tokenId']}",
                                      auth=world.auth)  # fmt: skip
    assert deleted.status_code == 204
    expected = [("created", first), ("created", second), ("created", third),
                ("updated", first), ("revoked", second), ("deleted", third)]  # fmt: skip
    everything = await feed_of(world, len(expected))
    assert [(e["type"], e["data"]["tokenId"]) for e in everything] == [
        (f"tokenstore.token.{kind}", token["tokenId"]) for kind, token in expected
    ]

    paged: list[dict[str, Any]] = []
    cursors = []
    cursor = None
    for _ in range(10):
        params = {"limit": 4} if cursor is None else {"limit": 4, "after": cursor}
        answer = ok(await world.http.get("/api/auth/token/events", params=params,
                                         auth=world.auth))  # fmt: skip
        paged += answer["events"]
        cursors.append(answer["cursor"])
        if not answer["events"]:
            break
        cursor = answer["cursor"]
    assert paged == everything
    assert [len(p) for p in (paged[:4], paged[4:])] == [4, 2]
    assert len(cursors) == 3
    assert cursors[2] == cursors[1]  # nothing new: the same cursor again
    assert int(cursors[0]) < int(cursors[1])

    # Every event of the service is there once: the histories of its tokens hold the same.
    histories = [e for t in (first, second, third) for e in await events_of(world, t["tokenId"])]
    assert sorted(e["id"] for e in paged) == sorted(e["id"] for e in histories)

    # What comes next appears after the last cursor, alone; the v3 path reads the same feed.
    later = await world.token()
    [fresh] = await feed_of(world, 1, after=cursors[-1])
    assert fresh["data"]["tokenId"] == later["tokenId"]
    v3 = ok(await world.http.get(f"/api/{world.api_key}/auth/token/events",
                                 params={"after": cursors[-1]}, auth=world.auth))  # fmt: skip
    assert v3["events"] == [fresh]


async def test_an_empty_feed_answers_the_cursor_it_was_given(world: World) -> None:
    first = ok(await world.http.get("/api/auth/token/events", auth=world.auth))
    assert first == {"events": [], "cursor": "0"}
    far = str(2**63 - 1)  # the largest position a BIGINT holds
    later = ok(await world.http.get("/api/auth/token/events", params={"after": far},
                                    auth=world.auth))  # fmt: skip
    assert later == {"events": [], "cursor": far}


@pytest.mark.parametrize(
    "after",
    ["abc", "-1", "1.5", "1e3", " 1", "١٢", "1" * 20, str(2**63), "9" * 19],
    ids=["letters", "negative", "fraction", "exponent", "space", "Arabic-Indic digits",
         "20 digits", "past a BIGINT", "19 nines"],
)  # fmt: skip
async def test_a_cursor_that_no_answer_could_have_given_is_400(world: World, after: str) -> None:
    response = await world.http.get("/api/auth/token/events", params={"after": after},
                                    auth=world.auth)  # fmt: skip
    assert (response.status_code, response.json()["resultCode"]) == (400, "VALUE_INVALID")


@pytest.mark.parametrize("limit", ["0", "1001", "-5", "many"])
async def test_a_limit_outside_1_to_1000_is_400(world: World, limit: str) -> None:
    response = await world.http.get("/api/auth/token/events", params={"limit": limit},
                                    auth=world.auth)  # fmt: skip
    assert response.status_code == 400, response.text


# --- Nothing secret in the log ---------------------------------------------------------------


async def test_no_event_holds_a_token_value_a_hash_a_lookup_key_or_a_secret(
    world: World, engine: Engine, stored: Any, relay: None
) -> None:
    client = await new_client(world, clientName="web")
    access_value = "chosen-access-value-" + "a" * 24 + str(world.api_key)
    refresh_value = "chosen-refresh-value-" + "r" * 24 + str(world.api_key)
    token, _ = await create(
        world, clientId=client["clientId"], accessToken=access_value, refreshToken=refresh_value,
        properties=[{"key": "pin", "value": "first-hidden-pin-value", "hidden": True}],
    )  # fmt: skip
    row = stored(token["tokenId"])
    regenerated = ok(await world.http.post("/auth/token/update", auth=world.auth, json={
        "accessToken": access_value, "accessTokenValueUpdated": True,
        "properties": [{"key": "pin", "value": "second-hidden-pin-value", "hidden": True}],
    }))["accessToken"]  # fmt: skip
    regenerated_row = stored(token["tokenId"])
    revoked = ok(await world.http.post("/api/auth/revocation", auth=world.auth, json={
        "parameters": f"token={refresh_value}", "clientId": str(client["clientId"]),
        "clientSecret": client["clientSecret"],
    }))  # fmt: skip
    assert revoked["action"] == "OK"
    forbidden = {
        "access token value": access_value,
        "its hash": token_hash(access_value),
        "its lookup key": row["access_key"],
        "regenerated value": regenerated,
        "regenerated hash": token_hash(regenerated),
        "regenerated lookup key": regenerated_row["access_key"],
        "refresh token value": refresh_value,
        "refresh token hash": token_hash(refresh_value),
        "refresh lookup key": row["refresh_key"],
        "service secret": world.api_secret,
        "client secret": client["clientSecret"],
        "hidden value": "first-hidden-pin-value",
        "changed hidden value": "second-hidden-pin-value",
    }
    history_text = (await history(world, token["tokenId"])).text
    assert len(json.loads(history_text)["events"]) == 3
    feed = await feed_of(world, 3)
    assert len(feed) == 3
    feed_text = json.dumps(feed)
    rows_text = json.dumps(logged(engine, world.api_key), default=str)
    for name, value in forbidden.items():
        for where, text in (("history", history_text), ("feed", feed_text), ("rows", rows_text)):
            assert value not in text, f"the {name} is in the {where}"


# --- Retention -------------------------------------------------------------------------------


@pytest.fixture
def rolled_back_sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions whose transactions are savepoints of one transaction rolled back afterwards:
    the purge runs as it would, and what it removes (other tests' dead tokens too) comes back.
    Nothing committed, so no relay gives the seeded events positions of its own."""
    connection = engine.connect()
    transaction = connection.begin()
    try:
        yield sessionmaker(bind=connection, join_transaction_mode="create_savepoint",
                           expire_on_commit=False)  # fmt: skip
    finally:
        transaction.rollback()
        connection.close()


def test_retention_removes_old_events_only_once_the_relay_is_done_with_them(
    rolled_back_sessions: sessionmaker[Session],
) -> None:
    sessions = rolled_back_sessions
    now = now_ms()
    old, recent = now - 30 * MS_PER_DAY, now - 1 * MS_PER_DAY
    facts = TokenFacts(service_api_key=1, token_id=f"retention-{now}", client_id=1, subject=None)
    events = {
        name: new_event(EventType.DELETED, facts, Origin("operator"), now=at)
        for name, at in (("published", old), ("positioned", old), ("waiting", old),
                         ("recent", recent))
    }  # fmt: skip
    with sessions.begin() as session:
        event_log.append(session, list(events.values()))
        # The relay's marks, set here: positions below any a relay gives (it counts up from
        # the largest), so that one at work meanwhile cannot take the same numbers.
        marks = {"published": (-1, now), "recent": (-2, now), "positioned": (-3, None)}
        for name, (position, published_at) in marks.items():
            session.execute(
                update(EVENTS)
                .where(EVENTS.c.id == events[name].id)
                .values(position=position, published_at=published_at)
            )
        # "waiting" has no position yet.

    def kept() -> set[str]:
        with sessions() as session:
            ids = set(session.scalars(
                select(EVENTS.c.id).where(EVENTS.c.token_id == facts.token_id)
            ))  # fmt: skip
        return {name for name, event in events.items() if event.id in ids}

    # Thirty days old is within a retention of sixty: nothing goes.
    purge_expired(sessions, now=now, batch_size=2, events_retention_days=60,
                  events_publishing=False)  # fmt: skip
    assert kept() == set(events)
    # With a broker, an old event goes once it is published, and not before.
    report = purge_expired(sessions, now=now, batch_size=2, events_retention_days=7,
                           events_publishing=True)  # fmt: skip
    assert kept() == {"positioned", "waiting", "recent"}
    assert report.events >= 1
    # Without one, an old event goes once it has its position; never before.
    purge_expired(sessions, now=now, batch_size=2, events_retention_days=7,
                  events_publishing=False)  # fmt: skip
    assert kept() == {"waiting", "recent"}
