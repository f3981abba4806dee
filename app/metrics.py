"""Prometheus metrics: requests by route and status, latency, update outcomes, pool use.

With several workers (`serve --workers N`) each process writes its samples to
PROMETHEUS_MULTIPROC_DIR and `/metrics` aggregates them (prometheus_client's multiprocess
mode), so one scrape sees the whole server.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy.pool import Pool, QueuePool

REQUESTS = Counter(
    "tokenstore_http_requests_total",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "tokenstore_http_request_duration_seconds",
    "Time from request to response, by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
UPDATES = Counter(
    "tokenstore_token_updates_total",
    "Outcomes of /auth/token/update by action.",
    ["action"],
)
POOL_IN_USE = Gauge(
    "tokenstore_db_pool_connections_in_use",
    "Database connections checked out of the pool.",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "tokenstore_db_pool_size",
    "Database connections the pool keeps (overflow excluded).",
    multiprocess_mode="livesum",
)
# The event relay (app.events.relay): only the process that relays sets the gauge.
EVENTS_WAITING = Gauge(
    "tokenstore_events_waiting",
    "Token events committed and not yet relayed (no cursor position, or not yet published).",
    multiprocess_mode="livemax",
)
EVENTS_PUBLISHED = Counter(
    "tokenstore_events_published_total",
    "Token events that NATS JetStream acknowledged.",
)
EVENTS_PUBLISH_FAILURES = Counter(
    "tokenstore_events_publish_failures_total",
    "Publishing rounds that stopped at a failure (the broker down or slow).",
)
# Key rotation (app.keyring): rows per kind and key id, counted by each process every
# TOKENSTORE_KEYED_ROWS_INTERVAL_SECONDS (a table scan, so never per scrape); a scrape
# shows the latest count of the living processes.
KEYED_ROWS = Gauge(
    "tokenstore_keyed_rows",
    "Rows that depend on each hash secret, by kind (tokens, unsealed_tokens, "
    "service_secrets, service_access_tokens, client_secrets) and key id.",
    ["kind", "key_id"],
    multiprocess_mode="livemostrecent",
)


_DIRECTORY = re.compile(r"tokenstore-metrics-(\d+)-\w+")


@contextmanager
def multiprocess_directory() -> Iterator[Path]:
    """A fresh directory for the workers' samples, named after this process and removed
    when it ends. Those left by servers that died without cleaning up (SIGKILL) are
    removed first, so they do not pile up in the temporary directory."""
    root = Path(tempfile.gettempdir())
    for stale in root.glob("tokenstore-metrics-*"):
        match = _DIRECTORY.fullmatch(stale.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(stale, ignore_errors=True)
    directory = Path(tempfile.mkdtemp(prefix=f"tokenstore-metrics-{os.getpid()}-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route, method).observe(seconds)


def observe_pool(pool: Pool, *, hot_path_in_use: int = 0) -> None:
    """The ORM's pool, plus the connections the hot path's own pool has checked out
    (PostgreSQL, app.transactions.DriverPool)."""
    if isinstance(pool, QueuePool):
        POOL_IN_USE.set(pool.checkedout() + hot_path_in_use)
        POOL_SIZE.set(pool.size())


def observe_keyed_rows(
    samples: Iterable[tuple[str, str, int]], *, gone: Iterable[tuple[str, str]] = ()
) -> None:
    """Sets `tokenstore_keyed_rows` to each (kind, key id, rows), and to 0 for the labels of
    an earlier count that this one no longer has (a multiprocess gauge cannot drop them)."""
    for kind, key_id, rows in samples:
        KEYED_ROWS.labels(kind, key_id).set(rows)
    for kind, key_id in gone:
        KEYED_ROWS.labels(kind, key_id).set(0)


def metrics_endpoint(request: Request) -> Response:
    database = request.app.state.database
    driver = getattr(database, "driver", None)
    observe_pool(database.pool, hot_path_in_use=driver.in_use if driver is not None else 0)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
