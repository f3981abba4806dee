"""Introspection for resource servers: Authlete's `/auth/introspection` and RFC 7662.

Outcomes are returned, never raised: a DPoP proof's `jti` recorded on the way is a security
effect, and it must commit even when a later check answers FORBIDDEN (STYLE.md).

`judge` decides, pure. The I/O is the shell's (`introspect`, over `repository.TokenReads`):
one read for the token, its client's alias and its service's DPoP nonce settings, and for
a DPoP-bound token the replay record that `judge` asks for.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

from app.kit.durations import is_expired
from app.kit.hashing import lookup_key, refresh_lookup_key, token_hash
from app.kit.keys import KeyRing
from app.services import keys as service_keys
from app.tokens import binding, jwt_introspection
from app.tokens.binding import DPOP_ALGORITHMS, ProofError, ProofPolicy
from app.tokens.jwt_introspection import JwtAsk
from app.tokens.nonces import NonceClock, nonce_key
from app.tokens.repository import FoundToken, TokenReads

log = logging.getLogger("tokenstore.introspection")


@dataclass(frozen=True, slots=True)
class IntrospectionCommand:
    token: str | None
    scopes: tuple[str, ...] | None
    subject: str | None
    client_certificate: str | None
    dpop: str | None
    htm: str | None
    htu: str | None
    resources: tuple[str, ...] | None = None  # RFC 8707: each must be the token's
    acr_values: tuple[str, ...] | None = None  # RFC 9470: the token's acr is one of them
    max_age: int | None = None  # RFC 9470: seconds since the user authenticated (<= 0: none)
    dpop_nonce_required: bool = False  # switches the nonce check on, never off


# Authlete's `responseContent` when the answer is OK: the simplest challenge, for a
# resource server that refuses the request for reasons of its own (java-common's
# IntrospectionResponse; the same for DPoP-bound tokens).
OK_CONTENT = 'Bearer error="invalid_request"'


@dataclass(frozen=True, slots=True)
class Introspection:
    action: str  # OK, BAD_REQUEST, UNAUTHORIZED, FORBIDDEN
    result_code: str
    message: str
    response_content: str | None  # the WWW-Authenticate value for the resource server
    token: FoundToken | None = None
    usable: bool = False
    sufficient: bool = False
    refreshable: bool = False
    dpop_nonce: str | None = None  # for the resource server's DPoP-Nonce header


def _quotable(text: str) -> str:
    # RFC 6750 section 3: these values exclude the double quote and the backslash.
    return "".join(ch for ch in text.replace('"', "'") if " " <= ch <= "~" and ch != "\\")


def challenge(
    scheme: str,
    error: str,
    description: str,
    *,
    scope: str | None = None,
    acr_values: str | None = None,
    max_age: int | None = None,
) -> str:
    """A `WWW-Authenticate` value (RFC 6750 section 3; RFC 9449 section 7.1 for DPoP;
    RFC 9470 section 3 for `acr_values` and `max_age`)."""
    parts = [f'error="{error}"', f'error_description="{_quotable(description)}"']
    if scope is not None:
        parts.append(f'scope="{scope}"')
    if acr_values is not None:
        parts.append(f'acr_values="{_quotable(acr_values)}"')
    if max_age is not None:
        parts.append(f'max_age="{max_age}"')
    if scheme == "DPoP":
        parts.append(f'algs="{" ".join(DPOP_ALGORITHMS)}"')
    return f"{scheme} " + ",".join(parts)


@dataclass(frozen=True, slots=True)
class ProofRecord:
    """A DPoP proof to remember until `expires_at` (RFC 9449 section 11.1)."""

    key: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Judgement:
    """The decision on one introspection. When `proof` is set, the shell records it, and
    answers `if_replayed` instead of `outcome` when it was recorded before."""

    outcome: Introspection
    proof: ProofRecord | None = None
    if_replayed: Introspection | None = None


def judge(
    token: FoundToken | None,
    command: IntrospectionCommand,
    *,
    service_api_key: int,
    now: int,
    proof_policy: ProofPolicy,
    nonce_key: bytes,
) -> Judgement:
    """Pure: what to answer for the token found (None: no such token), checked in order:
    existence, expiry, proof of possession, then what the resource server asks of it.
    `nonce_key` (`nonces.nonce_key`) makes the DPoP nonces, when the service or the request
    requires them."""
    if token is None:
        message = "The access token does not exist."
        return Judgement(Introspection(
            "UNAUTHORIZED", "INTROSPECTION_TOKEN_UNKNOWN", message,
            challenge("Bearer", "invalid_token", message),
        ))  # fmt: skip
    state = token.state
    # RFC 9449 section 9: the service's setting, or the request's, requires nonces; every
    # answer about a DPoP-bound token then carries the current one.
    nonces = None
    if state.dpop_key_thumbprint and (token.dpop_nonce_required or command.dpop_nonce_required):
        nonces = NonceClock.of(nonce_key, service_api_key, token.dpop_nonce_duration)
    found = Introspection(
        "OK", "INTROSPECTION_OK", "The access token is valid.", OK_CONTENT, token=token,
        refreshable=state.refresh_expires_at is not None
        and not is_expired(state.refresh_expires_at, now),
        dpop_nonce=None if nonces is None else nonces.current(now),
    )  # fmt: skip
    refusal = _expired(found, now)
    if refusal is not None:
        return Judgement(refusal)
    proof, refusal = _possession(found, command, service_api_key, now, proof_policy, nonces)
    if refusal is None:
        refusal = _authorization(found, command, now)
    outcome = refusal or replace(found, usable=True, sufficient=True)
    if proof is None:
        return Judgement(outcome)
    replayed = binding.ReplayedProof("The DPoP proof was used before.")
    if_replayed = _refuse(
        found, "UNAUTHORIZED", "INTROSPECTION_DPOP_REPLAYEDPROOF", replayed.error, str(replayed)
    )
    return Judgement(outcome, proof, if_replayed)


async def introspect(
    reads: TokenReads,
    *,
    service_api_key: int,
    command: IntrospectionCommand,
    keys: KeyRing,
    now: int,
    proof_policy: ProofPolicy,
) -> Introspection:
    """The shell: reads the token, asks `judge`, records the DPoP proof it names."""
    if not command.token:
        message = "The request has no token."
        return Introspection(
            "BAD_REQUEST", "INTROSPECTION_TOKEN_MISSING", message,
            challenge("Bearer", "invalid_request", message),
        )  # fmt: skip
    hash_ = token_hash(command.token)
    tokens: list[FoundToken] = []
    for ring_key in keys.lookup_order:  # the current key first: one read, unless older
        tokens = await reads.find(
            service_api_key, access_key=lookup_key(service_api_key, hash_, ring_key.secret)
        )
        if tokens:
            break
    judgement = judge(
        tokens[0] if tokens else None, command,
        service_api_key=service_api_key, now=now, proof_policy=proof_policy,
        nonce_key=nonce_key(keys.current.secret),
    )  # fmt: skip
    outcome = judgement.outcome
    if judgement.proof is not None:
        # Recorded even when the answer is FORBIDDEN: the proof has been used.
        fresh = await reads.remember_proof(
            key=judgement.proof.key, expires_at=judgement.proof.expires_at, now=now
        )
        if not fresh and judgement.if_replayed is not None:
            outcome = judgement.if_replayed
    if outcome.action != "OK" and outcome.token is not None:
        log.info(
            "introspection refused token_id=%s code=%s", outcome.token.token_id,
            outcome.result_code,
        )  # fmt: skip
    return outcome


def _refuse(
    found: Introspection,
    action: str,
    code: str,
    error: str,
    message: str,
    *,
    scope: str | None = None,
    acr_values: str | None = None,
    max_age: int | None = None,
    usable: bool = False,
) -> Introspection:
    assert found.token is not None  # noqa: S101 - only tokens that exist are refused here
    content = challenge(
        found.token.state.token_type, error, message, scope=scope, acr_values=acr_values,
        max_age=max_age,
    )  # fmt: skip
    return replace(
        found, action=action, result_code=code, message=message, response_content=content,
        usable=usable,
    )  # fmt: skip


def _expired(found: Introspection, now: int) -> Introspection | None:
    assert found.token is not None  # noqa: S101
    state = found.token.state
    if state.persistent or not is_expired(state.access_expires_at, now):
        return None
    return _refuse(
        found, "UNAUTHORIZED", "INTROSPECTION_TOKEN_EXPIRED", "invalid_token",
        "The access token has expired.",
    )  # fmt: skip


def _possession(
    found: Introspection,
    command: IntrospectionCommand,
    service_api_key: int,
    now: int,
    policy: ProofPolicy,
    nonces: NonceClock | None,
) -> tuple[ProofRecord | None, Introspection | None]:
    """The DPoP proof (RFC 9449) or the client certificate (RFC 8705) the token is bound
    to; a valid proof comes back as the record that makes its reuse a replay. With
    `nonces`, the proof must carry a nonce they accept (RFC 9449 section 9)."""
    assert found.token is not None  # noqa: S101
    assert command.token is not None  # noqa: S101
    state = found.token.state
    record = None
    if state.dpop_key_thumbprint:
        if not command.dpop:
            return None, _refuse(
                found, "UNAUTHORIZED", "INTROSPECTION_DPOP_MISSING", "invalid_token",
                "This token is DPoP-bound; send the DPoP proof that came with it.",
            )  # fmt: skip
        if not command.htm or not command.htu:
            return None, _refuse(
                found, "BAD_REQUEST", "INTROSPECTION_DPOP_CONTEXT_MISSING", "invalid_request",
                "htm and htu are needed to check a DPoP proof.",
            )  # fmt: skip
        try:
            proof = binding.verify_dpop_proof(
                command.dpop, htm=command.htm, htu=command.htu, access_token=command.token,
                bound_jkt=state.dpop_key_thumbprint, now_ms=now, policy=policy,
                nonce_accepted=None if nonces is None else lambda n: nonces.accepts(n, now),
            )  # fmt: skip
        except ProofError as error:
            code = "INTROSPECTION_DPOP_" + type(error).__name__.upper()
            return None, _refuse(found, "UNAUTHORIZED", code, error.error, str(error))
        # RFC 9449 section 11.1: a jti seen before, by any process, is a replay.
        replay_key = hashlib.sha256(f"{service_api_key}:{proof.jkt}:{proof.jti}".encode())
        record = ProofRecord(replay_key.hexdigest(), proof.remember_until)
    if state.certificate_thumbprint:
        try:
            binding.check_certificate(
                command.client_certificate, bound_thumbprint=state.certificate_thumbprint
            )
        except ProofError as error:
            return record, _refuse(
                found, "UNAUTHORIZED", "INTROSPECTION_CERTIFICATE_MISMATCH", error.error,
                str(error),
            )  # fmt: skip
    return record, None


def _authorization(
    found: Introspection, command: IntrospectionCommand, now: int
) -> Introspection | None:
    """What the resource server requires of the token, in this order (docs/decisions.md):
    its audience (RFC 8707: nothing else matters if the token is not meant for this
    resource server), the scopes, the subject, then the user authentication (RFC 9470:
    last, as the only one that a new login at the same client can fix)."""
    assert found.token is not None  # noqa: S101
    state = found.token.state
    if command.resources:
        foreign = [resource for resource in command.resources if resource not in state.resources]
        if foreign:
            return _refuse(
                found, "FORBIDDEN", "INTROSPECTION_RESOURCE_NOT_COVERED", "invalid_token",
                "The access token is not meant for " + " ".join(foreign) + ".", usable=True,
            )  # fmt: skip
    if command.scopes:
        missing = [scope for scope in command.scopes if scope not in found.token.state.scopes]
        if missing:
            return _refuse(
                found, "FORBIDDEN", "INTROSPECTION_SCOPE_INSUFFICIENT", "insufficient_scope",
                "The access token lacks the scopes " + " ".join(missing) + ".",
                scope=" ".join(command.scopes), usable=True,
            )  # fmt: skip
    if command.subject is not None and command.subject != found.token.subject:
        return _refuse(
            found, "FORBIDDEN", "INTROSPECTION_SUBJECT_MISMATCH", "insufficient_scope",
            "The access token belongs to another subject.", usable=True,
        )  # fmt: skip
    return _step_up(found, command, now)


def _step_up(found: Introspection, command: IntrospectionCommand, now: int) -> Introspection | None:
    """RFC 9470: the user authentication behind the token, by its `acr` and `authTime`
    (seconds). The challenge names every requirement the request gave, so that one new
    authentication can meet them all (section 3)."""
    assert found.token is not None  # noqa: S101
    state = found.token.state
    acr_values = command.acr_values or ()
    max_age = command.max_age if command.max_age is not None and command.max_age > 0 else None
    # An unknown authentication time (0) is never recent enough.
    too_old = max_age is not None and (
        state.auth_time <= 0 or now // 1000 - state.auth_time > max_age
    )
    if acr_values and state.acr not in acr_values:
        code, message = "INTROSPECTION_ACR_INSUFFICIENT", "Another kind of login is required."
    elif too_old:
        code, message = "INTROSPECTION_AUTH_TOO_OLD", "A more recent authentication is required."
    else:
        return None
    return _refuse(
        found, "FORBIDDEN", code, "insufficient_user_authentication", message,
        acr_values=" ".join(acr_values) or None, max_age=max_age, usable=True,
    )  # fmt: skip


# --- RFC 7662 ------------------------------------------------------------------------------

# Members of the RFC 7662 answer that a token's properties never take: those of RFC 7662
# section 2.2, the registered JWT claims (RFC 7519 section 4.1), `cnf` (RFC 8705, RFC 9449),
# `authorization_details` (RFC 9396) and the user authentication's (RFC 9470).
STANDARD_MEMBERS = frozenset({
    "active", "scope", "client_id", "username", "token_type", "exp", "iat", "nbf", "sub",
    "aud", "iss", "jti", "cnf", "authorization_details", "acr", "auth_time",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class StandardCommand:
    """Authlete's standard introspection request, past the wire."""

    parameters: str | None
    with_hidden_properties: bool = False
    rs_uri: str | None = None  # the resource server asking: a token for others is inactive
    jwt: JwtAsk | None = None  # the RFC 9701 answer was asked for


