"""Token events reach NATS JetStream exactly once per committed change, through a broker
outage, a SIGKILL of tokenstore, and two tokenstore processes sharing one database.

Each test runs `tokenstore serve` as a subprocess with a broker of its own (tests.brokers),
then reads the stream back and compares its messages with the event log: the same ids, no
id twice, as many as the changes the clients saw committed. Publishing is at least once
(app.events.relay); "no id twice" is the broker dropping a copy by its `Nats-Msg-Id`, which
the outage test provokes on purpose, and the relays' own counts show that two processes do
not both publish.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import make_engine
from app.events.models import TokenEventRow
from tests.brokers import (
    Delivered,
    delivered,
    own_broker,
    service_subjects,
    wait_for_delivery,
)
from tests.conftest import migrated_database
from tests.resilience.load import Load, whole_update
from tests.resilience.tenant import server_environment, tenant_with_tokens
from tests.servers import free_port, serving, start, wait_until_healthy


def logged(database_url: str, api_key: str) -> list[TokenEventRow]:
    """The service's events in the log, in the order they were written."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine) as session:
            statement = (
                select(TokenEventRow)
                .where(TokenEventRow.service_api_key == int(api_key))
                .order_by(TokenEventRow.seq)
            )
            return list(session.scalars(statement))
    finally:
        engine.dispose()


def wait_until_all_marked(database_url: str, api_key: str, seconds: float = 10) -> None:
    """The relay marks an event published once JetStream acknowledged it."""
    deadline = time.monotonic() + seconds
    while any(row.published_at is None for row in logged(database_url, api_key)):
        assert time.monotonic() < deadline, f"events still unmarked after {seconds} s"
        time.sleep(0.1)


def unmark(database_url: str, ids: list[str]) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as connection:
            connection.execute(
                update(TokenEventRow).where(TokenEventRow.id.in_(ids)).values(published_at=None)
            )
    finally:
        engine.dispose()


def published_by(base: str) -> float:
    """What this process's relay counted as acknowledged by JetStream (its /metrics)."""
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("tokenstore_events_published_total "):
            return float(line.split()[1])
    raise AssertionError("no tokenstore_events_published_total in /metrics")


def history(base: str, auth: tuple[str, str], token: str) -> list[dict[str, Any]]:
    """A token's events from the history API, oldest first, every page."""
    events: list[dict[str, Any]] = []
    while True:
        page = httpx.get(
            f"{base}/api/auth/token/history/{token}",
            params={"start": len(events), "end": len(events) + 1000},
            auth=auth,
        ).json()
        events += page["events"]
        if len(events) >= page["totalCount"]:
            return events


def assert_each_event_delivered_once(
    messages: list[Delivered], log: list[TokenEventRow], api_key: str
) -> None:
    ids = [message.message_id for message in messages]
    assert len(ids) == len(set(ids)), "an event is in the stream twice"
    assert set(ids) == {row.id for row in log}, "the stream and the log differ"
    for message in messages:
        assert message.event["id"] == message.message_id
        kind = message.event["type"].removeprefix("tokenstore.")
        assert message.subject == f"tokenstore.events.{api_key}.{kind}"


def committed_updates(load: Load) -> int:
    """Every update was answered (the server was never killed under this load), and each
    200 is a committed change."""
    statuses = [status for _, status, _ in load.answers]
    assert set(statuses) == {200}, statuses
    return len(statuses)


