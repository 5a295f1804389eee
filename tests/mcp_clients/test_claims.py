"""OAUTH_GROUPS_CLAIM / OAUTH_EMAIL_CLAIM: where each provider family puts groups and email (SPEC §3, §5)."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_clients.claims import ClaimPaths, find_claim, valid_claim_path

KEYCLOAK = {"sub": "u1", "realm_access": {"roles": ["oncall", "offline_access"]}, "email": "a@example.com"}
AUTH0 = {"sub": "u1", "https://example.com/groups": ["oncall"], "https://example.com/email": "a@example.com"}
NESTED_NAMESPACE = {"sub": "u1", "https://example.com/claims": {"groups": "oncall, data-eng"}}


@pytest.mark.parametrize(
    ("claims", "path", "groups"),
    [
        ({"groups": ["oncall", "data-eng"]}, "groups", {"oncall", "data-eng"}),
        (KEYCLOAK, "realm_access.roles", {"oncall", "offline_access"}),
        (AUTH0, "https://example.com/groups", {"oncall"}),
        (NESTED_NAMESPACE, "https://example.com/claims.groups", {"oncall", "data-eng"}),
        ({"groups": "oncall data-eng,  ads-eng"}, "groups", {"oncall", "data-eng", "ads-eng"}),
        ({"roles": ["oncall", 7, {"id": "x"}, " "]}, "roles", {"oncall"}),
        ({"groups": {"not": "a list"}}, "groups", set()),
    ],
)
def test_groups_are_found_by_path_or_namespaced_name_as_a_list_or_a_separated_string(
    claims: dict[str, Any], path: str, groups: set[str]
) -> None:
    assert ClaimPaths(groups=path).groups_in(claims) == groups


@pytest.mark.parametrize(
    ("claims", "path"),
    [({"sub": "u1"}, "groups"), (KEYCLOAK, "resource_access.roles"), ({"groups": None}, "groups")],
)
def test_an_absent_groups_claim_is_told_apart_from_an_empty_one(claims: dict[str, Any], path: str) -> None:
    assert ClaimPaths(groups=path).groups_in(claims) is None
    assert ClaimPaths().groups_in({"groups": []}) == frozenset()


def test_the_email_claim_may_be_namespaced_and_must_be_a_string() -> None:
    assert ClaimPaths(email="https://example.com/email").email_in(AUTH0) == "a@example.com"
    assert ClaimPaths().email_in(AUTH0) is None
    assert ClaimPaths(email="upn").email_in({"upn": ["not", "an", "address"]}) is None
    assert find_claim(KEYCLOAK, "realm_access.roles.0") is None  # paths walk objects, not lists


@pytest.mark.parametrize("path", ["", " groups", "realm access", ".groups", "groups."])
def test_a_claim_name_with_spaces_or_empty_ends_is_not_a_claim_name(path: str) -> None:
    assert not valid_claim_path(path)
