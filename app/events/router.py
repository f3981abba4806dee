"""The history API and the poll feed. Routes translate HTTP to one service call and back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.auth import ServiceDep
from app.context import ContextDep
from app.events import history
from app.events.changes import cloudevent
from app.events.schemas import TokenEventFeedOut, TokenHistoryOut
from app.http import PageEnd, PageStart
from app.transactions import UnitOfWorkDep

router = APIRouter(tags=["events"])


@router.get("/auth/token/history/{tokenIdentifier}", response_model=TokenHistoryOut)
async def token_history(
    context: ContextDep,
    caller: ServiceDep,
    work: UnitOfWorkDep,
    identifier: Annotated[str, Path(alias="tokenIdentifier", max_length=1024)],
    start: PageStart = 0,
    end: PageEnd = 100,
) -> TokenHistoryOut:
    found = await work.run_sync(
        history.history, service_api_key=caller.api_key, identifier=identifier,
        keys=context.keys, start=start, end=end,
    )  # fmt: skip
    return TokenHistoryOut(
        result_code="TOKEN_HISTORY_OK",
        result_message=f"{len(found.events)} of {found.total} events.",
        events=[cloudevent(event) for event in found.events],
        total_count=found.total,
    )


@router.get("/auth/token/events", response_model=TokenEventFeedOut)
async def token_events(
    caller: ServiceDep,
    work: UnitOfWorkDep,
    after: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=history.MAX_FEED)] = 100,
) -> TokenEventFeedOut:
    cursor = history.parse_cursor(after)
    page = await work.run_sync(
        history.feed, service_api_key=caller.api_key, after=cursor, limit=limit
    )
    return TokenEventFeedOut(
        events=[cloudevent(event) for event in page.events], cursor=str(page.cursor)
    )
