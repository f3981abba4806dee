"""RFC 7009 token revocation, as an authorization server's revocation endpoint asks for it
(Authlete's `/auth/revocation`): read the form, authenticate the client, delete its token.

The decisions are pure (`read_form`, `app.clients.authentication`); `revoke` is the shell
that reads the client, records a client assertion's use, moves a client secret verified
under an older hash secret to the current one, and deletes the token. Every outcome is an
`action` with the `responseContent` the authorization server sends back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from sqlalchemy.orm import Session

from app.clients import repository as clients
from app.clients.authentication import (
    AssertionUse,
    Presented,
    Refused,
    Registered,
    SecretRekey,
    authenticate,
    claim,
)
from app.clients.models import ClientRow
from app.clients.service import client_type_of
from app.events import service as events
from app.events.changes import EventType, Origin
from app.kit.hashing import token_hash
from app.kit.keys import KeyRing
from app.tokens import repository
from app.tokens.models import TokenRow
from app.tokens.service import lookup_keys

log = logging.getLogger("tokenstore.tokens")

Action = Literal["OK", "BAD_REQUEST", "INVALID_CLIENT", "INTERNAL_SERVER_ERROR"]
REFRESH_HINT = "refresh_token"  # RFC 7009 section 2.1; any other hint reads as access_token


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    result_code: str
    message: str
    response_content: str | None = None  # the AS's response body; None on OK (send 200)


def _error(action: Action, result_code: str, error: str, description: str) -> Outcome:
    """An RFC 6749 section 5.2 error body, as the AS should return it."""
    content = json.dumps({"error": error, "error_description": description})
    return Outcome(action, result_code, description, content)


def bad_request(description: str) -> Outcome:
    return _error("BAD_REQUEST", "REVOCATION_REQUEST_INVALID", "invalid_request", description)


def invalid_client(description: str) -> Outcome:
    return _error("INVALID_CLIENT", "REVOCATION_CLIENT_INVALID", "invalid_client", description)


OK = Outcome("OK", "REVOCATION_OK", "The token has been revoked, or there was none to revoke.")


class BadForm(ValueError):
    """The revocation request's form cannot be read (RFC 7009 section 2.2.1 invalid_request)."""


@dataclass(frozen=True, slots=True)
class RevocationForm:
    token: str
    refresh_first: bool  # token_type_hint=refresh_token: look among refresh tokens first
    presented: Presented


def read_form(
    parameters: str,
    *,
    client_id: str | None,
    client_secret: str | None,
    certificate: str | None,
) -> RevocationForm:
    """The form of RFC 7009 section 2.1 with the client's credentials: the API's `clientId`
    and `clientSecret` (what the AS took from `Authorization: Basic`), the form's own
    (`client_secret_post`, RFC 7523 assertions), and the TLS certificate."""
    try:
        pairs = parse_qsl(parameters, keep_blank_values=True, strict_parsing=bool(parameters))
    except ValueError as error:
        raise BadForm("parameters is not an application/x-www-form-urlencoded form.") from error
    fields: dict[str, str] = {}
    for name, value in pairs:
        # RFC 6749 section 3.2: a parameter is not sent more than once.
        if name in fields:
            raise BadForm(f"The parameter {name!r} appears more than once.")
        fields[name] = value
    token = fields.get("token")
    if not token:
        raise BadForm("The token parameter is missing (RFC 7009 section 2.1).")
    presented = Presented(
        basic_id=client_id or None,
        basic_secret=client_secret or None,
        form_id=fields.get("client_id") or None,
        form_secret=fields.get("client_secret") or None,
        assertion_type=fields.get("client_assertion_type") or None,
        assertion=fields.get("client_assertion") or None,
        certificate=certificate or None,
    )
    return RevocationForm(token, fields.get("token_type_hint") == REFRESH_HINT, presented)


def _registered(row: ClientRow) -> Registered:
    client_type, method = client_type_of(row)
    return Registered(
        client_id=row.client_id,
        alias=row.client_id_alias,
        client_type=client_type,
        method=method,
        secret_digest=row.client_secret_digest,
        secret_key_id=row.secret_key_id,
        tls_subject_dn=row.tls_client_auth_subject_dn,
        jwks=row.jwks,
    )


def _find(
    session: Session, service_api_key: int, token: str, *, refresh_first: bool, keys: KeyRing
) -> TokenRow | None:
    """The token whose access or refresh token value this is, under any listed key; the
    hint orders the lookups (RFC 7009 section 2.1: a wrong hint only costs the other
    lookup)."""
    hashes = [token_hash(token)]
    access = lookup_keys(service_api_key, hashes, keys.keys)
    refresh = lookup_keys(service_api_key, hashes, keys.keys, refresh=True)
    for is_refresh in (True, False) if refresh_first else (False, True):
        row = (
            repository.find(session, service_api_key, refresh_keys=refresh)
            if is_refresh
            else repository.find(session, service_api_key, access_keys=access)
        )
        if row is not None:
            return row
    return None


def _authenticated(
    session: Session, *, service_api_key: int, form: RevocationForm, keys: KeyRing, now: int
) -> Registered | Outcome:
    """The client, authenticated; else the INVALID_CLIENT outcome."""
    try:
        claimed = claim(form.presented)
    except Refused as refused:
        return invalid_client(str(refused))
    row = clients.get_by_identifier(session, service_api_key, claimed.identifier)
    if row is None:
        return invalid_client("No such client.")
    client = _registered(row)
    try:
        proved = authenticate(client, form.presented, claimed, keys=keys, now=now)
    except Refused as refused:
        log.info("revocation refused client_id=%s reason=%s", client.client_id, refused)
        return invalid_client(str(refused))
    # Recorded in the request's transaction, which commits whatever the outcome.
    if isinstance(proved, AssertionUse) and not repository.remember_proof(
        session, key=proved.key, expires_at=proved.expires_at, now=now
    ):
        return invalid_client("The client assertion has been used before (its jti).")
    # Its secret is known only now: the digest moves to the current key, in this (write)
    # transaction, unless the row changed meanwhile.
    if isinstance(proved, SecretRekey) and clients.rekey_secret(
        session, service_api_key, client.client_id, old_digest=proved.old_digest,
        old_key_id=proved.old_key_id, digest=proved.digest, key_id=proved.key_id,
    ):  # fmt: skip
        log.info("client secret moved to key_id=%s client_id=%s", proved.key_id, client.client_id)
    return client


def revoke(
    session: Session,
    *,
    service_api_key: int,
    form: RevocationForm,
    keys: KeyRing,
    now: int,
    origin: Origin,
) -> Outcome:
    """Authenticates the client, then deletes the token if it is the client's own. A token
    of another client, or none at all, is left as it is and the answer is still OK (RFC 7009
    section 2.2: the AS answers 200 for an invalid token, and tells a client nothing about
    tokens that are not its own)."""
    client = _authenticated(session, service_api_key=service_api_key, form=form, keys=keys, now=now)
    if isinstance(client, Outcome):
        return client
    token = _find(session, service_api_key, form.token, refresh_first=form.refresh_first, keys=keys)
    if token is None:
        return OK
    if token.client_id != client.client_id:
        log.info("revocation of another client's token ignored client_id=%s", client.client_id)
        return OK
    if repository.delete_row(session, token):
        events.record_all(session, EventType.REVOKED, [repository.facts_of(token)], origin, now=now)
        log.info("token revoked token_id=%s client_id=%s", token.token_id, client.client_id)
    return OK
