"""The seal on an approval: an HMAC over the facts that decide what runs (SPEC §5 "Secrets", §6, §10).

Arguments (or arguments and their digest), requester, server, URL, resource or fingerprint edited directly in
Redis no longer match the seal, so the record is refused before anything runs (ACCEPTANCE 27).

Keys rotate like tokens at rest: the first key seals, every key listed verifies, so an approval sealed before
CHATOPS_SECRET_KEY became "new,old" still runs, and one sealed under a key no longer listed does not.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from approvals.approval import canonical_json

__all__ = ["SEALED", "ApprovalSeal", "seal_keys"]

# What the seal binds: change any of these in Redis and `verifies` is False. `identity` is bound too when it
# is `service` (see `_mac`): a record cannot be switched to run with the bot's own token.
SEALED = (
    "id",
    "server",
    "server_url",
    "resource",
    "tool",
    "args_sha256",
    "requester",
    "requester_sub",
    "fingerprint",
)


def seal_keys(masters: Sequence[str]) -> list[bytes]:
    """The seal keys derived from the deployment's master keys (CHATOPS_SECRET_KEY), in the same order: the
    first seals, all verify. Derived, so a seal key is never also a key that encrypts tokens."""
    return [hashlib.sha256(b"chatops-mcp/approval-seal/v1|" + m.encode()).digest() for m in masters]


class ApprovalSeal:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(len(k) < 16 for k in keys):
            raise ValueError("at least one seal key, each at least 16 bytes")
        self._keys = tuple(keys)

    def seal(self, values: Mapping[str, Any]) -> str:
        return self._mac(self._keys[0], values)

    def verifies(self, values: Mapping[str, Any], seal: str) -> bool:
        return any(hmac.compare_digest(self._mac(key, values), seal) for key in self._keys)

    @staticmethod
    def _mac(key: bytes, values: Mapping[str, Any]) -> str:
        sealed = {name: values[name] for name in SEALED}
        if values.get("identity", "user") != "user":  # records sealed before the field existed still open
            sealed["identity"] = values["identity"]
        facts = canonical_json(sealed)
        return hmac.new(key, facts.encode(), hashlib.sha256).hexdigest()
