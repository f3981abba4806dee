"""Wire compatibility: Authlete's own Python client (`authlete` on PyPI), unmodified, against a
real tokenstore server on a loopback port. Its request objects send every field, with
null, 0 or false where the caller set nothing, and it parses enums by name."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from authlete.api.authlete_api_exception import AuthleteApiException
from authlete.api.authlete_api_impl import AuthleteApiImpl
from authlete.conf.authlete_configuration import AuthleteConfiguration
from authlete.dto.authz_details import AuthzDetails
from authlete.dto.authz_details_element import AuthzDetailsElement
from authlete.dto.client import Client
from authlete.dto.client_extension import ClientExtension
from authlete.dto.introspection_action import IntrospectionAction
from authlete.dto.introspection_request import IntrospectionRequest
from authlete.dto.pair import Pair
from authlete.dto.property import Property
from authlete.dto.scope import Scope
from authlete.dto.service import Service
from authlete.dto.standard_introspection_action import StandardIntrospectionAction
from authlete.dto.standard_introspection_request import StandardIntrospectionRequest
from authlete.dto.token_create_action import TokenCreateAction
from authlete.dto.token_create_request import TokenCreateRequest
from authlete.dto.token_revoke_request import TokenRevokeRequest
from authlete.dto.token_update_action import TokenUpdateAction
from authlete.dto.token_update_request import TokenUpdateRequest
from authlete.types.grant_type import GrantType

from app.kit.hashing import token_hash
from tests.conftest import OPERATOR
from tests.proofs import ProofMaker, self_signed_certificate

THUMB = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def api(base_url: str, **credentials: Any) -> AuthleteApiImpl:
    configuration = AuthleteConfiguration()
    configuration.baseUrl = base_url
    for name, value in credentials.items():
        setattr(configuration, name, value)
    return AuthleteApiImpl(configuration)


def scope(name: str, attributes: dict[str, str] | None = None) -> Scope:
    result = Scope()
    result.name = name
    result.attributes = []
    for key, value in (attributes or {}).items():
        pair = Pair()
        pair.key, pair.value = key, value
        result.attributes.append(pair)
    return result


def prop(key: str, value: str, *, hidden: bool = False) -> Property:
    result = Property()
    result.key, result.value, result.hidden = key, value, hidden
    return result


def test_a_whole_flow_through_authletes_client(base_url: str) -> None:
    operator = api(base_url, serviceOwnerApiKey=OPERATOR[0], serviceOwnerApiSecret=OPERATOR[1])

    service = Service()
    service.serviceName = "through the Authlete client"
    service.supportedScopes = [
        scope("read", {"access_token.duration": "600", "refresh_token.duration": "7200"}),
        scope("write", {"access_token.duration": "300"}),
        scope("email"),
    ]
    created_service = operator.createService(service)
    assert created_service.apiKey > 0
    assert created_service.apiSecret
    assert [s.name for s in created_service.supportedScopes] == ["read", "write", "email"]
    assert created_service.accessTokenDuration == 86400  # 0 sent: the default applies
    fetched = operator.getService(created_service.apiKey)
    assert fetched.serviceName == service.serviceName
    assert fetched.apiSecret is None  # shown on creation only
    assert created_service.apiKey in [s.apiKey for s in operator.getServiceList(0, 1000).services]

    authlete = api(
        base_url,
        serviceApiKey=str(created_service.apiKey),
        serviceApiSecret=created_service.apiSecret,
    )
    client = Client()
    client.clientName = "web app"
    extension = ClientExtension()
    extension.requestableScopesEnabled = True
    extension.requestableScopes = ["read", "write"]
    client.extension = extension
    created_client = authlete.createClient(client)
    assert created_client.clientId > 0
    assert created_client.extension.requestableScopes == ["read", "write"]

    create = TokenCreateRequest()
    create.grantType = GrantType.AUTHORIZATION_CODE
    create.clientId = created_client.clientId
    create.subject = "alice"
    create.scopes = ["read", "email"]
    create.properties = [prop("tenant", "acme")]
    token = authlete.tokenCreate(create)
    assert token.action is TokenCreateAction.OK
    assert token.scopes == ["read"]  # email: not requestable by this client
    assert token.refreshToken
    assert token.expiresIn == 86400
    assert token.grantType is GrantType.AUTHORIZATION_CODE

    # Scopes and the durations their attributes give; everything else left as the client's
    # defaults (null, 0, false), which must change nothing.
    update = TokenUpdateRequest()
    update.accessToken = token.accessToken
    update.scopes = ["write", "read", "email"]
    update.accessTokenExpiresAtUpdatedOnScopeUpdate = True
    before = time.time_ns() // 1_000_000
    updated = authlete.tokenUpdate(update)
    assert updated.action is TokenUpdateAction.OK
    assert updated.scopes == ["write", "read"]
    assert before + 300_000 <= updated.accessTokenExpiresAt <= before + 310_000
    assert updated.accessToken == token.accessToken
    assert [(p.key, p.value) for p in updated.properties] == [("tenant", "acme")]
    assert updated.tokenType == "Bearer"

    # Properties, RAR details and a DPoP binding.
    update = TokenUpdateRequest()
    update.accessToken = token.accessToken
    update.properties = [prop("tenant", "acme"), prop("secret", "s", hidden=True)]
    element = AuthzDetailsElement()
    element.type = "payment_initiation"
    element.actions = ["initiate"]
    element.otherFields = '{"instructedAmount": {"currency": "EUR", "amount": "12.00"}}'
    details = AuthzDetails()
    details.elements = [element]
    update.authorizationDetails = details
    update.dpopKeyThumbprint = THUMB
    updated = authlete.tokenUpdate(update)
    assert updated.action is TokenUpdateAction.OK
    assert updated.tokenType == "DPoP"
    assert [(p.key, p.hidden) for p in updated.properties] == [("tenant", False), ("secret", True)]
    assert updated.authorizationDetails.elements[0].type == "payment_initiation"
    assert updated.authorizationDetails.elements[0].actions == ["initiate"]
    assert updated.scopes == ["write", "read"]  # null scopes: unchanged

    # Persistence, through the hash.
    update = TokenUpdateRequest()
    update.accessTokenHash = token_hash(token.accessToken)
    update.accessTokenPersistent = True
    updated = authlete.tokenUpdate(update)
    assert (updated.action, updated.accessTokenExpiresAt) == (TokenUpdateAction.OK, 0)
    assert updated.accessToken is None

    # Regeneration by tokenId: the old value stops working at once.
    update = TokenUpdateRequest()
    update.tokenId = token.tokenId
    update.accessTokenValueUpdated = True
    regenerated = authlete.tokenUpdate(update)
    assert regenerated.action is TokenUpdateAction.OK
    assert regenerated.accessToken not in (None, token.accessToken)
    stale = TokenUpdateRequest()
    stale.accessToken = token.accessToken
    assert authlete.tokenUpdate(stale).action is TokenUpdateAction.NOT_FOUND

    bad = TokenUpdateRequest()
    bad.accessToken = regenerated.accessToken
    bad.certificateThumbprint = "not a thumbprint"
    assert authlete.tokenUpdate(bad).action is TokenUpdateAction.BAD_REQUEST

    listing = authlete.getTokenList(clientIdentifier=str(created_client.clientId), subject="alice")
    assert listing.totalCount == 1
    (listed,) = listing.accessTokens
    assert listed.accessTokenHash == token_hash(regenerated.accessToken)
    assert listed.grantType is GrantType.AUTHORIZATION_CODE
    assert listed.scopes == ["write", "read"]
    assert listing.client.clientId == created_client.clientId

    # Clients and services are managed through the same client library.
    created_client.clientName = "renamed"
    assert authlete.updateClient(created_client).clientName == "renamed"
    assert authlete.getClient(created_client.clientId).clientName == "renamed"
    assert authlete.getClientList().totalCount == 1
    fetched.serviceName = "renamed service"
    assert operator.updateService(fetched).serviceName == "renamed service"
    authlete.deleteClient(created_client.clientId)
    assert authlete.getTokenList().totalCount == 0  # the client's tokens went with it
    operator.deleteService(created_service.apiKey)
    with pytest.raises(AuthleteApiException) as refused:
        authlete.getClientList()
    assert refused.value.response.status_code == 401


def test_wrong_credentials_surface_as_the_clients_exception_with_our_message(
    base_url: str,
) -> None:
    authlete = api(base_url, serviceApiKey="123", serviceApiSecret="nope")
    with pytest.raises(AuthleteApiException) as refused:
        authlete.tokenUpdate(TokenUpdateRequest())
    assert refused.value.response.status_code == 401
    assert refused.value.message == "The service credentials are wrong."


def service_with_client(base_url: str) -> tuple[Service, AuthleteApiImpl, int]:
    operator = api(base_url, serviceOwnerApiKey=OPERATOR[0], serviceOwnerApiSecret=OPERATOR[1])
    service = Service()
    service.serviceName = "resource server checks"
    service.supportedScopes = [scope("read"), scope("write")]
    created = operator.createService(service)
    authlete = api(base_url, serviceApiKey=str(created.apiKey), serviceApiSecret=created.apiSecret)
    client = authlete.createClient(Client())
    return created, authlete, client.clientId


def new_token(authlete: AuthleteApiImpl, client_id: int, **fields: Any) -> Any:
    create = TokenCreateRequest()
    create.grantType = GrantType.AUTHORIZATION_CODE
    create.clientId = client_id
    create.subject = "alice"
    create.scopes = ["read"]
    for name, value in fields.items():
        setattr(create, name, value)
    token = authlete.tokenCreate(create)
    assert token.action is TokenCreateAction.OK
    return token


def test_introspection_revocation_and_deletion_through_authletes_client(base_url: str) -> None:
    _service, authlete, client_id = service_with_client(base_url)
    maker = ProofMaker("RSA")
    pem, thumbprint = self_signed_certificate()
    token = new_token(authlete, client_id, dpopKeyThumbprint=maker.jkt(),
                      certificateThumbprint=thumbprint)  # fmt: skip

    request = IntrospectionRequest()
    request.token = token.accessToken
    request.scopes = ["read"]
    request.subject = "alice"
    request.htm, request.htu = "GET", "https://rs.example.com/x"
    request.dpop = maker.proof(token=token.accessToken, htu="https://rs.example.com/x")
    request.clientCertificate = pem
    answer = authlete.introspection(request)
    assert answer.action is IntrospectionAction.OK
    assert (answer.subject, answer.scopes, answer.usable) == ("alice", ["read"], True)
    assert answer.certificateThumbprint == thumbprint
    replayed = authlete.introspection(request)
    assert replayed.action is IntrospectionAction.UNAUTHORIZED
    assert replayed.responseContent.startswith('DPoP error="invalid_dpop_proof"')

    standard = StandardIntrospectionRequest()
    standard.parameters = f"token={token.accessToken}"
    standard_answer = authlete.standardIntrospection(standard)
    assert standard_answer.action is StandardIntrospectionAction.OK
    assert '"active": true' in standard_answer.responseContent

    second = new_token(authlete, client_id)
    revoke = TokenRevokeRequest()
    revoke.accessTokenIdentifier = second.accessToken
    assert authlete.tokenRevoke(revoke).count == 1
    authlete.tokenDelete(token.tokenId)
    standard_answer = authlete.standardIntrospection(standard)
    assert standard_answer.responseContent == '{"active": false}'
    with pytest.raises(AuthleteApiException) as missing:
        authlete.tokenDelete(token.tokenId)
    assert missing.value.response.status_code == 404


def test_api_v3_paths_with_a_service_access_token(base_url: str) -> None:
    service, basic, client_id = service_with_client(base_url)

    issued = httpx.post(
        f"{base_url}/api/service/{service.apiKey}/access_token/create",
        json={"description": "v3 client"}, auth=OPERATOR,
    ).json()  # fmt: skip
    configuration = AuthleteConfiguration()
    configuration.baseUrl = base_url
    configuration.apiVersion = "V3"
    configuration.serviceApiKey = str(service.apiKey)
    configuration.serviceAccessToken = issued["accessToken"]
    v3 = AuthleteApiImpl(configuration)

    token = new_token(v3, client_id)
    update = TokenUpdateRequest()
    update.accessToken = token.accessToken
    update.scopes = ["write"]
    assert v3.tokenUpdate(update).scopes == ["write"]
    request = IntrospectionRequest()
    request.token = token.accessToken
    assert v3.introspection(request).action is IntrospectionAction.OK
    assert v3.getService(service.apiKey).serviceName == "resource server checks"
    assert v3.getTokenList().totalCount == 1
    revoke = TokenRevokeRequest()
    revoke.subject = "alice"
    assert v3.tokenRevoke(revoke).count == 1

    # The token opens only its own service's paths...
    other, _, _ = service_with_client(base_url)
    configuration.serviceApiKey = str(other.apiKey)
    with pytest.raises(AuthleteApiException) as foreign:
        AuthleteApiImpl(configuration).getTokenList()
    assert foreign.value.response.status_code == 401
    # ...and nothing at all once the operator revokes it.
    listed = httpx.get(
        f"{base_url}/api/service/{service.apiKey}/access_token/get/list", auth=OPERATOR
    ).json()
    assert [t["tokenId"] for t in listed["accessTokens"]] == [issued["tokenId"]]
    assert "accessToken" not in listed["accessTokens"][0]
    revoked = httpx.delete(
        f"{base_url}/api/service/{service.apiKey}/access_token/delete/{issued['tokenId']}",
        auth=OPERATOR,
    )
    assert revoked.status_code == 204
    with pytest.raises(AuthleteApiException) as refused:
        v3.getTokenList()
    assert refused.value.response.status_code == 401
    assert basic.getTokenList().totalCount == 0  # Basic credentials still work