def test_a_broker_outage_under_updates_loses_no_event_and_leaves_none_twice_in_the_stream(
    backend: str, tmp_path: Path
) -> None:
    with migrated_database(backend, tmp_path) as url, own_broker(tmp_path) as broker:
        env = {**server_environment(url), "TOKENSTORE_EVENTS_NATS_URL": broker.url}
        with serving(tmp_path, env) as (base, _):
            auth, tokens = tenant_with_tokens(base, 4)
            with Load(base, auth, tokens, threads=4) as load:
                time.sleep(0.5)
                broker.stop()
                stopped_at = time.time() * 1000
                time.sleep(2.0)
                started_at = time.time() * 1000
                broker.start()
                time.sleep(1.0)
            api_key = auth[0]
            log = logged(url, api_key)
            wait_for_delivery(broker.url, service_subjects(api_key), {row.id for row in log})
            wait_until_all_marked(url, api_key)
            # As if a relay had been killed between JetStream's acknowledgements and its
            # marks: it publishes those events again, and the broker drops the copies.
            counted = published_by(base)
            unmark(url, [row.id for row in log[:20]])
            wait_until_all_marked(url, api_key)
            assert published_by(base) == counted + 20
            messages = delivered(broker.url, service_subjects(api_key))
            histories = {token: history(base, auth, token) for token in tokens}

    assert_each_event_delivered_once(messages, log, api_key)
    assert len(log) == len(tokens) + committed_updates(load)
    # The outage was real: changes were committed while the broker was down.
    assert any(stopped_at <= row.time <= started_at for row in log)
    # Each token's messages are its history, in its order, with the same bodies.
    for events in histories.values():
        token_id = events[0]["subject"]
        assert [m.event for m in messages if m.event["subject"] == token_id] == events


def test_events_committed_while_the_broker_is_down_are_delivered_after_a_sigkill_and_restart(
    backend: str, tmp_path: Path
) -> None:
    with (
        migrated_database(backend, tmp_path) as url,
        own_broker(tmp_path, started=False) as broker,
    ):
        env = {**server_environment(url), "TOKENSTORE_EVENTS_NATS_URL": broker.url}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = start(tmp_path, env, port)
        try:
            wait_until_healthy(base, process)
            auth, tokens = tenant_with_tokens(base, 3)
            for writer in range(30):
                body = whole_update(tokens[writer % 3], writer)
                answer = httpx.post(f"{base}/auth/token/update", json=body, auth=auth)
                assert answer.json()["action"] == "OK"
            api_key = auth[0]
            committed = logged(url, api_key)
            # The relay goes on without the broker: the events reach the poll feed.
            deadline = time.monotonic() + 10
            while True:
                feed = httpx.get(
                    f"{base}/api/auth/token/events", params={"limit": 1000}, auth=auth
                ).json()
                if len(feed["events"]) == len(committed) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
        assert len(feed["events"]) == len(committed) == 3 + 30
        assert all(row.published_at is None for row in logged(url, api_key))

        broker.start()
        restarted = start(tmp_path, env, port)
        try:
            wait_until_healthy(base, restarted)
            messages = wait_for_delivery(
                broker.url, service_subjects(api_key), {row.id for row in committed}
            )
            wait_until_all_marked(url, api_key)
        finally:
            restarted.terminate()
            restarted.wait(timeout=15)
        log = logged(url, api_key)

    assert_each_event_delivered_once(messages, log, api_key)
    assert [m.event["id"] for m in messages] == [row.id for row in committed]


def test_two_serve_processes_under_concurrent_load_publish_each_event_once(
    backend: str, tmp_path: Path
) -> None:
    with migrated_database(backend, tmp_path) as url, own_broker(tmp_path) as broker:
        env = {**server_environment(url), "TOKENSTORE_EVENTS_NATS_URL": broker.url}
        with serving(tmp_path, env) as (first, _), serving(tmp_path, env) as (second, _):
            auth, tokens = tenant_with_tokens(first, 4)
            with (
                Load(first, auth, tokens, threads=4) as on_first,
                Load(second, auth, tokens, threads=4) as on_second,
            ):
                time.sleep(2.5)
            api_key = auth[0]
            messages = wait_for_delivery(
                broker.url, service_subjects(api_key), {row.id for row in logged(url, api_key)}
            )
            wait_until_all_marked(url, api_key)
            published = [published_by(first), published_by(second)]
        log = logged(url, api_key)

    assert committed_updates(on_first) > 20
    assert committed_updates(on_second) > 20
    assert_each_event_delivered_once(messages, log, api_key)
    assert len(log) == len(tokens) + committed_updates(on_first) + committed_updates(on_second)
    # Published once, not twice and deduplicated: the two relays' counts add up to the log.
    assert sum(published) == len(log)
