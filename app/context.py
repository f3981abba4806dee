"""What a request's handlers take from the application, read in one place: the request's
time (`now`, from the app's clock), the key of the at-rest digests, the settings and the
database. Routes declare `ContextDep`; the hot path calls `context_of` itself, which spares
it a dependency resolution on every request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.kit.keys import KeyRing
from app.transactions import AsyncDatabase, ThreadedDatabase


@dataclass(frozen=True, slots=True)
class Context:
    now: int  # milliseconds since 1970, read once per request
    keys: KeyRing  # every listed hash secret, the current one first
    settings: Settings
    database: AsyncDatabase | ThreadedDatabase


def context_of(request: Request) -> Context:
    state = request.app.state
    settings: Settings = state.settings
    keys = settings.key_ring
    return Context(now=state.clock(), keys=keys, settings=settings,
                   database=state.database)  # fmt: skip


async def request_context(request: Request) -> Context:
    return context_of(request)


ContextDep = Annotated[Context, Depends(request_context)]
