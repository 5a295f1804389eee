"""Refresh tokens at rest are Fernet ciphertext that opens only for the person it was sealed for."""

import base64

import pytest
from cryptography.fernet import Fernet

from mcp_clients.sealing import Binding, Sealer, SealError

K1, K2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
ALICE = Binding("T1", "U0ALICE", "https://idp.example.com")
BOB = Binding("T1", "U0BOB", "https://idp.example.com")


def test_round_trip_and_the_ciphertext_is_fernet() -> None:
    sealer = Sealer([K1])
    sealed = sealer.seal("refresh-token-value", ALICE)
    assert "refresh-token-value" not in sealed
    assert base64.urlsafe_b64decode(sealed)[0] == 0x80  # Fernet version byte
    assert sealer.open(sealed, ALICE) == "refresh-token-value"


@pytest.mark.parametrize(
    "other",
    [
        BOB,
        Binding("T2", "U0ALICE", "https://idp.example.com"),
        Binding("T1", "U0ALICE", "https://evil.example.com"),
    ],
)
def test_a_ciphertext_copied_to_another_record_does_not_open(other: Binding) -> None:
    sealer = Sealer([K1])
    with pytest.raises(SealError):
        sealer.open(sealer.seal("secret", ALICE), other)


def test_purposes_are_separate() -> None:
    sealer = Sealer([K1])
    with pytest.raises(SealError):
        sealer.open(sealer.seal("secret", ALICE, purpose="access"), ALICE, purpose="refresh")


def test_binding_parts_cannot_be_shifted() -> None:
    sealer = Sealer([K1])
    sealed = sealer.seal("secret", Binding("T1", "U2|x", "i"))
    with pytest.raises(SealError):
        sealer.open(sealed, Binding("T1|U2", "x", "i"))


def test_key_rotation_first_encrypts_all_decrypt() -> None:
    old = Sealer([K1]).seal("secret", ALICE)
    rotated = Sealer([K2, K1])
    assert rotated.open(old, ALICE) == "secret"
    resealed = rotated.reseal(old, ALICE)
    assert Sealer([K2]).open(resealed, ALICE) == "secret"
    with pytest.raises(SealError):
        Sealer([K1]).open(resealed, ALICE)


def test_tampering_is_detected() -> None:
    sealer = Sealer([K1])
    sealed = bytearray(sealer.seal("secret", ALICE).encode())
    sealed[20] = ord("A") if sealed[20] != ord("A") else ord("B")
    with pytest.raises(SealError):
        sealer.open(sealed.decode(), ALICE)
