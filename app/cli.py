"""`tokenstore serve`, `migrate`, `purge-expired`, and the key rotation's `keys` and `rekey`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys

import uvicorn
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from uvicorn.supervisors import Multiprocess

from app import jobs, keyring, logs, metrics, server
from app.clock import system_clock
from app.config import ConfigError, Settings
from app.db import is_sqlite, make_engine, make_sessionmaker
from app.migrate import alembic_config, upgrade

log = logging.getLogger("tokenstore")


def _settings() -> Settings:
    settings, created = Settings().with_development_secrets()
    settings.check_production()
    if created is not None:
        print(  # noqa: T201 - told once, on the terminal, never through the logs
            f"tokenstore: generated development secrets in {created} (mode 0600).\n"
            "  The operator credentials for /api/service/* are its adminApiKey and\n"
            "  adminApiSecret (HTTP Basic). Set TOKENSTORE_ADMIN_API_KEY,\n"
            "  TOKENSTORE_ADMIN_API_SECRET and TOKENSTORE_HASH_SECRET to use your own.",
            file=sys.stderr,
        )
    return settings


def migrate(settings: Settings, *, force: bool = False) -> None:
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        upgrade(engine)
        log.info("database schema is at head")
        check_keys(engine, settings, force=force)
    finally:
        engine.dispose()


def check_keys(engine: Engine, settings: Settings, *, force: bool) -> None:
    """Refuses to start when rows depend on a hash secret that is no longer listed: they
    could never be used again. `--force` starts anyway, saying what is lost."""
    problem = keyring.refusal(keyring.count(keyring.read_sessions(engine), settings.key_ring))
    if problem is None:
        return
    if force:
        log.warning("starting with --force although %s: they cannot be used", problem)
        return
    raise ConfigError(
        f"Refusing to start: {problem}. Without its key a row cannot be used: list the key "
        "again in TOKENSTORE_HASH_SECRETS (after the current one) until `tokenstore keys` "
        "shows nothing depends on it, or start with --force to accept losing those rows."
    )


def _schema_at_head(settings: Settings) -> None:
    if not schema_is_current(settings):
        raise ConfigError("The database schema is not at head; run `tokenstore migrate` first.")


def keys(settings: Settings, *, as_json: bool) -> None:
    _schema_at_head(settings)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        rows = keyring.count(keyring.read_sessions(engine), settings.key_ring)
    finally:
        engine.dispose()
    print(json.dumps(rows.document(), indent=2) if as_json else rows.table())  # noqa: T201


def rekey(settings: Settings, *, batch_size: int, rest_ratio: float) -> None:
    _schema_at_head(settings)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        report = keyring.rekey(
            engine, settings.key_ring, batch_size=batch_size, rest_ratio=rest_ratio
        )
    finally:
        engine.dispose()
    print(report.summary())  # noqa: T201 - the command's answer


def purge(settings: Settings, *, batch_size: int) -> None:
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        report = jobs.purge_expired(
            make_sessionmaker(engine), now=system_clock(), batch_size=batch_size,
            events_retention_days=settings.events_retention_days,
            events_publishing=settings.events_nats_url is not None,
        )  # fmt: skip
    finally:
        engine.dispose()
    print(  # noqa: T201 - the command's answer
        f"removed {report.tokens} expired tokens, {report.proofs} DPoP replay records and "
        f"{report.events} events past their retention"
    )


def schema_is_current(settings: Settings) -> bool:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return current == head


def serve(settings: Settings, *, host: str, port: int, workers: int, force: bool = False) -> None:
    if is_sqlite(settings.database_url):
        migrate(settings, force=force)  # the embedded default brings itself up to date
    else:
        _schema_at_head(settings)
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            check_keys(engine, settings, force=force)
        finally:
            engine.dispose()
    if settings.env == "development":
        log.info("development mode: secrets come from %s", settings.data_dir / "dev-secrets.json")
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metrics here; /metrics adds them up (app.metrics).
        with metrics.multiprocess_directory() as directory:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
            _run(settings, host=host, port=port, workers=workers)
        return
    _run(settings, host=host, port=port, workers=workers)


def _run(settings: Settings, *, host: str, port: int, workers: int) -> None:
    config = uvicorn.Config(
        "app.main:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # app.logs.AccessLog logs route templates, never raw paths
        log_config=None,
        proxy_headers=False,
        http=server.PROTOCOL,  # header limits and request timeouts (app.server)
        timeout_keep_alive=settings.keep_alive_seconds,
    )
    if workers == 1:
        uvicorn.Server(config).run()
        return
    sock = config.bind_socket()
    # uvicorn makes this shared socket with proto 0, so asyncio does not set TCP_NODELAY on
    # the connections the workers accept, and each response's second write waits for the
    # client's delayed ACK (about 40 ms). Linux copies the option from the listening socket
    # to every accepted one.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenstore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the HTTP service")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8080)
    serve_parser.add_argument("--workers", type=int, default=1)
    serve_parser.add_argument(
        "--purge-interval",
        type=int,
        default=None,
        metavar="SECONDS",
        help="purge expired tokens every SECONDS inside the server (default: never, or "
        "TOKENSTORE_PURGE_INTERVAL_SECONDS)",
    )
    force_help = (
        "start even when rows depend on a hash secret that TOKENSTORE_HASH_SECRETS no "
        "longer lists (they are lost)"
    )
    serve_parser.add_argument("--force", action="store_true", help=force_help)
    migrate_parser = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate_parser.add_argument("--force", action="store_true", help=force_help)
    keys_parser = commands.add_parser(
        "keys", help="count the rows of each kind that depend on each hash secret key id"
    )
    keys_parser.add_argument("--json", action="store_true", help="print a JSON object")
    rekey_parser = commands.add_parser(
        "rekey", help="move every token to the current hash secret, in batches, online"
    )
    rekey_parser.add_argument(
        "--batch-size", type=int, default=keyring.REKEY_BATCH_SIZE, metavar="N",
        help=f"token rows per transaction (default {keyring.REKEY_BATCH_SIZE})",
    )  # fmt: skip
    rekey_parser.add_argument(
        "--rest-ratio", type=float, default=keyring.REKEY_REST_RATIO, metavar="R",
        help="after each batch, rest R times as long as the batch took: the job works at "
        f"most 1/(1+R) of the time (default {keyring.REKEY_REST_RATIO:g})",
    )  # fmt: skip
    purge_parser = commands.add_parser(
        "purge-expired", help="delete tokens whose access and refresh tokens have expired"
    )
    purge_parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args(argv)

    if getattr(args, "purge_interval", None) is not None:
        # Workers build their settings from the environment: hand the flag on through it.
        os.environ["TOKENSTORE_PURGE_INTERVAL_SECONDS"] = str(args.purge_interval)
    try:
        settings = _settings()
        logs.configure(settings.log_level, settings.log_format)
        if args.command == "migrate":
            migrate(settings, force=args.force)
        elif args.command == "purge-expired":
            purge(settings, batch_size=args.batch_size or settings.purge_batch_size)
        elif args.command == "keys":
            keys(settings, as_json=args.json)
        elif args.command == "rekey":
            if args.batch_size < 1:
                parser.error("--batch-size must be at least 1")
            if not 0 <= args.rest_ratio <= 1000:  # NaN fails both comparisons
                parser.error("--rest-ratio must be between 0 and 1000")
            rekey(settings, batch_size=args.batch_size, rest_ratio=args.rest_ratio)
        else:
            serve(settings, host=args.host, port=args.port, workers=args.workers, force=args.force)
    except ConfigError as error:
        print(f"tokenstore: {error}", file=sys.stderr)  # noqa: T201
        return 2
    except OperationalError as error:
        # The driver's first line says why (refused, unknown host, authentication); the
        # address is shown without its password.
        reason = str(error.orig).splitlines()[0] if error.orig else type(error).__name__
        address = make_url(settings.database_url).render_as_string(hide_password=True)
        print(  # noqa: T201
            f"tokenstore: the database at {address} cannot be reached: {reason}. Start it, "
            "or fix TOKENSTORE_DATABASE_URL.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
