"""The application factory: `create_app(settings)` wires routers, errors and the database."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from sqlalchemy import Engine
from starlette.convertors import Convertor, register_url_convertor

from app import jobs, keyring, logs
from app.clients.router import router as clients_router
from app.clock import Clock, system_clock
from app.config import Settings
from app.credentials import CredentialReplica
from app.db import is_sqlite, make_engine, make_sessionmaker
from app.events.relay import relay_for
from app.events.router import router as events_router
from app.filelock import FileLock
from app.http import BodySizeLimit, StorableText, install_error_handlers
from app.metrics import metrics_endpoint
from app.openapi import document
from app.services.router import router as services_router
from app.services.router import self_router as services_self_router
from app.tokens.authorizations_router import router as authorizations_router
from app.tokens.revocation_router import router as revocation_router
from app.tokens.router import hot_router, update_router
from app.tokens.router import router as tokens_router
from app.transactions import AsyncDatabase, ThreadedDatabase, open_database

VERSION = "0.1.0"


class ServiceIdConvertor(Convertor[int]):
    """A v3 path's `{serviceId}`: 1 to 19 digits (an API key is a positive 64-bit number).
    Starlette's `int` would take any length, and Python's int() refuses over 4,300 digits
    with an error (a 500); longer is simply no route here (404)."""

    regex = "[0-9]{1,19}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("service_id", ServiceIdConvertor())
V3_PREFIX = "/api/{serviceId:service_id}"


def service_api() -> APIRouter:
    """The endpoints an authorization server calls with its service's credentials."""
    api = APIRouter()
    api.include_router(clients_router)
    api.include_router(tokens_router)
    api.include_router(authorizations_router)
    api.include_router(revocation_router)
    api.include_router(events_router)
    return api


# Young-generation collections every 10,000 net allocations instead of CPython's 700.
GC_THRESHOLDS = (10_000, 20, 20)


def tune_garbage_collector() -> None:
    """Collector pauses were the update's tail latency (bench/README.md): a full collection
    walked every object the imports made (FastAPI, Pydantic, SQLAlchemy) and stalled each
    request in flight. Once the app is built, those objects move out of the collector's
    sight (`gc.freeze`), and the young generation is collected less often; a request's
    garbage is still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def purge_turn_for(settings: Settings, engine: Engine) -> jobs.Turn:
    """Which process purges: an advisory lock on PostgreSQL (works across hosts), a lock
    file in the data directory for SQLite (whose processes share one host)."""
    if not is_sqlite(settings.database_url):
        return jobs.AdvisoryTurn(engine)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(settings.data_dir / "purge.lock")


@asynccontextmanager
async def periodic_purge(settings: Settings, clock: Clock) -> AsyncIterator[None]:
    """The purge inside `serve`, when configured: plain synchronous code in a thread, on an
    engine of its own (one connection for the batches, one for PostgreSQL's advisory lock)."""
    if settings.purge_interval_seconds <= 0:
        yield
        return
    purge_engine = make_engine(settings.database_url, pool_size=2)
    purge_turn = purge_turn_for(settings, purge_engine)
    purge = asyncio.create_task(
        jobs.purge_periodically(
            make_sessionmaker(purge_engine),
            clock=clock,
            interval_seconds=settings.purge_interval_seconds,
            batch_size=settings.purge_batch_size,
            turn=purge_turn,
            events_retention_days=settings.events_retention_days,
            events_publishing=settings.events_nats_url is not None,
        )
    )
    try:
        yield
    finally:
        purge.cancel()
        purge_engine.dispose()
        purge_turn.close()


@asynccontextmanager
async def keyed_rows_metric(settings: Settings) -> AsyncIterator[None]:
    """The counts of `tokenstore_keyed_rows` (app.keyring), refreshed in every process on
    an engine of its own, off the event loop."""
    if settings.keyed_rows_interval_seconds <= 0:
        yield
        return
    engine = make_engine(settings.database_url, pool_size=1)
    observe = asyncio.create_task(
        keyring.observe_periodically(
            keyring.read_sessions(engine),
            settings.key_ring,
            interval_seconds=settings.keyed_rows_interval_seconds,
        )
    )
    try:
        yield
    finally:
        observe.cancel()
        engine.dispose()


@asynccontextmanager
async def event_relay(
    settings: Settings, clock: Clock, database: AsyncDatabase | ThreadedDatabase
) -> AsyncIterator[None]:
    """The event relay (app.events.relay), woken by the database after commits."""
    relay = relay_for(
        database, clock=clock, nats_url=settings.events_nats_url,
        poll_seconds=settings.events_poll_seconds,
    )  # fmt: skip
    database.after_events = relay.wake
    relay.start()
    try:
        yield
    finally:
        database.after_events = None
        await relay.close()


def create_app(settings: Settings, *, clock: Clock = system_clock) -> FastAPI:
    settings.check_production()
    database = open_database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
        idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout_seconds,
    )
    credentials = CredentialReplica(settings.database_url, database.read)
    if isinstance(database, AsyncDatabase):
        database.after_announcements = credentials.delivered

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            periodic_purge(settings, clock),
            event_relay(settings, clock, database),
            keyed_rows_metric(settings),
        ):
            tune_garbage_collector()
            yield
        await credentials.close()
        await database.dispose()

    app = FastAPI(
        title="tokenstore",
        version=VERSION,
        summary="A self-hostable OAuth 2.0 token store, wire-compatible with Authlete.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # Parsed once: every operator request compares against each pair.
    app.state.operators = tuple(settings.operators())
    app.state.database = database
    app.state.credentials = credentials
    app.state.clock = clock

    install_error_handlers(app)
    # Routes are matched in order: the hot path (the update, introspection) comes first.
    app.include_router(update_router)
    for prefix in ("/api", V3_PREFIX):
        app.include_router(hot_router, prefix=prefix)
    app.include_router(services_router)
    app.include_router(service_api(), prefix="/api")
    # Authlete API v3 paths name the service; docs/api.md serves them with the same routes.
    app.include_router(service_api(), prefix=V3_PREFIX)
    app.include_router(services_self_router, prefix=V3_PREFIX)

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """The process is up (no database call)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    async def ready() -> dict[str, str]:
        """The database answers. A failure is 503 DATABASE_UNAVAILABLE (see app.http)."""
        await database.ping()
        return {"status": "ready"}

    if settings.bench_endpoints:

        @app.post("/bench/noop", include_in_schema=False)
        async def noop() -> dict[str, str]:
            """The framework floor of bench/: routing, the middleware, JSON out."""
            return {"action": "OK"}

    app.add_api_route(
        "/metrics", metrics_endpoint, methods=["GET"], tags=["operations"],
        response_class=Response, include_in_schema=False,
    )  # fmt: skip

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(
                app.routes, title=app.title, version=app.version, summary=app.summary
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(StorableText)
    app.add_middleware(logs.AccessLog)
    return app


def app_from_environment() -> FastAPI:
    """The factory uvicorn workers call: settings from the environment. A worker is a
    fresh process (`--workers N` spawns them), so it sets up its own logging too."""
    settings, _ = Settings().with_development_secrets()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)
