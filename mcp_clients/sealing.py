"""Tokens at rest: Fernet ciphertext bound to (Slack team, Slack user, issuer) (SPEC §5 "Secrets").

Each record gets its own Fernet key, derived with HKDF from a master key and the binding. A ciphertext copied
into another person's record therefore fails to decrypt there: the binding is part of the key, not a field
an attacker with Redis write access could edit. CHATOPS_SECRET_KEY may list several master keys: the first
encrypts, all decrypt, so keys rotate without a flag day; `reseal` moves a record to the first key (the token
broker does it to a link's refresh token at every refresh, so an old key stops being needed).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["Binding", "SealError", "Sealer"]


class SealError(Exception):
    """The ciphertext does not open for this binding (wrong person, wrong key, or tampered)."""


@dataclass(frozen=True)
class Binding:
    team: str
    user: str
    issuer: str

    def info(self, purpose: str) -> bytes:
        # Length-prefixed parts: "a|b" + "c" can never collide with "a" + "b|c".
        parts = (purpose, self.team, self.user, self.issuer)
        return b"".join(len(p.encode()).to_bytes(2, "big") + p.encode() for p in parts)


class Sealer:
    def __init__(self, master_keys: Sequence[str]) -> None:
        if not master_keys:
            raise ValueError("at least one master key is needed")
        self._masters = [base64.urlsafe_b64decode(k.encode()) for k in master_keys]
        self._cache: dict[tuple[Binding, str], MultiFernet] = {}

    def _fernet(self, binding: Binding, purpose: str) -> MultiFernet:
        # Deriving is ~0.1 ms per key; a token is read on every tool call, so keep what was derived.
        cached = self._cache.get((binding, purpose))
        if cached is not None:
            return cached
        if len(self._cache) > 4096:
            self._cache.clear()
        fernet = self._derive(binding, purpose)
        self._cache[(binding, purpose)] = fernet
        return fernet

    def _derive(self, binding: Binding, purpose: str) -> MultiFernet:
        keys = []
        for master in self._masters:
            derived = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=b"chatops-mcp/seal/v1", info=binding.info(purpose)
            )
            keys.append(Fernet(base64.urlsafe_b64encode(derived.derive(master))))
        return MultiFernet(keys)

    def seal(self, plaintext: str, binding: Binding, purpose: str = "refresh") -> str:
        return self._fernet(binding, purpose).encrypt(plaintext.encode()).decode()

    def open(self, ciphertext: str, binding: Binding, purpose: str = "refresh") -> str:
        try:
            return self._fernet(binding, purpose).decrypt(ciphertext.encode()).decode()
        except (InvalidToken, ValueError):
            raise SealError("token does not open for this person; they must connect again") from None

    def reseal(self, ciphertext: str, binding: Binding, purpose: str = "refresh") -> str:
        """Re-encrypt under the first master key (key rotation)."""
        try:
            return self._fernet(binding, purpose).rotate(ciphertext.encode()).decode()
        except (InvalidToken, ValueError):
            raise SealError("token does not open for this person; they must connect again") from None
