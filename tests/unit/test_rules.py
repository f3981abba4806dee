"""The update rules (docs/api.md, rules 1 to 11), table-driven, with a fixed `now`, no database."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.errors import BadRequestAction
from app.kit.durations import parse_duration
from app.kit.hashing import token_hash
from app.tokens.rules import (
    AuthzElement,
    AuthzElementInput,
    Lookup,
    Property,
    PropertyInput,
    ScopeDurations,
    ScopePolicy,
    TokenState,
    UpdateRequest,
    apply_update,
    choose_identifier,
    filter_scopes,
    is_alive,
    response_expires_at,
    scope_durations,
)

NOW = 1_700_000_000_000
HOUR_MS = 3_600_000
OLD_VALUE = "old-value-" + "x" * 33
NEW_VALUE = "new-value-" + "y" * 33
THUMB = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"  # RFC 7638 section 3.1's example

TOKEN = TokenState(
    access_hash=token_hash(OLD_VALUE),
    scopes=("read",),
    access_expires_at=NOW + HOUR_MS,
    persistent=False,
    refresh_expires_at=NOW + 24 * HOUR_MS,
)
POLICY = ScopePolicy(
    supported={
        "read": ScopeDurations(access_seconds=600, refresh_seconds=7200),
        "write": ScopeDurations(access_seconds=300, refresh_seconds=None),
        "admin": ScopeDurations(),
        "profile": ScopeDurations(access_seconds=10000, refresh_seconds=3600),
    }
)


def update(
    request: UpdateRequest, token: TokenState = TOKEN, policy: ScopePolicy = POLICY
) -> TokenState:
    return apply_update(token, request, policy, now=NOW, new_value=NEW_VALUE).state


# --- Rule 1 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"access_token": "v", "access_token_hash": THUMB, "token_id": "t"}, (Lookup.VALUE, "v")),
        ({"access_token": None, "access_token_hash": THUMB, "token_id": "t"}, (Lookup.HASH, THUMB)),
        ({"access_token": "", "access_token_hash": None, "token_id": "t"}, (Lookup.TOKEN_ID, "t")),
        (
            {"access_token_hash": THUMB, "refresh_token": "r", "refresh_token_hash": THUMB},
            (Lookup.HASH, THUMB),
        ),
        (
            {"refresh_token": "r", "refresh_token_hash": THUMB, "token_id": "t"},
            (Lookup.REFRESH_VALUE, "r"),
        ),
        (
            {"refresh_token": "", "refresh_token_hash": THUMB, "token_id": "t"},
            (Lookup.REFRESH_HASH, THUMB),
        ),
    ],
    ids=[
        "value wins over hash and id",
        "hash wins over id",
        "empty value counts as absent",
        "access token hash wins over the refresh token",
        "refresh token wins over its hash and id",
        "refresh token hash wins over id",
    ],
)
def test_the_token_is_named_by_value_then_hash_then_token_id(
    given: dict[str, str | None], expected: tuple[Lookup, str]
) -> None:
    names: dict[str, str | None] = {"access_token": None, "access_token_hash": None,
                                    "token_id": None}  # fmt: skip
    names.update(given)
    identifier = choose_identifier(**names)
    assert (identifier.kind, identifier.text) == expected


def test_a_request_naming_no_token_is_a_bad_request() -> None:
    with pytest.raises(BadRequestAction, match="refreshTokenHash or tokenId"):
        choose_identifier(
            access_token=None, access_token_hash="", token_id=None, refresh_token="",
            refresh_token_hash=None,
        )  # fmt: skip


@pytest.mark.parametrize("bad_hash", ["abc", THUMB + "A", THUMB[:-1] + "B", THUMB[:-1] + "="])
@pytest.mark.parametrize("field", ["access_token_hash", "refresh_token_hash"])
def test_a_malformed_hash_is_a_bad_request(field: str, bad_hash: str) -> None:
    names: dict[str, str | None] = {"access_token": None, "access_token_hash": None,
                                    "token_id": None, field: bad_hash}  # fmt: skip
    wire_name = "accessTokenHash" if field == "access_token_hash" else "refreshTokenHash"
    with pytest.raises(BadRequestAction, match=wire_name):
        choose_identifier(**names)


@pytest.mark.parametrize(
    ("state", "alive"),
    [
        (TOKEN, True),
        (replace(TOKEN, access_expires_at=NOW), True),  # refresh token still valid
        (replace(TOKEN, access_expires_at=NOW, refresh_expires_at=NOW), False),
        (replace(TOKEN, access_expires_at=NOW - 1, refresh_expires_at=None), False),
        (replace(TOKEN, access_expires_at=NOW + 1, refresh_expires_at=None), True),
        (replace(TOKEN, access_expires_at=0, persistent=True, refresh_expires_at=NOW), True),
    ],
    ids=[
        "both valid",
        "access expired exactly now, refresh valid",
        "both expired exactly now",
        "no refresh token and access expired",
        "no refresh token and access valid for one more millisecond",
        "persistent access token",
    ],
)
def test_a_token_is_alive_until_both_of_its_tokens_have_expired(
    state: TokenState, alive: bool
) -> None:
    assert is_alive(state, NOW) is alive


# --- Rules 2 and 3 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "token", "expires_at", "persistent"),
    [
        (UpdateRequest(access_token_expires_at=NOW + 5), TOKEN, NOW + 5, False),
        (UpdateRequest(access_token_expires_at=0), TOKEN, NOW + HOUR_MS, False),
        (UpdateRequest(access_token_expires_at=-1), TOKEN, NOW + HOUR_MS, False),
        (UpdateRequest(access_token_expires_at=None), TOKEN, NOW + HOUR_MS, False),
        (UpdateRequest(access_token_expires_at=NOW - 5), TOKEN, NOW - 5, False),
        (UpdateRequest(access_token_persistent=True), TOKEN, NOW + HOUR_MS, True),
        (
            UpdateRequest(access_token_persistent=True, access_token_expires_at=NOW + 5),
            TOKEN,
            NOW + HOUR_MS,
            True,
        ),
        (
            UpdateRequest(access_token_persistent=False),
            replace(TOKEN, persistent=True),
            NOW + HOUR_MS,
            True,
        ),
        (
            UpdateRequest(access_token_persistent=False, access_token_expires_at=NOW + 5),
            replace(TOKEN, persistent=True),
            NOW + 5,
            False,
        ),
        (
            UpdateRequest(access_token_expires_at=NOW + 5),
            replace(TOKEN, persistent=True),
            NOW + 5,
            False,
        ),
    ],
    ids=[
        "positive expiry sets it",
        "zero leaves it",
        "negative leaves it",
        "absent leaves it",
        "past expiry is accepted",
        "persistent makes it never expire",
        "persistent ignores an explicit expiry",
        "false alone keeps a persistent token persistent",
        "false with an expiry makes it expiring again",
        "an expiry alone makes a persistent token expiring again",
    ],
)
def test_expiry_and_persistence(
    request_: UpdateRequest, token: TokenState, expires_at: int, persistent: bool
) -> None:
    state = update(request_, token)
    assert (state.access_expires_at, state.persistent) == (expires_at, persistent)


def test_a_persistent_token_answers_with_expiry_zero() -> None:
    assert response_expires_at(update(UpdateRequest(access_token_persistent=True))) == 0
    assert response_expires_at(TOKEN) == NOW + HOUR_MS


def test_an_expiry_after_the_year_9999_is_a_bad_request() -> None:
    with pytest.raises(BadRequestAction, match="year 9999"):
        update(UpdateRequest(access_token_expires_at=2**62))


# --- Rule 4 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "requestable", "expected"),
    [
        (None, None, ("read",)),
        ((), None, ()),
        (("write", "read", "write"), None, ("write", "read")),
        (("unknown", "write"), None, ("write",)),
        (("read", "write", "admin"), frozenset({"read", "admin", "unknown"}), ("read", "admin")),
        (("unknown",), frozenset({"unknown"}), ()),
    ],
    ids=[
        "absent leaves the scopes",
        "empty clears them",
        "order kept and duplicates dropped",
        "unsupported scopes dropped",
        "client's requestable scopes restrict",
        "a requestable scope the service does not support is still dropped",
    ],
)
def test_new_scopes_are_filtered_by_service_and_client(
    requested: tuple[str, ...] | None,
    requestable: frozenset[str] | None,
    expected: tuple[str, ...],
) -> None:
    policy = replace(POLICY, requestable=requestable)
    assert update(UpdateRequest(scopes=requested), policy=policy).scopes == expected


# --- Rule 5 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "token", "access_expires_at", "refresh_expires_at"),
    [
        (
            UpdateRequest(scopes=("read", "write"), access_expiry_on_scope_update=True),
            TOKEN,
            NOW + 300_000,
            TOKEN.refresh_expires_at,
        ),
        (
            UpdateRequest(scopes=("profile",), access_expiry_on_scope_update=True),
            TOKEN,
            NOW + 10_000_000,
            TOKEN.refresh_expires_at,
        ),
        (
            UpdateRequest(scopes=("admin",), access_expiry_on_scope_update=True),
            TOKEN,
            TOKEN.access_expires_at,
            TOKEN.refresh_expires_at,
        ),
        (
            UpdateRequest(scopes=("read",), access_expiry_on_scope_update=False),
            TOKEN,
            TOKEN.access_expires_at,
            TOKEN.refresh_expires_at,
        ),
        (
            UpdateRequest(access_expiry_on_scope_update=True),
            TOKEN,
            TOKEN.access_expires_at,
            TOKEN.refresh_expires_at,
        ),
        (
            UpdateRequest(
                scopes=("read",),
                access_expiry_on_scope_update=True,
                access_token_expires_at=NOW + 42,
            ),
            TOKEN,
            NOW + 42,
            TOKEN.refresh_expires_at,
        ),
        (
            UpdateRequest(
                scopes=("read",), access_expiry_on_scope_update=True, access_token_expires_at=0
            ),
            TOKEN,
            NOW + 600_000,
            TOKEN.refresh_expires_at,
        ),
        (
            UpdateRequest(scopes=("read",), access_expiry_on_scope_update=True),
            replace(TOKEN, persistent=True),
            TOKEN.access_expires_at,
            TOKEN.refresh_expires_at,
        ),
        (
            UpdateRequest(scopes=("read", "profile", "write"), refresh_expiry_on_scope_update=True),
            TOKEN,
            TOKEN.access_expires_at,
            NOW + 3_600_000,
        ),
        (
            UpdateRequest(
                scopes=("read",),
                refresh_expiry_on_scope_update=True,
                refresh_token_expires_at=NOW + 7,
            ),
            TOKEN,
            TOKEN.access_expires_at,
            NOW + 7,
        ),
        (
            UpdateRequest(scopes=("read",), refresh_expiry_on_scope_update=True),
            replace(TOKEN, refresh_expires_at=None),
            TOKEN.access_expires_at,
            None,
        ),
        (
            UpdateRequest(
                scopes=("read", "write"),
                access_expiry_on_scope_update=True,
                refresh_expiry_on_scope_update=True,
            ),
            TOKEN,
            NOW + 300_000,
            NOW + 7_200_000,
        ),
    ],
    ids=[
        "smallest access duration wins",
        "the seed's example 1",
        "no scope has a duration: unchanged",
        "flag off: unchanged",
        "scopes absent: unchanged",
        "explicit expiry wins over durations",
        "zero explicit expiry does not block durations",
        "persistent token: unchanged",
        "smallest refresh duration wins",
        "explicit refresh expiry wins",
        "no refresh token: nothing to update",
        "both flags with a scope lacking a refresh duration",
    ],
)
def test_scope_durations_recompute_expiry(
    request_: UpdateRequest,
    token: TokenState,
    access_expires_at: int,
    refresh_expires_at: int | None,
) -> None:
    state = update(request_, token)
    assert (state.access_expires_at, state.refresh_expires_at) == (
        access_expires_at,
        refresh_expires_at,
    )


def test_durations_count_only_scopes_that_survive_filtering() -> None:
    policy = replace(POLICY, requestable=frozenset({"read"}))
    request = UpdateRequest(scopes=("read", "write"), access_expiry_on_scope_update=True)
    state = update(request, policy=policy)
    assert state.scopes == ("read",)
    assert state.access_expires_at == NOW + 600_000


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10000", 10000),
        ("0", 0),
        ("-5", None),
        ("1.5", None),
        (" 10", None),
        ("ten", None),
        ("", None),
        (None, None),
        ("\u0663", None),  # ARABIC-INDIC DIGIT THREE: a digit, but not a decimal string
        ("1" * 12, None),
    ],
)
def test_a_duration_is_a_plain_decimal_string_of_seconds(
    value: str | None, seconds: int | None
) -> None:
    assert parse_duration(value) == seconds


def test_scope_attributes_other_than_the_durations_are_ignored() -> None:
    durations = scope_durations(
        [("colour", "10"), ("access_token.duration", "x"), ("refresh_token.duration", "60")]
    )
    assert durations == ScopeDurations(access_seconds=None, refresh_seconds=60)


# --- Rule 6 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "token", "expected"),
    [
        (NOW + 9, TOKEN, NOW + 9),
        (0, TOKEN, TOKEN.refresh_expires_at),
        (-3, TOKEN, TOKEN.refresh_expires_at),
        (NOW + 9, replace(TOKEN, refresh_expires_at=None), None),
    ],
    ids=["positive sets", "zero leaves", "negative leaves", "ignored without a refresh token"],
)
def test_refresh_token_expiry(given: int, token: TokenState, expected: int | None) -> None:
    assert update(UpdateRequest(refresh_token_expires_at=given), token).refresh_expires_at == (
        expected
    )


# --- Rule 7 --------------------------------------------------------------------------------


def test_properties_replace_the_whole_set_and_absent_leaves_them() -> None:
    token = replace(TOKEN, properties=(Property("a", "1"), Property("b", "2", hidden=True)))
    replaced = update(UpdateRequest(properties=(PropertyInput("c", "3", None),)), token)
    assert replaced.properties == (Property("c", "3", hidden=False),)
    assert update(UpdateRequest(), token).properties == token.properties
    assert update(UpdateRequest(properties=()), token).properties == ()


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ((PropertyInput(None, "v"),), "has no key"),
        ((PropertyInput("", "v"),), "has no key"),
        ((PropertyInput("k", "v"), PropertyInput("k", "w")), "repeats the key"),
        ((PropertyInput("k", None),), "has no value"),
    ],
)
def test_an_invalid_property_rejects_the_whole_request(
    properties: tuple[PropertyInput, ...], message: str
) -> None:
    with pytest.raises(BadRequestAction, match=message):
        update(UpdateRequest(properties=properties, scopes=()))


# --- Rule 8 --------------------------------------------------------------------------------


def test_authorization_details_replace_and_absent_leaves_them() -> None:
    old = (AuthzElement(type="payment"),)
    token = replace(TOKEN, authorization_details=old)
    given = (AuthzElementInput(type="account", actions=("read",), other_fields='{"x": 1}'),)
    replaced = update(UpdateRequest(authorization_details=given), token)
    assert replaced.authorization_details == (
        AuthzElement(type="account", actions=("read",), other_fields='{"x": 1}'),
    )
    assert update(UpdateRequest(), token).authorization_details == old
    assert update(UpdateRequest(authorization_details=()), token).authorization_details == ()


@pytest.mark.parametrize(
    ("element", "message"),
    [
        (AuthzElementInput(type=None), "has no type"),
        (AuthzElementInput(type=""), "has no type"),
        (AuthzElementInput(type="t", other_fields="{not json"), "otherFields"),
        (AuthzElementInput(type="t", other_fields="[1, 2]"), "otherFields"),
    ],
)
def test_an_invalid_authorization_details_element_is_a_bad_request(
    element: AuthzElementInput, message: str
) -> None:
    with pytest.raises(BadRequestAction, match=message):
        update(UpdateRequest(authorization_details=(element,)))


# --- Rules 9 and 10 ------------------------------------------------------------------------


def test_a_dpop_thumbprint_binds_the_token_and_makes_it_dpop() -> None:
    state = update(UpdateRequest(dpop_key_thumbprint=THUMB))
    assert (state.dpop_key_thumbprint, state.token_type) == (THUMB, "DPoP")
    unbound = update(UpdateRequest(dpop_key_thumbprint=""), state)
    assert (unbound.dpop_key_thumbprint, unbound.token_type) == (None, "Bearer")


def test_a_certificate_thumbprint_binds_and_an_empty_string_unbinds() -> None:
    state = update(UpdateRequest(certificate_thumbprint=THUMB))
    assert (state.certificate_thumbprint, state.token_type) == (THUMB, "Bearer")
    assert update(UpdateRequest(certificate_thumbprint=None), state).certificate_thumbprint == (
        THUMB
    )
    assert update(UpdateRequest(certificate_thumbprint=""), state).certificate_thumbprint is None


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        THUMB + "=",
        THUMB.replace("N", "+"),
        THUMB[:-1] + "t",  # non-zero pad bits: not a canonical 32-byte encoding
        "a" * 64,  # a hex SHA-256 digest is not base64url
    ],
)
@pytest.mark.parametrize("field", ["certificate_thumbprint", "dpop_key_thumbprint"])
def test_a_malformed_thumbprint_is_a_bad_request(field: str, bad: str) -> None:
    with pytest.raises(BadRequestAction, match="thumbprint"):
        update(UpdateRequest(**{field: bad}))  # type: ignore[arg-type]


@pytest.mark.parametrize(("given", "expected"), [(True, True), (False, False), (None, True)])
def test_for_external_attachment_is_set_when_present(given: bool | None, expected: bool) -> None:
    token = replace(TOKEN, for_external_attachment=True)
    assert update(UpdateRequest(for_external_attachment=given), token).for_external_attachment is (
        expected
    )


# --- Rule 11 -------------------------------------------------------------------------------


def test_regeneration_hands_out_the_new_value_and_rehashes() -> None:
    decision = apply_update(
        TOKEN, UpdateRequest(value_updated=True), POLICY, now=NOW, new_value=NEW_VALUE
    )
    assert decision.new_value == NEW_VALUE
    assert decision.state.access_hash == token_hash(NEW_VALUE)


def test_without_regeneration_the_value_and_hash_stay() -> None:
    decision = apply_update(TOKEN, UpdateRequest(), POLICY, now=NOW, new_value=NEW_VALUE)
    assert decision.new_value is None
    assert decision.state == TOKEN


def test_filter_scopes_is_usable_for_token_creation() -> None:
    assert filter_scopes(["admin", "nope", "admin"], POLICY) == ("admin",)
