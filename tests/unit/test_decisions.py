"""The two decisions beside `apply_update`: issuing a token (`rules.issue`) and judging an
introspection (`introspection.judge`). Pure: no database, a fixed `now`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.errors import BadRequestAction
from app.kit.hashing import token_hash
from app.tokens.binding import ProofPolicy
from app.tokens.introspection import IntrospectionCommand, judge
from app.tokens.repository import FoundToken
from app.tokens.rules import (
    AuthzElementInput,
    IssueRequest,
    PropertyInput,
    ScopeDurations,
    ScopePolicy,
    TokenState,
    issue,
)
from tests.proofs import ProofMaker

NOW = 1_700_000_000_000
VALUES = ("generated-access-" + "a" * 30, "generated-refresh-" + "r" * 30)
POLICY = ScopePolicy(
    supported={"read": ScopeDurations(access_seconds=60), "write": ScopeDurations()}
)
REQUEST = IssueRequest(grant_type="AUTHORIZATION_CODE", client_id=7, subject="alice",
                       scopes=("read", "write", "unknown"))  # fmt: skip


def issued(request: IssueRequest = REQUEST, policy: ScopePolicy = POLICY):  # type: ignore[no-untyped-def]
    return issue(request, policy, access_seconds=3600, refresh_seconds=86400, now=NOW,
                 new_values=VALUES)  # fmt: skip


def test_a_new_token_takes_the_defaults_and_the_supported_scopes() -> None:
    result = issued()
    assert result.access_value == VALUES[0]
    assert result.refresh_value == VALUES[1]
    assert result.refresh_hash == token_hash(VALUES[1])
    assert result.state.access_hash == token_hash(VALUES[0])
    assert result.state.scopes == ("read", "write")
    assert result.state.access_expires_at == NOW + 3_600_000
    assert result.state.refresh_expires_at == NOW + 86_400_000
    assert result.expires_in == 3600


def test_request_durations_and_chosen_values_win() -> None:
    request = replace(REQUEST, access_token_duration=10, refresh_token_duration=20,
                      access_token="mine", refresh_token="my-refresh")  # fmt: skip
    result = issued(request)
    assert (result.access_value, result.refresh_value) == ("mine", "my-refresh")
    assert result.state.access_expires_at == NOW + 10_000
    assert result.state.refresh_expires_at == NOW + 20_000


@pytest.mark.parametrize("grant", ["CLIENT_CREDENTIALS", "IMPLICIT"])
def test_some_grants_get_no_refresh_token(grant: str) -> None:
    result = issued(replace(REQUEST, grant_type=grant))
    assert result.refresh_value is None
    assert result.state.refresh_expires_at is None


@pytest.mark.parametrize(
    "changes",
    [
        {"grant_type": None},
        {"subject": None},
        {"client_id": None},
        {"access_token": "x" * 1025},
        {"refresh_token": "tab\there"},
        {"dpop_key_thumbprint": "nope"},
        {"properties": (PropertyInput(None, "v"),)},
        {"authorization_details": (AuthzElementInput(type=None),)},
    ],
)
def test_a_bad_field_is_refused_before_anything_is_decided(changes: dict[str, object]) -> None:
    with pytest.raises(BadRequestAction):
        issued(replace(REQUEST, **changes))  # type: ignore[arg-type]


# --- Introspection ------------------------------------------------------------------------

PROOFS = ProofPolicy(max_age_seconds=60, clock_skew_seconds=5)
HTU = "https://rs.example.com/r"


def found(**changes: object) -> FoundToken:
    state = TokenState(access_hash=token_hash("v"), scopes=("read",),
                       access_expires_at=NOW + 1000, persistent=False,
                       refresh_expires_at=None)  # fmt: skip
    return FoundToken(
        token_id="t", client_id=7, client_id_alias=None, subject="alice", grant_type="PASSWORD",
        created_at=NOW - 1000, matched_refresh=False,
        state=replace(state, **changes),  # type: ignore[arg-type]
    )  # fmt: skip


def command(**changes: object) -> IntrospectionCommand:
    base = IntrospectionCommand(token="v", scopes=None, subject=None, client_certificate=None,
                                dpop=None, htm=None, htu=None)  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def judged(token: FoundToken | None, request: IntrospectionCommand):  # type: ignore[no-untyped-def]
    return judge(token, request, service_api_key=1, now=NOW, proof_policy=PROOFS)


@pytest.mark.parametrize(
    ("token", "request_", "action", "code"),
    [
        (None, command(), "UNAUTHORIZED", "INTROSPECTION_TOKEN_UNKNOWN"),
        (found(access_expires_at=NOW), command(), "UNAUTHORIZED", "INTROSPECTION_TOKEN_EXPIRED"),
        (found(), command(scopes=("write",)), "FORBIDDEN", "INTROSPECTION_SCOPE_INSUFFICIENT"),
        (found(), command(subject="bob"), "FORBIDDEN", "INTROSPECTION_SUBJECT_MISMATCH"),
        (found(), command(scopes=("read",), subject="alice"), "OK", "INTROSPECTION_OK"),
        (
            found(dpop_key_thumbprint=ProofMaker("EC").jkt()),
            command(),
            "UNAUTHORIZED",
            "INTROSPECTION_DPOP_MISSING",
        ),
    ],
)
def test_each_check_in_order(
    token: FoundToken | None, request_: IntrospectionCommand, action: str, code: str
) -> None:
    judgement = judged(token, request_)
    assert (judgement.outcome.action, judgement.outcome.result_code) == (action, code)
    assert judgement.proof is None


def test_a_valid_proof_is_asked_to_be_recorded_and_a_replay_has_its_answer_ready() -> None:
    maker = ProofMaker("EC")
    token = found(dpop_key_thumbprint=maker.jkt())
    proof = maker.proof(token="v", htu=HTU, claims={"iat": NOW // 1000})
    judgement = judged(token, command(dpop=proof, htm="GET", htu=HTU, scopes=("write",)))
    # The proof is valid: it must be recorded even though the answer is FORBIDDEN.
    assert judgement.outcome.result_code == "INTROSPECTION_SCOPE_INSUFFICIENT"
    assert judgement.proof is not None
    assert judgement.proof.expires_at > NOW
    assert judgement.if_replayed is not None
    assert judgement.if_replayed.result_code == "INTROSPECTION_DPOP_REPLAYEDPROOF"
    again = judged(token, command(dpop=proof, htm="GET", htu=HTU, scopes=("write",)))
    assert again.proof == judgement.proof  # the same proof, the same record: a replay
