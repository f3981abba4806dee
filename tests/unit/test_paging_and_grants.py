"""Pure pieces of the lists and connected apps: the page size and the granted scopes."""

from __future__ import annotations

import pytest

from app.errors import InvalidValue
from app.kit.paging import MAX_PAGE, check_range, page_size
from app.tokens.rules import GrantedScopes, granted_scopes


@pytest.mark.parametrize(
    ("start", "end", "size"),
    [(0, 5, 5), (3, 3, 0), (7, 2, 0), (0, MAX_PAGE, MAX_PAGE), (10, 10 + MAX_PAGE, MAX_PAGE)],
)
def test_a_token_page_is_end_minus_start_and_nothing_when_that_is_not_positive(
    start: int, end: int, size: int
) -> None:
    assert page_size(start, end) == size


@pytest.mark.parametrize(("start", "end"), [(-1, 5), (0, MAX_PAGE + 1), (5, 6 + MAX_PAGE)])
def test_a_token_page_out_of_bounds_is_refused(start: int, end: int) -> None:
    with pytest.raises(InvalidValue):
        page_size(start, end)


def test_management_lists_still_refuse_a_reversed_range() -> None:
    check_range(3, 3)
    with pytest.raises(InvalidValue):
        check_range(4, 3)


def test_no_live_token_is_no_grant() -> None:
    assert granted_scopes([]) == GrantedScopes(None, None, 0)


def test_granted_scopes_are_the_newest_tokens_and_the_union_of_all() -> None:
    granted = granted_scopes(
        [(["read", "profile"], 30), (["write"], 50), (["profile", "read"], 40)]
    )
    assert granted.latest == ("profile", "read")
    assert granted.merged == ("read", "profile", "write")
    assert granted.modified_at == 50


def test_a_token_without_scopes_still_is_a_grant() -> None:
    assert granted_scopes([((), 7)]) == GrantedScopes((), (), 7)
