"""The approval seal under key rotation, and the server it binds (SPEC §5 "Secrets", §6)."""

from __future__ import annotations

import redis.asyncio as aioredis

from approvals.store import ApprovalStore
from tests.approvals.conftest import Clock
from tests.approvals.test_store import new

OLD, NEW = b"o" * 32, b"n" * 32


async def test_a_record_sealed_under_the_old_key_verifies_after_rotation_and_new_ones_use_the_new_key(
    aredis: aioredis.Redis, clock: Clock
) -> None:
    before = ApprovalStore(aredis, clock=clock, seal_key=OLD)
    rotated = ApprovalStore(aredis, clock=clock, seal_key=NEW, older_seal_keys=[OLD])
    sealed_before = await new(before)
    assert await rotated.verify(sealed_before) is None
    sealed_after = await new(rotated)
    assert await ApprovalStore(aredis, seal_key=NEW).verify(sealed_after) is None
    assert await before.verify(sealed_after) == "seal mismatch"  # the first key seals


async def test_once_the_old_key_is_dropped_its_records_no_longer_verify(
    aredis: aioredis.Redis, clock: Clock
) -> None:
    sealed_before = await new(ApprovalStore(aredis, clock=clock, seal_key=OLD))
    assert await ApprovalStore(aredis, seal_key=NEW).verify(sealed_before) == "seal mismatch"


async def test_the_server_url_and_resource_are_sealed(aredis: aioredis.Redis, clock: Clock) -> None:
    store = ApprovalStore(aredis, clock=clock, seal_key=NEW)
    for field in ("server_url", "resource"):
        approval = await new(store)
        await aredis.hset(f"chatops:approval:{approval.id}", field, "https://elsewhere.example.com/mcp")
        moved = await store.get(approval.id)
        assert moved is not None
        assert await store.verify(moved) == "seal mismatch"


async def test_a_record_that_does_not_name_its_server_url_is_refused(
    aredis: aioredis.Redis, clock: Clock
) -> None:
    store = ApprovalStore(aredis, clock=clock, seal_key=NEW)
    approval = await new(store)
    await aredis.hdel(f"chatops:approval:{approval.id}", "server_url", "resource")  # made before binding
    old = await store.get(approval.id)
    assert old is not None
    assert old.server_url == ""
    problem = await store.verify(old)
    assert problem is not None
    assert problem.startswith("the server changed since it was approved")
