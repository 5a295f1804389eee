"""Where a provider puts a person's email and groups, and how their values are read (SPEC §3, §5).

Providers differ: Okta and oidc-provider release `groups` for a `groups` scope, Keycloak nests roles at
`realm_access.roles`, Auth0 takes only namespaced claims such as `https://example.com/groups`, Entra ID says
`groups` (object ids) or `roles`. OAUTH_GROUPS_CLAIM / OAUTH_EMAIL_CLAIM name the claim as a dotted path or a
namespaced name. A name is first looked up whole (a namespaced name is full of dots); failing that it is
walked as a path, trying the longest key at each level first, so `https://example.com/claims.groups` finds a
`groups` inside a `https://example.com/claims` object.

Groups may come as a JSON list or as one string separated by spaces or commas (SAML bridges, some
Keycloak mappers); items that are not strings are ignored rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ClaimPaths", "find_claim", "groups_value", "valid_claim_path"]

_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class ClaimPaths:
    groups: str = "groups"
    email: str = "email"

    def groups_in(self, claims: Mapping[str, Any]) -> frozenset[str] | None:
        """The groups `claims` carry, or None when the claim is not there at all."""
        return groups_value(find_claim(claims, self.groups))

    def email_in(self, claims: Mapping[str, Any]) -> str | None:
        value = find_claim(claims, self.email)
        return value.strip() if isinstance(value, str) else None


def valid_claim_path(path: str) -> bool:
    """A usable claim name: not blank, no whitespace, no empty path segment at either end."""
    return (
        bool(path)
        and not any(c.isspace() for c in path)
        and not path.startswith(".")
        and not path.endswith(".")
    )


def find_claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at `path` (a whole key, else a dotted path); None when absent or JSON null."""
    if path in claims:
        return claims[path]
    cut = len(path)
    while (cut := path.rfind(".", 0, cut)) > 0:
        inner = claims.get(path[:cut])
        if isinstance(inner, Mapping):
            found = find_claim(inner, path[cut + 1 :])
            if found is not None:
                return found
    return None


def groups_value(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset(g for g in _SEPARATORS.split(value) if g)
    if isinstance(value, list | tuple):
        return frozenset(g.strip() for g in value if isinstance(g, str) and g.strip())
    return frozenset()  # present but of a shape we do not read: no groups, never a guess
