"""A resource server that caches tokenstore's introspection answers for 5 minutes, and
forgets a token's answers the moment tokenstore says the token changed.

Run it next to tokenstore (with TOKENSTORE_EVENTS_NATS_URL set) and NATS:

    TOKENSTORE_URL=http://127.0.0.1:8000 \\
    TOKENSTORE_API_KEY=<your service's apiKey> TOKENSTORE_API_SECRET=<its apiSecret> \\
    NATS_URL=nats://127.0.0.1:4222 \\
    python examples/resource_server_cache.py

It serves http://127.0.0.1:9000/photos: `GET` needs the scope `photos.read`, `DELETE`
needs `photos.write`, each with `Authorization: Bearer <access token>`.

How it works (docs/events.md):

- **Asking.** `POST /api/auth/introspection` with the service's credentials and
  `{"token": ..., "scopes": [...]}`: tokenstore answers an `action` (`OK`, or `UNAUTHORIZED`,
  `FORBIDDEN`, `BAD_REQUEST` with `responseContent`, the `WWW-Authenticate` value to send).
- **Keeping.** The answer is kept for 5 minutes (an `OK` never past the token's expiry),
  per token and per set of scopes asked for. The cache holds a SHA-256 of the token,
  never the token itself. Answers about tokens tokenstore does not know are not kept.
- **Forgetting.** The cache subscribes to `tokenstore.events.<apiKey>.>` on NATS. Every
  change of a token (update, revocation, deletion, purge) publishes an event naming the
  token's `tokenId` (the CloudEvents `subject`); the token's answers go at once.
- **Which token an event names.** The introspection answer does not carry the `tokenId`,
  and events never carry a token's value or hash. So the first time the cache meets a
  token it asks once, by value, for the token's history
  (`GET /api/auth/token/history/{token}?end=1`), whose events name the `tokenId`, and
  remembers it. tokenstore does not log request paths; a proxy between the two should not
  log them either, as this one carries a token value.

What it does not do:

- Bearer tokens only: a DPoP- or certificate-bound token needs its proof checked on
  every request, which a cache cannot do.
- While it is not connected to NATS it keeps nothing (and forgets everything when the
  connection drops, since events may have been missed meanwhile). While tokenstore cannot
  reach NATS, its events wait and the cache may answer from a stale entry: the 5 minutes
  are the bound on that.
- A token whose events retention has removed (`TOKENSTORE_EVENTS_RETENTION_DAYS`) has no
  history to name its `tokenId`: it is introspected on every request.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run
# time, and they name dependencies made inside `create_app`.
import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Self
from urllib.parse import quote

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg

log = logging.getLogger("resource_server")

CACHE_SECONDS = 300.0
CONNECT_SECONDS = 5.0
# Events after which the token is gone for good: its record goes too.
GONE = {"tokenstore.token.revoked", "tokenstore.token.deleted", "tokenstore.token.purged"}
# What to answer the client for each refusing action (Authlete's resource server guide).
STATUS = {"BAD_REQUEST": 400, "UNAUTHORIZED": 401, "FORBIDDEN": 403}


@dataclass(frozen=True, slots=True)
class Verdict:
    """tokenstore's answer about one token and the scopes a request needs."""

    action: str  # OK, BAD_REQUEST, UNAUTHORIZED, FORBIDDEN or INTERNAL_SERVER_ERROR
    response_content: str | None  # the WWW-Authenticate value when refused
    existent: bool
    subject: str | None
    expires_at: int  # milliseconds since 1970; 0: never (or unknown)

    @property
    def allowed(self) -> bool:
        return self.action == "OK"

    @classmethod
    def of(cls, answer: dict[str, Any]) -> Self:
        return cls(
            action=answer["action"],
            response_content=answer.get("responseContent"),
            existent=bool(answer.get("existent")),
            subject=answer.get("subject"),
            expires_at=answer.get("expiresAt") or 0,
        )


@dataclass
class _Token:
    """What the cache knows of one token: its `tokenId` and its answers by the scopes
    asked for, each with the moment (monotonic) it is kept until. `version` counts the
    token's events, so an answer asked for before one of them is not kept after it."""

    digest: str
    token_id: str
    answers: dict[tuple[str, ...], tuple[float, Verdict]] = field(default_factory=dict)
    version: int = 0


