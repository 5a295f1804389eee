"""What a token is for: one server name, at one URL, for one resource, asked for one way (SPEC §5)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from registry_cache.model import ServerEntry

__all__ = ["Audience"]


@dataclass(frozen=True)
class Audience:
    """What a token is obtained for and may be sent to: one server name, at one URL, for one resource; and
    how it is asked for (the registry entry's `token`: resource, scope or exchange)."""

    server: str
    url: str
    resource: str
    token: Literal["resource", "scope", "exchange"] = "resource"
    scope: str = ""

    @classmethod
    def of(cls, entry: ServerEntry) -> Audience:
        """Where an entry's tokens may go, and only there."""
        gov = entry.governance
        return cls(entry.name, entry.url, entry.resource, gov.token, gov.scope or "")

    @property
    def digest(self) -> str:
        parts = [self.server, self.url, self.resource]
        if self.token != "resource":  # a token asked for another way is another token
            parts += [self.token, self.scope]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    @property
    def purpose(self) -> str:
        """The sealing purpose of its cached token: the ciphertext opens for this audience only."""
        return f"access:{self.digest}"