@dataclass(frozen=True, slots=True)
class StandardIntrospection:
    action: str  # OK, JWT, BAD_REQUEST or INTERNAL_SERVER_ERROR
    result_code: str
    message: str
    response_content: str


# The service's JWK set and its introspection key id (`services.repository`), read only
# when a JWT is asked for.
KeysRead = Callable[[], Awaitable[tuple[str | None, str | None]]]


def _rfc7662_error(
    message: str, code: str = "STANDARD_INTROSPECTION_INVALID"
) -> StandardIntrospection:
    content = json.dumps({"error": "invalid_request", "error_description": message})
    return StandardIntrospection("BAD_REQUEST", code, message, content)


def _server_error(message: str) -> StandardIntrospection:
    """The service cannot sign: its configuration, not the request, is at fault."""
    content = json.dumps({"error": "server_error", "error_description": message})
    return StandardIntrospection(
        "INTERNAL_SERVER_ERROR", "STANDARD_INTROSPECTION_NO_SIGNING_KEY", message, content
    )


async def standard_introspect(
    reads: TokenReads,
    *,
    service_api_key: int,
    command: StandardCommand,
    hash_keys: KeyRing,
    now: int,
    keys: KeysRead | None = None,
    issuer: str = "",
) -> StandardIntrospection:
    """RFC 7662 section 2: an unknown, expired or foreign token is just `{"active": false}`.
    The token is looked up as an access token and as a refresh token in one statement; the
    hint only orders the answers. The JWT of RFC 9701, when asked for, costs one more read
    (the service's keys), before the token's."""
    try:
        fields = parse_qsl(command.parameters or "", keep_blank_values=True, strict_parsing=False)
    except ValueError:
        return _rfc7662_error("The parameters are not application/x-www-form-urlencoded.")
    tokens = [value for key, value in fields if key == "token"]
    if len(tokens) != 1 or not tokens[0]:
        return _rfc7662_error("Send exactly one token parameter (RFC 7662 section 2.1).")
    hint = dict(fields).get("token_type_hint")

    signer = None
    if command.jwt is not None:
        found_signer = await _signer(command.jwt, keys)
        if isinstance(found_signer, StandardIntrospection):
            return found_signer
        signer = found_signer

    hash_ = token_hash(tokens[0])
    found: list[FoundToken] = []
    for ring_key in hash_keys.lookup_order:  # the current key first: one read, unless older
        found = await reads.find(
            service_api_key,
            access_key=lookup_key(service_api_key, hash_, ring_key.secret),
            refresh_key=refresh_lookup_key(service_api_key, hash_, ring_key.secret),
        )
        if found:
            break
    refresh_first = hint == "refresh_token"
    content: dict[str, Any] = {"active": False}
    for token in sorted(found, key=lambda t: t.matched_refresh != refresh_first):
        claims = _active_claims(token, now, command)
        if claims is not None:
            content = claims
            break
    if signer is None or command.jwt is None:
        return StandardIntrospection(
            "OK", "STANDARD_INTROSPECTION_OK", "Introspected.", json.dumps(content)
        )
    audience = command.jwt.rs_uri or ""  # never empty: `refusal` requires it
    jwt = jwt_introspection.sign(content, signer=signer, issuer=issuer, audience=audience, now=now)
    return StandardIntrospection(
        "JWT", "STANDARD_INTROSPECTION_JWT", "Introspected, as a signed JWT (RFC 9701).", jwt
    )


