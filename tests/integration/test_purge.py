"""The expired-token purge: batches, what stays, and running beside live traffic."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.clients import service as clients
from app.clients.service import ClientSpec
from app.config import Settings
from app.db import make_sessionmaker
from app.events.changes import EventType, Origin, TokenFacts
from app.events.service import new_event
from app.filelock import FileLock
from app.jobs import AdvisoryTurn, purge_expired, purge_in_turn
from app.kit.keys import KeyRing
from app.main import purge_turn_for
from app.services import service as services
from app.services.service import ServiceSpec
from app.tokens import repository
from app.tokens.models import DpopProofRow, TokenRow

NOW = 1_900_000_000_000
KEYS = KeyRing.single(b"k" * 32)


def seed(engine: Engine, rows: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """A service and client with tokens in the given expiry states, committed."""
    with Session(engine) as session, session.begin():
        service, _ = services.create(
            session,
            spec=ServiceSpec("purge", None, (), None, None),
            keys=KEYS,
            now=NOW,
        )
        client = clients.create(
            session, service_api_key=service.api_key, spec=ClientSpec(None, None, None, None, None),
            keys=KEYS, now=NOW,
        ).row  # fmt: skip
        ids = []
        for index, fields in enumerate(rows):
            token_id = f"purge-{service.api_key}-{index}"
            defaults: dict[str, Any] = {
                "token_id": token_id, "service_api_key": service.api_key,
                "client_id": client.client_id, "subject": "s", "grant_type": "PASSWORD",
                "access_key": f"{service.api_key}-a{index}", "access_hash": f"h{index:042d}",
                "scopes": [], "properties": [], "persistent": False,
                "for_external_attachment": False, "created_at": NOW, "updated_at": NOW,
                "refresh_key": None, "refresh_expires_at": None,
            }  # fmt: skip
            session.add(TokenRow(**{**defaults, **fields}))
            ids.append(token_id)
        return service.api_key, ids


def remaining(engine: Engine, ids: list[str]) -> set[str]:
    with engine.connect() as connection:
        rows = connection.execute(select(TokenRow.token_id).where(TokenRow.token_id.in_(ids)))
        return set(rows.scalars())


def test_only_tokens_whose_both_tokens_expired_are_purged_in_batches(engine: Engine) -> None:
    states: list[dict[str, Any]] = [
        {"access_expires_at": NOW - 1},  # dead: no refresh token
        {"access_expires_at": NOW},  # dead: expires exactly now
        {"access_expires_at": NOW - 5, "refresh_key": "r1", "refresh_expires_at": NOW - 5},
        {"access_expires_at": NOW - 5, "refresh_key": "r2", "refresh_expires_at": NOW + 5},
        {"access_expires_at": NOW + 1},  # alive
        {"access_expires_at": 0, "persistent": True},  # persistent: never purged
    ]
    states.extend({"access_expires_at": NOW - 100 - i} for i in range(7))
    for state in states:
        if "refresh_key" in state:
            state["refresh_key"] = f"{state['refresh_key']}-{id(states)}"
    _, ids = seed(engine, states)
    report = purge_expired(make_sessionmaker(engine), now=NOW, batch_size=3)
    assert report.tokens >= 10  # other tests' expired tokens may go too
    assert remaining(engine, ids) == {ids[3], ids[4], ids[5]}


def test_expired_dpop_replay_records_are_forgotten(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        now = NOW - 10  # before either expires: nothing here is pruned on the way
        assert repository.remember_proof(session, key=f"old-{NOW}", expires_at=NOW - 1, now=now)
        assert repository.remember_proof(session, key=f"new-{NOW}", expires_at=NOW + 1, now=now)
    purge_expired(make_sessionmaker(engine), now=NOW, batch_size=10)
    with engine.connect() as connection:
        keys = set(connection.execute(select(DpopProofRow.key)).scalars())
    assert "old-" + str(NOW) not in keys
    assert "new-" + str(NOW) in keys


def test_one_worker_purges_and_another_takes_over_when_it_is_gone(
    engine: Engine, tmp_path: Path
) -> None:
    """Two processes' turns as `serve` makes them: an advisory lock on PostgreSQL (so it
    holds across hosts), a lock file on SQLite."""
    sessions = make_sessionmaker(engine)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False), data_dir=tmp_path
    )
    first, second = purge_turn_for(settings, engine), purge_turn_for(settings, engine)
    expected = FileLock if engine.dialect.name == "sqlite" else AdvisoryTurn
    assert isinstance(first, expected)
    try:
        _, ids = seed(engine, [{"access_expires_at": NOW - 1}])
        assert purge_in_turn(sessions, first, now=NOW, batch_size=10) is not None
        assert remaining(engine, ids) == set()

        _, ids = seed(engine, [{"access_expires_at": NOW - 1}])
        assert purge_in_turn(sessions, second, now=NOW, batch_size=10) is None  # skipped
        assert remaining(engine, ids) == set(ids)
        assert purge_in_turn(sessions, first, now=NOW, batch_size=10) is not None  # again
        assert remaining(engine, ids) == set()

        first.close()  # the purging worker exits
        _, ids = seed(engine, [{"access_expires_at": NOW - 1}])
        assert purge_in_turn(sessions, second, now=NOW, batch_size=10) is not None
        assert remaining(engine, ids) == set()
    finally:
        first.close()
        second.close()


def test_the_purge_runs_beside_live_updates_without_losing_live_tokens(engine: Engine) -> None:
    dead = [{"access_expires_at": NOW - 1 - i} for i in range(300)]
    live = [{"access_expires_at": NOW + 10_000_000} for _ in range(20)]
    _, ids = seed(engine, dead + live)
    live_ids = ids[len(dead) :]
    sessions = make_sessionmaker(engine)
    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_updating() -> None:
        try:
            while not stop.is_set():
                for token_id in live_ids:
                    with sessions.begin() as session:
                        service_api_key = int(token_id.split("-")[1])
                        target = repository.load_for_update(
                            session, service_api_key, access_key=None, token_id=token_id,
                            scope_names=None, keys=KEYS,
                        )  # fmt: skip
                        assert target is not None
                        token = target.token
                        repository.save(
                            session, token, token.state, key=KEYS.current, now=NOW,
                            event=new_event(
                                EventType.UPDATED,
                                TokenFacts(service_api_key, token.token_id, token.client_id,
                                           token.subject),
                                Origin.of_service(service_api_key), now=NOW,
                                before=token.state, after=token.state,
                            ),
                        )  # fmt: skip
        except BaseException as error:  # reported by the assertions below
            errors.append(error)

    writer = threading.Thread(target=keep_updating)
    writer.start()
    try:
        report = purge_expired(sessions, now=NOW, batch_size=25)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert errors == []
    assert report.tokens >= len(dead)
    assert remaining(engine, ids) == set(live_ids)


def test_the_purge_command_reports_what_it_removed(settings: Settings, tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "TOKENSTORE_DATABASE_URL": settings.database_url,
        "TOKENSTORE_DATA_DIR": str(tmp_path),
        "TOKENSTORE_HASH_SECRET": "x" * 40,
        "TOKENSTORE_ADMIN_API_KEY": "op",
        "TOKENSTORE_ADMIN_API_SECRET": "y" * 40,
    }
    result = subprocess.run(
        [str(Path(sys.executable).with_name("tokenstore")), "purge-expired", "--batch-size", "50"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("removed ")
    assert "expired tokens" in result.stdout