class IntrospectionCache:
    """Introspection through tokenstore, kept for 5 minutes, forgotten on a token's event.

    `tokenstore` is an `httpx.AsyncClient` with tokenstore's base URL and the service's
    Basic credentials (`auth=(apiKey, apiSecret)`). Use it as `async with cache:`."""

    def __init__(
        self,
        tokenstore: httpx.AsyncClient,
        *,
        api_key: str,
        nats_url: str,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._tokenstore = tokenstore
        self._subjects = f"tokenstore.events.{api_key}.>"
        self._nats_url = nats_url
        self._clock = clock
        self._wall_clock = wall_clock
        self._nats: Nats | None = None
        self._listening = False
        self._by_digest: dict[str, _Token] = {}
        self._by_id: dict[str, _Token] = {}
        self._next_sweep = 0.0

    async def __aenter__(self) -> Self:
        self._nats = Nats()
        # Once connected, reconnect for as long as it takes; but the first connection is
        # bounded: with unlimited reconnection nats-py would try a broker that is down
        # forever, and the server would hang at its start instead of saying why.
        try:
            await asyncio.wait_for(
                self._nats.connect(
                    servers=[self._nats_url],
                    name="resource-server-cache",
                    max_reconnect_attempts=-1,
                    error_cb=_quiet,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                ),
                CONNECT_SECONDS,
            )
        except TimeoutError:
            await self._nats.close()
            raise ConnectionError(f"NATS at {self._nats_url} did not answer") from None
        await self._nats.subscribe(self._subjects, cb=self._on_event)
        await self._nats.flush()  # the server has the subscription: no event is missed
        self._listening = True
        return self

    async def __aexit__(self, *_: object) -> None:
        self._listening = False
        if self._nats is not None:
            await self._nats.close()

    async def check(self, token: str, scopes: list[str]) -> Verdict:
        """May the bearer of `token` have what needs `scopes`? From the cache when it can."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        wanted = tuple(sorted(set(scopes)))
        now = self._clock()
        known = self._by_digest.get(digest)
        if known is not None and wanted in known.answers:
            until, verdict = known.answers[wanted]
            if now < until:
                return verdict
        self._sweep(now)
        if known is None and self._listening:
            known = await self._learn(token, digest)
        if known is None:
            return await self._introspect(token, wanted)
        version = known.version
        verdict = await self._introspect(token, wanted)
        # Kept only when no event of the token came meanwhile and the record is still the
        # cache's (a lost NATS connection forgets every record).
        if verdict.existent and known.version == version and self._by_digest.get(digest) is known:
            known.answers[wanted] = (now + self._seconds_to_keep(verdict), verdict)
        return verdict

    async def _introspect(self, token: str, scopes: tuple[str, ...]) -> Verdict:
        response = await self._tokenstore.post(
            "/api/auth/introspection", json={"token": token, "scopes": list(scopes)}
        )
        response.raise_for_status()
        return Verdict.of(response.json())

    async def _learn(self, token: str, digest: str) -> _Token | None:
        """The token's `tokenId`, from the first event of its history (asked by value, once);
        None when tokenstore knows no such token (or no event of it)."""
        response = await self._tokenstore.get(
            f"/api/auth/token/history/{quote(token, safe='')}", params={"start": 0, "end": 1}
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        events = response.json()["events"]
        if not events or not self._listening:
            return None
        token_id = events[0]["subject"]
        earlier = self._by_id.get(token_id)
        if earlier is not None and earlier.digest == digest:
            return earlier  # learnt by a request that asked at the same time
        if earlier is not None:
            # The token was regenerated (a new value, the same tokenId): the old value no
            # longer works, and its record goes.
            self._forget(earlier)
        known = _Token(digest, token_id)
        self._by_digest[digest] = self._by_id[token_id] = known
        return known

    def _seconds_to_keep(self, verdict: Verdict) -> float:
        if verdict.allowed and verdict.expires_at:
            return min(CACHE_SECONDS, verdict.expires_at / 1000 - self._wall_clock())
        return CACHE_SECONDS

    async def _on_event(self, message: Msg) -> None:
        event = json.loads(message.data)
        known = self._by_id.get(event["subject"])
        if known is None:
            return
        known.version += 1
        known.answers.clear()
        if event["type"] in GONE:
            self._forget(known)

    def _forget(self, known: _Token) -> None:
        self._by_id.pop(known.token_id, None)
        if self._by_digest.get(known.digest) is known:
            del self._by_digest[known.digest]

    def _sweep(self, now: float) -> None:
        """Now and then, drops the tokens whose answers have all expired."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + CACHE_SECONDS
        for known in list(self._by_id.values()):
            if all(until <= now for until, _ in known.answers.values()):
                self._forget(known)

    async def _disconnected(self) -> None:
        if not self._listening:
            return  # closing, or already forgotten
        log.warning("NATS connection lost: nothing is cached until it is back")
        self._listening = False
        self._by_digest.clear()
        self._by_id.clear()

    async def _reconnected(self) -> None:
        log.info("NATS connection back: caching again")
        self._listening = True


async def _quiet(error: Exception) -> None:
    log.debug("NATS: %s", error)


def create_app(cache: IntrospectionCache) -> FastAPI:
    """The resource server: its routes ask `cache` whether the bearer may come in."""
    app = FastAPI(title="photos")

    def needs(scope: str) -> Callable[..., Awaitable[Verdict]]:
        async def admitted(authorization: Annotated[str | None, Header()] = None) -> Verdict:
            scheme, _, token = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})
            try:
                verdict = await cache.check(token, [scope])
            except httpx.HTTPError as error:
                raise HTTPException(503, "the token store cannot be asked") from error
            if not verdict.allowed:
                status = STATUS.get(verdict.action, 500)
                raise HTTPException(
                    status, headers={"WWW-Authenticate": verdict.response_content or "Bearer"}
                )
            return verdict

        return admitted

    @app.get("/photos")
    async def list_photos(
        verdict: Annotated[Verdict, Depends(needs("photos.read"))],
    ) -> dict[str, Any]:
        return {"owner": verdict.subject, "photos": ["harbour.jpg", "lighthouse.jpg"]}

    @app.delete("/photos")
    async def delete_photos(
        verdict: Annotated[Verdict, Depends(needs("photos.write"))],
    ) -> dict[str, Any]:
        return {"owner": verdict.subject, "deleted": 2}

    return app


async def main() -> None:
    logging.basicConfig(level=logging.INFO)
    api_key = os.environ["TOKENSTORE_API_KEY"]
    tokenstore = httpx.AsyncClient(
        base_url=os.environ.get("TOKENSTORE_URL", "http://127.0.0.1:8000"),
        auth=(api_key, os.environ["TOKENSTORE_API_SECRET"]),
        timeout=5,
    )
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    async with (
        tokenstore,
        IntrospectionCache(tokenstore, api_key=api_key, nats_url=nats_url) as cache,
    ):
        config = uvicorn.Config(create_app(cache), host="127.0.0.1", port=9000)
        await uvicorn.Server(config).serve()


if __name__ == "__main__":
    asyncio.run(main())