async def _signer(
    ask: JwtAsk, keys: KeysRead | None
) -> service_keys.SigningKey | StandardIntrospection:
    """The key that signs the JWT asked for, or the answer that says why there is none."""
    problem = jwt_introspection.refusal(ask)
    if problem is not None:
        return _rfc7662_error(problem, "STANDARD_INTROSPECTION_JWT_UNSUPPORTED")
    if keys is None:
        return _server_error("The service's keys cannot be read here.")
    jwks, key_id = await keys()
    if jwks is None:
        return _server_error("The service has no JWK set (jwks) to sign the response with.")
    try:
        return service_keys.signing_key(
            service_keys.parse(jwks), key_id=key_id, algorithm=ask.sign_alg
        )
    except (service_keys.KeySetError, service_keys.NoSigningKey) as error:
        return _server_error(str(error))


def _active_claims(token: FoundToken, now: int, command: StandardCommand) -> dict[str, Any] | None:
    state = token.state
    if token.matched_refresh:
        if state.refresh_expires_at is None or is_expired(state.refresh_expires_at, now):
            return None
        expires_at: int | None = state.refresh_expires_at
    else:
        if not state.persistent and is_expired(state.access_expires_at, now):
            return None
        expires_at = None if state.persistent else state.access_expires_at
    # Authlete: a token with audiences is inactive for a resource server not among them.
    if command.rs_uri and state.resources and command.rs_uri not in state.resources:
        return None
    claims: dict[str, Any] = {
        "active": True,
        "scope": " ".join(state.scopes),
        "client_id": str(token.client_id),
        "iat": token.created_at // 1000,
    }
    if token.subject is not None:
        claims["sub"] = token.subject
    if expires_at is not None:
        claims["exp"] = expires_at // 1000
    if state.resources:
        claims["aud"] = list(state.resources)  # RFC 7662 section 2.2, RFC 8707
    if not token.matched_refresh:
        claims["token_type"] = state.token_type
        # RFC 9449 section 6.2 and RFC 8705 section 3.2: the confirmation of the binding.
        cnf = {"jkt": state.dpop_key_thumbprint, "x5t#S256": state.certificate_thumbprint}
        if any(cnf.values()):
            claims["cnf"] = {name: value for name, value in cnf.items() if value}
    # Authlete embeds the token's properties as members of their own; hidden ones only when
    # asked. They never replace a standard member.
    for prop in state.properties:
        if prop.key in STANDARD_MEMBERS or (prop.hidden and not command.with_hidden_properties):
            continue
        claims[prop.key] = prop.value
    return claims
