"""DPoP nonces without storage (app.tokens.nonces): pure, with an explicit `now`."""

from __future__ import annotations

import pytest

from app.tokens.nonces import DEFAULT_NONCE_DURATION, NonceClock, nonce_key

KEY = nonce_key(b"server hash key" * 2)
T0 = 1_700_000_000_000 // 300_000 * 300_000  # the start of a 300-second step, in ms


def test_the_nonce_key_is_derived_in_a_domain_of_its_own() -> None:
    assert nonce_key(b"a" * 32) != nonce_key(b"b" * 32)
    assert nonce_key(b"a" * 32) != b"a" * 32
    assert len(KEY) == 32


def test_one_nonce_per_step_the_same_in_every_process() -> None:
    clock = NonceClock.of(KEY, 1, 300)
    assert clock.current(T0) == clock.current(T0 + 299_999)
    assert clock.current(T0) != clock.current(T0 + 300_000)
    # Another process, another host: the same key and the same step give the same nonce.
    assert NonceClock.of(nonce_key(b"server hash key" * 2), 1, 300).current(T0) == clock.current(T0)
    assert len(clock.current(T0)) == 43  # base64url of 32 bytes, no padding


def test_nonces_differ_by_service_and_by_key() -> None:
    assert NonceClock.of(KEY, 1, 300).current(T0) != NonceClock.of(KEY, 2, 300).current(T0)
    other = nonce_key(b"another server key")
    assert NonceClock.of(KEY, 1, 300).current(T0) != NonceClock.of(other, 1, 300).current(T0)


@pytest.mark.parametrize(
    ("issued_at", "accepted"),
    [(T0, True), (T0 - 300_000, True), (T0 + 300_000, True), (T0 - 600_000, False),
     (T0 + 600_000, False)],
    ids=["current", "previous", "next (clock skew)", "two steps old", "two steps ahead"],
)  # fmt: skip
def test_the_previous_current_and_next_steps_are_accepted(issued_at: int, accepted: bool) -> None:
    clock = NonceClock.of(KEY, 1, 300)
    assert clock.accepts(clock.current(issued_at), T0 + 1) is accepted


def test_anything_else_is_refused() -> None:
    clock = NonceClock.of(KEY, 1, 300)
    for nonce in ("", "x", clock.current(T0) + "A", clock.current(T0)[:-1], "é" * 43):
        assert not clock.accepts(nonce, T0)


@pytest.mark.parametrize("duration", [None, 0, -5])
def test_an_unset_duration_takes_the_default(duration: int | None) -> None:
    assert NonceClock.of(KEY, 1, duration).duration_seconds == DEFAULT_NONCE_DURATION == 300


def test_a_short_duration_rolls_the_nonce_over_sooner() -> None:
    clock = NonceClock.of(KEY, 1, 10)
    assert clock.current(T0) != clock.current(T0 + 10_000)
    assert not clock.accepts(clock.current(T0), T0 + 20_000)
