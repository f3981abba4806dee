"""The update names a token by its refresh token too; the token list filters by status and
answers the count alone when `end - start <= 0`. On both databases."""

from __future__ import annotations

import time

import pytest

from app.kit.hashing import token_hash
from tests.api.world import World, ok

pytestmark = pytest.mark.anyio

UPDATE_PATHS = [
    "/auth/token/update",
    "/api/auth/token/update",
    "/api/{serviceId}/auth/token/update",
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.mark.parametrize("path", UPDATE_PATHS)
async def test_an_update_finds_the_token_by_its_refresh_token_or_its_hash(
    world: World, path: str
) -> None:
    token = await world.token(scopes=["read"])
    other = await world.token(scopes=["read"])
    url = path.format(serviceId=world.api_key)
    by_value = await world.update(url, refreshToken=token["refreshToken"], scopes=["write"])
    assert (by_value["action"], by_value["tokenId"]) == ("OK", token["tokenId"])
    assert by_value["scopes"] == ["write"]
    assert "accessToken" not in by_value  # the access token's value is not known here
    by_hash = await world.update(url, refreshTokenHash=token_hash(token["refreshToken"]),
                                 scopes=["profile"])  # fmt: skip
    assert (by_hash["tokenId"], by_hash["scopes"]) == (token["tokenId"], ["profile"])
    assert by_hash["accessTokenHash"] == token_hash(token["accessToken"])
    # The other token was not touched.
    untouched = await world.update(url, tokenId=other["tokenId"])
    assert untouched["scopes"] == ["read"]


async def test_identifiers_are_taken_in_order_of_precedence(world: World) -> None:
    first = await world.token()
    second = await world.token()
    # accessTokenHash wins over refreshToken, refreshToken over refreshTokenHash and tokenId.
    chosen = await world.update(
        accessTokenHash=token_hash(first["accessToken"]), refreshToken=second["refreshToken"]
    )
    assert chosen["tokenId"] == first["tokenId"]
    chosen = await world.update(
        refreshToken=second["refreshToken"],
        refreshTokenHash=token_hash(first["refreshToken"]),
        tokenId=first["tokenId"],
    )
    assert chosen["tokenId"] == second["tokenId"]
    chosen = await world.update(
        refreshToken="", refreshTokenHash=token_hash(first["refreshToken"]),
        tokenId=second["tokenId"],
    )  # fmt: skip
    assert chosen["tokenId"] == first["tokenId"]
    # Precedence is final: an unknown refresh token does not fall back to tokenId.
    missed = await world.update(refreshToken="no such token", tokenId=first["tokenId"])
    assert missed["action"] == "NOT_FOUND"


async def test_an_access_token_value_is_no_refresh_token_and_the_reverse(world: World) -> None:
    token = await world.token()
    assert (await world.update(refreshToken=token["accessToken"]))["action"] == "NOT_FOUND"
    assert (await world.update(accessToken=token["refreshToken"]))["action"] == "NOT_FOUND"
    hashed = await world.update(refreshTokenHash=token_hash(token["accessToken"]))
    assert hashed["action"] == "NOT_FOUND"


async def test_a_malformed_refresh_token_hash_is_a_bad_request(world: World) -> None:
    await world.token()
    for bad in ("short", "A" * 44, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xt"):
        refused = await world.update(refreshTokenHash=bad)
        assert refused["action"] == "BAD_REQUEST", bad
        assert "refreshTokenHash" in refused["resultMessage"]
    form = await world.http.post(
        "/api/auth/token/update", data={"refreshTokenHash": "short"}, auth=world.auth
    )
    assert ok(form)["action"] == "BAD_REQUEST"


async def test_a_regeneration_named_by_refresh_token_shows_only_the_new_value(
    world: World,
) -> None:
    token = await world.token()
    regenerated = await world.update(
        refreshToken=token["refreshToken"], accessTokenValueUpdated=True
    )
    new_value = regenerated["accessToken"]
    assert new_value not in (None, token["accessToken"])
    assert regenerated["accessTokenHash"] == token_hash(new_value)
    # The refresh token still names the token; the old access token names nothing.
    again = await world.update(refreshToken=token["refreshToken"])
    assert (again["action"], again["accessTokenHash"]) == ("OK", token_hash(new_value))
    assert (await world.update(accessToken=token["accessToken"]))["action"] == "NOT_FOUND"


async def test_a_form_update_takes_the_refresh_token(world: World) -> None:
    token = await world.token()
    answer = await world.http.post(
        "/api/auth/token/update",
        data={"refreshToken": token["refreshToken"], "scopes": "write read"},
        auth=world.auth,
    )
    assert ok(answer)["scopes"] == ["write", "read"]
    assert ok(answer)["tokenId"] == token["tokenId"]


async def test_a_token_whose_tokens_both_expired_is_not_found_by_its_refresh_token(
    world: World,
) -> None:
    token = await world.token()
    past = now_ms() - 1_000
    await world.update(tokenId=token["tokenId"], accessTokenExpiresAt=past,
                       refreshTokenExpiresAt=past)  # fmt: skip
    assert (await world.update(refreshToken=token["refreshToken"]))["action"] == "NOT_FOUND"


async def test_another_services_refresh_token_is_not_found(world: World) -> None:
    token = await world.token()
    other = await World.create(world.http)
    answer = await other.update(refreshToken=token["refreshToken"])
    assert answer["action"] == "NOT_FOUND"


# --- The list ------------------------------------------------------------------------------


async def listing(world: World, **params: str | int) -> dict[str, object]:
    return ok(await world.http.get("/api/auth/token/get/list", params=params, auth=world.auth))


async def dead_and_alive(world: World) -> tuple[list[str], list[str]]:
    """Two live tokens and two dead ones (one without a refresh token)."""
    alive = [(await world.token())["tokenId"] for _ in range(2)]
    dead = []
    past = now_ms() - 1_000
    with_refresh = await world.token()
    await world.update(tokenId=with_refresh["tokenId"], accessTokenExpiresAt=past,
                       refreshTokenExpiresAt=past)  # fmt: skip
    without = await world.token(grantType="CLIENT_CREDENTIALS", subject=None)
    await world.update(tokenId=without["tokenId"], accessTokenExpiresAt=past)
    dead = [with_refresh["tokenId"], without["tokenId"]]
    # One whose access token expired but whose refresh token lives: still valid.
    half = await world.token()
    await world.update(tokenId=half["tokenId"], accessTokenExpiresAt=past)
    return [*alive, half["tokenId"]], dead


def ids(answer: dict[str, object]) -> list[str]:
    tokens = answer["accessTokens"]
    assert isinstance(tokens, list)
    return [token["tokenId"] for token in tokens]


async def test_the_list_filters_by_token_status(world: World) -> None:
    alive, dead = await dead_and_alive(world)
    default = await listing(world, end=100)
    valid = await listing(world, end=100, tokenStatus="VALID")
    assert ids(default) == ids(valid) == alive
    assert default["totalCount"] == valid["totalCount"] == 3
    invalid = await listing(world, end=100, tokenStatus="INVALID")
    assert (ids(invalid), invalid["totalCount"]) == (dead, 2)
    everything = await listing(world, end=100, tokenStatus="ALL")
    assert sorted(ids(everything)) == sorted(alive + dead)
    assert everything["totalCount"] == 5
    paged = await listing(world, start=1, end=3, tokenStatus="ALL")
    assert ids(paged) == ids(everything)[1:3]
    assert paged["totalCount"] == 5
    # Filters combine with the status.
    by_subject = await listing(world, end=100, tokenStatus="INVALID", subject="alice")
    assert ids(by_subject) == dead[:1]


async def test_an_unknown_token_status_is_refused(world: World) -> None:
    for bad in ("valid", "EXPIRED", ""):
        answer = await world.http.get(
            "/api/auth/token/get/list", params={"tokenStatus": bad}, auth=world.auth
        )
        assert answer.status_code == 400, bad


@pytest.mark.parametrize(("start", "end"), [(0, 0), (3, 3), (4, 1)])
async def test_an_empty_range_answers_the_total_count_only(
    world: World, start: int, end: int
) -> None:
    for _ in range(2):
        await world.token()
    answer = await listing(world, start=start, end=end)
    assert answer["totalCount"] == 2
    assert "accessTokens" not in answer
    assert (answer["start"], answer["end"]) == (start, end)
    unknown = await listing(world, start=start, end=end, clientIdentifier="nobody")
    assert (unknown["totalCount"], "accessTokens" in unknown) == (0, False)


async def test_the_page_bound_still_holds(world: World) -> None:
    for params in ({"start": 0, "end": 1001}, {"start": -1, "end": 5}):
        answer = await world.http.get("/api/auth/token/get/list", params=params, auth=world.auth)
        assert answer.status_code == 400, params
    assert ids(await listing(world, start=0, end=1000)) == []
