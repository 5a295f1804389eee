"""Rotating CHATOPS_SECRET_KEY ("new,old"): links sealed under the old key keep working, and move to the new
key as they are used, so the old key can then be dropped (SPEC §5 "Secrets")."""

from __future__ import annotations

import jwt
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from mcp_clients.sealing import Sealer
from mcp_clients.tokens import TokenBroker
from tests.mcp_clients.conftest import TEAM, IdentityWorld


async def test_a_refresh_reseals_the_link_under_the_new_key_even_when_the_provider_does_not_rotate(
    identity_world: IdentityWorld, aredis: aioredis.Redis
) -> None:
    w = identity_world
    await w.link("alice")  # sealed under the old key
    w.idp.set_refresh_rotation(False)  # the refresh answers with no new refresh token
    new_key = Fernet.generate_key().decode()
    rotated = TokenBroker(aredis, w.provider, Sealer([new_key, w.secret_key]))
    await rotated.user_token(TEAM, "U0ALICE", w.audience("PRESTO_URL"))
    refresh = [r for r in w.idp.requests("/token") if r.grant_type == "refresh_token"]
    assert len(refresh) == 1
    assert w.idp.counters().get("family.revoked", 0) == 0
    # The old key dropped: the link still opens, and the provider still honours the token it kept.
    only_new = TokenBroker(aredis, w.provider, Sealer([new_key]))
    token = await only_new.user_token(TEAM, "U0ALICE", w.audience("SPARK_URL"))
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "u-alice"
