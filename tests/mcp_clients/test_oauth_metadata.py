"""Authorization server metadata: RFC 8414 path insertion, OpenID fallbacks, the exact issuer (SPEC §5)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fixtures.server import RunningServer, serve
from mcp_clients.oauth_metadata import MetadataError, discover, metadata_urls


@dataclass
class Documents:
    """A host that serves metadata documents at chosen paths and records every path asked for."""

    served: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def any_path(request: Request) -> Response:
            self.asked.append(request.url.path)
            doc = self.served.get(request.url.path)
            return JSONResponse(doc) if doc is not None else JSONResponse({"error": "not_found"}, 404)

        return Starlette(routes=[Route("/{path:path}", any_path)])


@pytest.fixture
def host() -> Iterator[tuple[Documents, RunningServer]]:
    docs = Documents()
    with serve(docs.app()) as running:
        yield docs, running


def document(issuer: str, **extra: Any) -> dict[str, Any]:
    return {"issuer": issuer, "token_endpoint": f"{issuer}/token", **extra}


async def test_an_issuer_with_a_path_is_found_by_path_insertion_first(
    host: tuple[Documents, RunningServer],
) -> None:
    docs, running = host
    issuer = f"{running.url}/tenant"
    docs.served["/.well-known/oauth-authorization-server/tenant"] = document(issuer)
    docs.served["/tenant/.well-known/openid-configuration"] = document(issuer, jwks_uri=f"{issuer}/keys")
    async with httpx2.AsyncClient() as http:
        meta = await discover(http, issuer)
    assert meta.issuer == issuer
    assert meta.jwks_uri is None  # the RFC 8414 document won; jwks_uri is optional there
    assert docs.asked == ["/.well-known/oauth-authorization-server/tenant"]


async def test_an_issuer_with_a_path_falls_back_to_openid_discovery_by_insertion_then_appending(
    host: tuple[Documents, RunningServer],
) -> None:
    docs, running = host
    issuer = f"{running.url}/realms/ops"
    docs.served["/realms/ops/.well-known/openid-configuration"] = document(
        issuer, userinfo_endpoint=issuer + "/me"
    )
    async with httpx2.AsyncClient() as http:
        meta = await discover(http, issuer)
    assert meta.userinfo_endpoint == f"{issuer}/me"
    assert docs.asked == [
        "/.well-known/oauth-authorization-server/realms/ops",
        "/.well-known/openid-configuration/realms/ops",
        "/realms/ops/.well-known/openid-configuration",
    ]


async def test_an_issuer_without_a_path_tries_rfc8414_then_openid_configuration(
    host: tuple[Documents, RunningServer],
) -> None:
    docs, running = host
    docs.served["/.well-known/openid-configuration"] = document(running.url)
    async with httpx2.AsyncClient() as http:
        meta = await discover(http, running.url + "/")  # an origin with its "/" is the same issuer
    assert meta.issuer == running.url
    assert docs.asked == ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


@pytest.mark.parametrize("named", ["{base}/tenant/", "{base}/other", "{base}"])
async def test_a_document_that_names_another_issuer_is_refused_and_the_search_stops(
    host: tuple[Documents, RunningServer], named: str
) -> None:
    docs, running = host
    issuer = f"{running.url}/tenant"
    docs.served["/.well-known/oauth-authorization-server/tenant"] = document(named.format(base=running.url))
    docs.served["/tenant/.well-known/openid-configuration"] = document(issuer)
    async with httpx2.AsyncClient() as http:
        with pytest.raises(MetadataError, match="names another issuer"):
            await discover(http, issuer)
    assert docs.asked == ["/.well-known/oauth-authorization-server/tenant"]


async def test_a_malformed_field_is_named_and_a_missing_document_says_where_it_looked(
    host: tuple[Documents, RunningServer],
) -> None:
    docs, running = host
    docs.served["/.well-known/oauth-authorization-server"] = document(running.url, scopes_supported="groups")
    async with httpx2.AsyncClient() as http:
        with pytest.raises(MetadataError, match="scopes_supported is not a list"):
            await discover(http, running.url)
        with pytest.raises(MetadataError, match=r"HTTP 404 at /nowhere/\.well-known/openid-configuration"):
            await discover(http, f"{running.url}/nowhere")


def test_the_places_to_look_follow_rfc8414_and_openid_discovery() -> None:
    assert metadata_urls("https://id.example.com/tenant/") == [
        "https://id.example.com/.well-known/oauth-authorization-server/tenant",
        "https://id.example.com/.well-known/openid-configuration/tenant",
        "https://id.example.com/tenant/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://id.example.com") == [
        "https://id.example.com/.well-known/oauth-authorization-server",
        "https://id.example.com/.well-known/openid-configuration",
    ]
