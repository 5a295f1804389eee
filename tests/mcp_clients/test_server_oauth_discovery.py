"""Finding an `auth: oauth` server's authorization server: challenge, RFC 9728, RFC 8414/OIDC, 2025-03-26."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest

from fixtures.own_as_mcp import ThirdPartyServer
from mcp_clients.oauth_metadata import metadata_urls
from mcp_clients.server_oauth_discovery import Challenge, discover, resource_covers
from mcp_clients.server_oauth_errors import ResourceMismatch, ServerAuthError


@pytest.fixture
def server() -> Iterator[ThirdPartyServer]:
    with ThirdPartyServer() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


def test_a_challenge_is_read_with_quoted_commas_and_spaces_and_other_schemes_around_it() -> None:
    header = (
        'DPoP algs="ES256", Bearer error="insufficient_scope", scope="a:read b:write", '
        'resource_metadata="https://h/.well-known/oauth-protected-resource/mcp", error_description="x, y"'
    )
    challenge = Challenge.parse(403, header)
    assert challenge == Challenge(
        403, "insufficient_scope", "a:read b:write", "https://h/.well-known/oauth-protected-resource/mcp"
    )
    assert challenge.insufficient_scope
    assert Challenge.parse(401, "Bearer scope=files.read") == Challenge(401, None, "files.read", None)
    assert Challenge.parse(401, 'Basic realm="x"') is None
    assert Challenge.parse(401, None) is None


def test_a_resource_covers_its_own_url_and_those_under_it_never_a_neighbour_or_another_origin() -> None:
    assert resource_covers("https://h/mcp", "https://H/mcp/")
    assert resource_covers("https://h", "https://h/mcp")
    assert resource_covers("https://h:443/", "https://h/mcp")
    assert not resource_covers("https://h/mcp", "https://h/mcp2")
    assert not resource_covers("https://h/mcp/tenant", "https://h/mcp")
    assert not resource_covers("https://evil.example.com/mcp", "https://h/mcp")
    assert not resource_covers("http://h/mcp", "https://h/mcp")
    assert not resource_covers("https://h:8443/mcp", "https://h/mcp")


def test_metadata_of_an_issuer_with_a_path_is_never_looked_for_at_the_root() -> None:
    assert metadata_urls("https://h/tenant1") == [
        "https://h/.well-known/oauth-authorization-server/tenant1",
        "https://h/.well-known/openid-configuration/tenant1",
        "https://h/tenant1/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://h/") == [
        "https://h/.well-known/oauth-authorization-server",
        "https://h/.well-known/openid-configuration",
    ]


async def test_the_401_challenge_leads_to_the_metadata_and_its_scope(
    server: ThirdPartyServer, http: httpx2.AsyncClient
) -> None:
    server.knobs.challenge_scope = "tickets:read"
    server.knobs.scopes_supported = ["tickets:read", "tickets:write"]
    found = await discover(http, server.url)
    assert found.challenge is not None
    assert found.challenge.scope == "tickets:read"
    assert found.prm is not None
    assert found.prm.url.endswith("/.well-known/oauth-protected-resource/mcp")
    assert found.resource == server.url
    assert found.issuer == server.auth.issuer
    assert not found.legacy


async def test_without_a_header_the_path_aware_then_the_root_metadata_is_found(
    server: ThirdPartyServer, http: httpx2.AsyncClient
) -> None:
    server.knobs.header_metadata = False
    found = await discover(http, server.url)
    assert found.prm is not None
    assert found.prm.url == f"{server.base_url}/.well-known/oauth-protected-resource/mcp"
    server.knobs.prm = "root"
    found = await discover(http, server.url)
    assert found.prm is not None
    assert found.prm.url == f"{server.base_url}/.well-known/oauth-protected-resource"
    assert found.resource == server.base_url  # the root resource covers /mcp


async def test_a_path_issuer_is_found_by_path_insertion(
    server: ThirdPartyServer, http: httpx2.AsyncClient
) -> None:
    server.auth.knobs.prefix = "/tenant1"
    server.stop()
    server.start()  # routes are built at start
    found = await discover(http, server.url)
    assert found.issuer == f"{server.base_url}/tenant1"
    assert found.metadata.token_endpoint == f"{server.base_url}/tenant1/token"


async def test_metadata_for_another_resource_stops_before_the_authorization_server_is_asked(
    server: ThirdPartyServer, http: httpx2.AsyncClient
) -> None:
    server.knobs.prm_resource = "https://evil.example.com/mcp"
    with pytest.raises(ResourceMismatch, match="evil.example.com"):
        await discover(http, server.url)
    assert server.auth.requests() == []


async def test_the_registry_resource_must_agree_with_what_the_server_says(
    server: ThirdPartyServer, http: httpx2.AsyncClient
) -> None:
    with pytest.raises(ResourceMismatch, match="registry says"):
        await discover(http, server.url, resource=f"{server.base_url}/other")


async def test_a_2025_03_26_server_has_metadata_at_its_origin_or_else_default_endpoints(
    server: ThirdPartyServer, http: httpx2.AsyncClient
) -> None:
    server.knobs.prm = "none"
    found = await discover(http, server.url)
    assert found.legacy
    assert found.prm is None
    assert found.issuer == server.base_url
    assert found.metadata.raw["issuer"] == server.base_url  # read from the origin's metadata
    assert found.resource == server.url
    server.auth.knobs.metadata = False
    found = await discover(http, server.url)
    assert found.legacy
    assert found.metadata.raw == {}
    assert found.metadata.authorization_endpoint == f"{server.base_url}/authorize"
    assert found.metadata.token_endpoint == f"{server.base_url}/token"
    assert found.metadata.registration_endpoint == f"{server.base_url}/register"


async def test_authorization_server_metadata_naming_another_issuer_is_refused(
    server: ThirdPartyServer, http: httpx2.AsyncClient
) -> None:
    server.auth.knobs.claimed_issuer = "https://login.example.com"
    with pytest.raises(ServerAuthError, match="another issuer"):
        await discover(http, server.url)
    server.knobs.authorization_server = f"{server.base_url}/someone-else"  # publishes nothing at all
    with pytest.raises(ServerAuthError, match="publishes no metadata"):
        await discover(http, server.url)


async def test_an_authorization_server_at_a_metadata_address_is_never_contacted(
    server: ThirdPartyServer, http: httpx2.AsyncClient
) -> None:
    server.knobs.authorization_server = "http://169.254.169.254/latest"
    with pytest.raises(ServerAuthError, match="refused"):
        await discover(http, server.url)
