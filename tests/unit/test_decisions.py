"""The two decisions beside `apply_update`: issuing a token (`rules.issue`) and judging an
introspection (`introspection.judge`). Pure: no database, a fixed `now`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.errors import BadRequestAction
from app.kit.hashing import token_hash
from app.tokens.binding import ProofPolicy
from app.tokens.introspection import OK_CONTENT, IntrospectionCommand, judge
from app.tokens.nonces import NonceClock, nonce_key
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


NONCE_KEY = nonce_key(b"k" * 32)


def judged(token: FoundToken | None, request: IntrospectionCommand, now: int = NOW):  # type: ignore[no-untyped-def]
    return judge(
        token, request, service_api_key=1, now=now, proof_policy=PROOFS, nonce_key=NONCE_KEY
    )


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


# --- Resources, step-up (RFC 8707, RFC 9470) and the flags of every outcome ---------------

NOW_S = NOW // 1000
STEPPED_UP = {"acr": "urn:mfa", "auth_time": NOW_S - 100, "resources": ("https://rs.example",)}


@pytest.mark.parametrize(
    ("changes", "request_", "code"),
    [
        ({}, command(resources=("https://rs.example",)), "INTROSPECTION_OK"),
        ({}, command(resources=("https://rs.example", "https://other.example")),
         "INTROSPECTION_RESOURCE_NOT_COVERED"),
        ({"resources": ()}, command(resources=("https://rs.example",)),
         "INTROSPECTION_RESOURCE_NOT_COVERED"),
        ({}, command(resources=()), "INTROSPECTION_OK"),
        ({}, command(acr_values=("urn:pwd", "urn:mfa")), "INTROSPECTION_OK"),
        ({}, command(acr_values=("urn:pwd",)), "INTROSPECTION_ACR_INSUFFICIENT"),
        ({"acr": None}, command(acr_values=("urn:mfa",)), "INTROSPECTION_ACR_INSUFFICIENT"),
        ({}, command(acr_values=()), "INTROSPECTION_OK"),
        ({}, command(max_age=100), "INTROSPECTION_OK"),  # exactly max_age old: still good
        ({}, command(max_age=99), "INTROSPECTION_AUTH_TOO_OLD"),
        ({"auth_time": 0}, command(max_age=10**9), "INTROSPECTION_AUTH_TOO_OLD"),
        ({"auth_time": 0}, command(max_age=0), "INTROSPECTION_OK"),  # 0 or less: no check
        ({"auth_time": 0}, command(max_age=-1), "INTROSPECTION_OK"),
    ],
)  # fmt: skip
def test_resources_and_the_user_authentication_are_checked_as_asked(
    changes: dict[str, object], request_: IntrospectionCommand, code: str
) -> None:
    outcome = judged(found(**{**STEPPED_UP, **changes}), request_).outcome
    assert outcome.result_code == code
    if code == "INTROSPECTION_OK":
        assert (outcome.action, outcome.usable, outcome.sufficient) == ("OK", True, True)
        assert outcome.response_content == OK_CONTENT == 'Bearer error="invalid_request"'
    else:
        # Valid for use, insufficient for this resource server.
        assert (outcome.action, outcome.usable, outcome.sufficient) == ("FORBIDDEN", True, False)


def test_the_step_up_challenge_names_every_requirement_of_the_request() -> None:
    token = found(**{**STEPPED_UP, "acr": "urn:pwd"})
    outcome = judged(token, command(acr_values=("urn:mfa", "urn:hwk"), max_age=5)).outcome
    assert outcome.response_content == (
        'Bearer error="insufficient_user_authentication",'
        'error_description="Another kind of login is required.",'
        'acr_values="urn:mfa urn:hwk",max_age="5"'
    )
    too_old = judged(found(**STEPPED_UP), command(max_age=5)).outcome
    assert too_old.result_code == "INTROSPECTION_AUTH_TOO_OLD"
    assert too_old.response_content is not None
    assert too_old.response_content.endswith(',max_age="5"')
    assert "acr_values" not in too_old.response_content


def test_a_dpop_bound_token_is_challenged_with_the_dpop_scheme() -> None:
    maker = ProofMaker("EC")
    token = found(**STEPPED_UP, dpop_key_thumbprint=maker.jkt())
    proof = maker.proof(token="v", htu=HTU, claims={"iat": NOW_S})
    outcome = judged(token, command(dpop=proof, htm="GET", htu=HTU, acr_values=("x",))).outcome
    assert outcome.result_code == "INTROSPECTION_ACR_INSUFFICIENT"
    assert outcome.response_content is not None
    assert outcome.response_content.startswith('DPoP error="insufficient_user_authentication"')
    assert 'acr_values="x"' in outcome.response_content
    assert 'algs="ES256' in outcome.response_content


def test_the_audience_is_checked_before_the_scopes_and_the_scopes_before_step_up() -> None:
    request_ = command(resources=("https://else.example",), scopes=("write",), acr_values=("y",))
    assert judged(found(**STEPPED_UP), request_).outcome.result_code == (
        "INTROSPECTION_RESOURCE_NOT_COVERED"
    )
    request_ = replace(request_, resources=None)
    assert judged(found(**STEPPED_UP), request_).outcome.result_code == (
        "INTROSPECTION_SCOPE_INSUFFICIENT"
    )
    request_ = replace(request_, scopes=None, subject="bob")
    assert judged(found(**STEPPED_UP), request_).outcome.result_code == (
        "INTROSPECTION_SUBJECT_MISMATCH"
    )


@pytest.mark.parametrize(
    ("token", "request_", "flags"),
    [
        (None, command(), (False, False, False)),
        (found(access_expires_at=NOW, refresh_expires_at=NOW + 1), command(),
         (False, False, True)),
        (found(dpop_key_thumbprint=ProofMaker("EC").jkt()), command(), (False, False, False)),
        (found(), command(scopes=("write",)), (True, False, False)),
        (found(refresh_expires_at=NOW + 1), command(), (True, True, True)),
        (found(refresh_expires_at=NOW), command(), (True, True, False)),
    ],
    ids=["unknown", "expired", "binding unproven", "insufficient", "ok", "refresh expired"],
)  # fmt: skip
def test_usable_sufficient_and_refreshable_for_each_outcome(
    token: FoundToken | None, request_: IntrospectionCommand, flags: tuple[bool, bool, bool]
) -> None:
    outcome = judged(token, request_).outcome
    assert (outcome.usable, outcome.sufficient, outcome.refreshable) == flags


# --- DPoP nonces (RFC 9449 section 9) ------------------------------------------------------


def nonce_bound(maker: ProofMaker, *, required: bool = False, duration: int | None = 60):  # type: ignore[no-untyped-def]
    token = found(dpop_key_thumbprint=maker.jkt())
    return replace(token, dpop_nonce_required=required, dpop_nonce_duration=duration)


def test_nonces_are_not_asked_for_unless_the_service_or_the_request_requires_them() -> None:
    maker = ProofMaker("EC")
    proof = maker.proof(token="v", htu=HTU, claims={"iat": NOW_S})
    outcome = judged(nonce_bound(maker), command(dpop=proof, htm="GET", htu=HTU)).outcome
    assert (outcome.action, outcome.dpop_nonce) == ("OK", None)
    # A Bearer token never gets one, even when the request asks for nonces.
    bearer = judged(replace(found(), dpop_nonce_required=True), command(dpop_nonce_required=True))
    assert (bearer.outcome.action, bearer.outcome.dpop_nonce) == ("OK", None)


@pytest.mark.parametrize(
    ("service", "request_flag"), [(True, False), (False, True), (True, True)],
    ids=["by the service", "by the request", "by both"],
)  # fmt: skip
def test_a_required_nonce_must_be_the_current_one(service: bool, request_flag: bool) -> None:
    maker = ProofMaker("EC")
    token = nonce_bound(maker, required=service)
    clock = NonceClock.of(NONCE_KEY, 1, 60)

    def outcome(claims: dict[str, object]):  # type: ignore[no-untyped-def]
        proof = maker.proof(token="v", htu=HTU, claims={"iat": NOW_S, **claims})
        request_ = command(dpop=proof, htm="GET", htu=HTU, dpop_nonce_required=request_flag)
        return judged(token, request_).outcome

    missing = outcome({})
    assert (missing.action, missing.result_code) == (
        "UNAUTHORIZED",
        "INTROSPECTION_DPOP_MISSINGNONCE",
    )
    assert missing.response_content is not None
    assert missing.response_content.startswith('DPoP error="use_dpop_nonce",error_description=')
    assert missing.dpop_nonce == clock.current(NOW)
    assert (missing.usable, missing.sufficient) == (False, False)

    stale = outcome({"nonce": clock.current(NOW - 120_000)})  # two steps ago
    assert stale.result_code == "INTROSPECTION_DPOP_BADNONCE"
    assert stale.response_content is not None
    assert stale.response_content.startswith('DPoP error="use_dpop_nonce"')
    for wrong in ("", "x", 42):
        assert outcome({"nonce": wrong}).result_code == "INTROSPECTION_DPOP_BADNONCE"
    other_service = NonceClock.of(NONCE_KEY, 2, 60).current(NOW)
    assert outcome({"nonce": other_service}).result_code == "INTROSPECTION_DPOP_BADNONCE"

    good = outcome({"nonce": clock.current(NOW)})
    assert (good.action, good.dpop_nonce) == ("OK", clock.current(NOW))
    previous = outcome({"nonce": clock.current(NOW - 60_000)})
    assert previous.action == "OK"


def test_the_request_cannot_switch_off_the_services_nonces() -> None:
    maker = ProofMaker("EC")
    proof = maker.proof(token="v", htu=HTU, claims={"iat": NOW_S})
    request_ = command(dpop=proof, htm="GET", htu=HTU, dpop_nonce_required=False)
    outcome = judged(nonce_bound(maker, required=True), request_).outcome
    assert outcome.result_code == "INTROSPECTION_DPOP_MISSINGNONCE"


def test_every_answer_about_a_nonce_bound_token_carries_the_nonce() -> None:
    maker = ProofMaker("EC")
    token = nonce_bound(maker, required=True, duration=None)  # unset: the default duration
    expected = NonceClock.of(NONCE_KEY, 1, None).current(NOW)
    assert judged(token, command()).outcome.dpop_nonce == expected  # no proof at all
    expired = replace(token, state=replace(token.state, access_expires_at=NOW))
    assert judged(expired, command()).outcome.dpop_nonce == expected
    proof = maker.proof(token="v", htu=HTU, claims={"iat": NOW_S, "nonce": expected})
    judgement = judged(token, command(dpop=proof, htm="GET", htu=HTU, scopes=("write",)))
    assert judgement.outcome.result_code == "INTROSPECTION_SCOPE_INSUFFICIENT"
    assert judgement.outcome.dpop_nonce == expected
    assert judgement.if_replayed is not None
    assert judgement.if_replayed.dpop_nonce == expected
