"""Approval records and their state machine in Redis; every transition is one Lua script (SPEC §6, §10).

    PENDING ──vote×quorum──▶ APPROVED ──start──▶ RUNNING ──finish──▶ SUCCEEDED | FAILED | OUTCOME_UNKNOWN
       ├──reject──▶ REJECTED                        └──lease passed, mark_unknown──▶ OUTCOME_UNKNOWN
       ├──expiry (vote, reject or the sweeper)──▶ EXPIRED
       └──withdraw (the requester)──▶ WITHDRAWN

- The decision is made from the stored record alone (Habit 5): the caller says only who clicked (their Slack
  account and the `sub` it is linked to) and whether their groups are eligible *now*; requester, expiry,
  quorum and earlier votes are read inside the script, so two processes can never both win a race (no
  read-then-write in Python). A person is their `sub` (SPEC §5): "own request" and "already voted" compare
  subs, and also Slack accounts, so neither a second account nor a relinked one counts twice.
- Every click, refusals included, is appended to `chatops:approval:{id}:attempts` by the same script.
- `seal` (approvals.seal) binds the facts that decide what runs, so arguments (or arguments and digest),
  requester or server edited directly in Redis are caught by `verify` before execution (ACCEPTANCE 27).
- The record's fields and statuses are approvals.approval's; this module re-exports them.
- Errors: `UnknownApproval` (a LookupError) for an id with no record; redis.RedisError propagates, and
  callers turn it into "couldn't record your decision" (ACCEPTANCE 6, 36): nothing is decided without Redis.
- The scripts' texts live in approvals.store_scripts; this module registers and calls them.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Unpack, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.utils import str_if_bytes

from approvals import store_records as records
from approvals.approval import (
    Approval,
    ApprovalStatus,
    CardRef,
    NewApproval,
    Status,
    Vote,
    VoteKind,
    VoteResult,
    args_sha256,
    canonical_json,
)
from approvals.policy import FINAL_OUTCOMES
from approvals.replication import NO_REPLICAS, NotReplicated, Replication, StartNotReplicated, replicated
from approvals.seal import ApprovalSeal
from approvals.store_scripts import (
    _ADD_CARD,
    _EXPIRE,
    _FINISH,
    _GUARD,
    _LIB,
    _REJECT,
    _START,
    _VOTE,
    _WITHDRAW,
)

__all__ = [
    "APPROVED_KEY",
    "Approval",
    "ApprovalStatus",
    "ApprovalStore",
    "CardRef",
    "NewApproval",
    "StartNotReplicated",
    "Status",
    "UnknownApproval",
    "Vote",
    "VoteKind",
    "VoteResult",
    "args_sha256",
    "canonical_json",
]

RETENTION_SECONDS = 30 * 86400  # records outlive any card (TTL ≤ 7 days) and any lease by weeks
PENDING_KEY = "chatops:approvals:pending"
RUNNING_KEY = "chatops:approvals:running"
# APPROVED and not yet started, scored by decision time: the sweeper re-enqueues any whose job was lost.
APPROVED_KEY = "chatops:approvals:approved"
STALE_CARDS_KEY = "chatops:cards-dirty"  # approvals whose cards' last redraw failed: the sweep redraws them
TOLD_SECONDS = 86400  # a notice is given once; by then every card has long expired
_ID = re.compile(r"a[0-9a-f]{23}")


class UnknownApproval(LookupError):
    """No record for this id (never created, malformed, or past retention)."""


class ApprovalStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        clock: Callable[[], float] = time.time,
        seal_key: bytes,
        older_seal_keys: Sequence[bytes] = (),
        replication: Replication = NO_REPLICAS,
    ) -> None:
        """`seal_key` seals new records; it and `older_seal_keys` (keys being rotated out) verify.
        `replication`: how many replicas must hold a start before it is handed out (see `start`)."""
        self._redis = redis
        self._replication = replication
        self._clock = clock
        self._sealer = ApprovalSeal((seal_key, *older_seal_keys))
        self._vote = redis.register_script(_LIB + _GUARD + _VOTE)
        self._reject = redis.register_script(_LIB + _GUARD + _REJECT)
        self._expire = redis.register_script(_LIB + _EXPIRE)
        self._start = redis.register_script(_LIB + _START)
        self._finish = redis.register_script(_LIB + _FINISH)
        self._add_card = redis.register_script(_LIB + _ADD_CARD)
        self._withdraw = redis.register_script(_LIB + _WITHDRAW)

    # ----- create and read ------------------------------------------------------------------------------

    async def create(
        self, *, ttl_seconds: float | None = None, now: float | None = None, **fields: Unpack[NewApproval]
    ) -> Approval:
        """Record a new PENDING approval; it expires at `expires_at`, or `ttl_seconds` after creation."""
        values: dict[str, Any] = dict(fields)
        created = float(values["created_at"]) if "created_at" in values else self._now(now)
        expires = float(values["expires_at"]) if "expires_at" in values else created + (ttl_seconds or 0)
        if values.get("quorum", 1) < 1 or expires <= created:
            raise ValueError("quorum must be ≥ 1, and expiry (expires_at or ttl_seconds) after creation")
        if not values["approver_groups"]:
            raise ValueError("an approval nobody may give could only expire; refuse the call instead")
        if values.get("source", "agent") not in ("agent", "workflow"):
            raise ValueError(f"unknown source {values['source']!r}")
        if values.get("identity", "user") not in ("user", "service"):
            raise ValueError(f"unknown identity {values['identity']!r}")
        args = json.loads(canonical_json(dict(values["arguments"])))  # a private copy, and proof it is JSON
        values.update(
            id="a" + secrets.token_hex(12)[:23],
            arguments=args,
            args_sha256=args_sha256(args),
            approver_groups=tuple(values["approver_groups"]),
            created_at=created,
            expires_at=expires,
        )
        values["seal"] = self._sealer.seal(values)
        approval = Approval(**values)
        key, turn_key = records.record_key(approval.id), f"chatops:turn-approvals:{approval.turn_id}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=records.encode(approval))
            pipe.expire(key, RETENTION_SECONDS)
            pipe.zadd(PENDING_KEY, {approval.id: approval.expires_at})
            pipe.sadd(turn_key, approval.id)
            pipe.expire(turn_key, RETENTION_SECONDS)
            await pipe.execute()
        return approval

    async def get(self, approval_id: str) -> Approval | None:
        if not _ID.fullmatch(approval_id):
            return None
        raw = await self._redis.hgetall(records.record_key(approval_id))
        return records.decode(raw) if raw else None

    async def for_turn(self, turn_id: str) -> list[Approval]:
        found = await self._many(records.ids(await self._redis.smembers(f"chatops:turn-approvals:{turn_id}")))
        return sorted(found, key=lambda a: a.created_at)

    async def pending_for_groups(
        self, groups: Iterable[str] | None, now: float | None = None
    ) -> list[Approval]:
        """PENDING, unexpired approvals that members of `groups` (None: anyone) may decide, oldest first."""
        ids = records.ids(await self._redis.zrangebyscore(PENDING_KEY, f"({self._now(now)}", "+inf"))
        wanted, found = None if groups is None else set(groups), await self._many(ids)
        mine = [a for a in found if wanted is None or wanted & set(a.approver_groups)]
        return sorted((a for a in mine if a.status is ApprovalStatus.PENDING), key=lambda a: a.created_at)

    async def attempts(self, approval_id: str) -> list[dict[str, Any]]:
        return [json.loads(row) for row in await self._redis.lrange(records.attempts_key(approval_id), 0, -1)]

    # ----- decisions ------------------------------------------------------------------------------------

    async def vote(
        self, approval_id: str, *, user: str, sub: str, email: str, eligible: bool, now: float | None = None
    ) -> VoteResult:
        at = self._now(now)
        ballot = json.dumps({"user": user, "sub": sub, "email": email, "at": at}, ensure_ascii=False)
        argv = (user, sub, records.flag(eligible), repr(at), "approve", ballot)
        keys = (PENDING_KEY, APPROVED_KEY)
        return records.vote_result(await self._run(self._vote, approval_id, keys, *argv))

    async def reject(
        self,
        approval_id: str,
        *,
        user: str,
        sub: str,
        eligible: bool,
        reason: str,
        now: float | None = None,
    ) -> VoteResult:
        argv = (user, sub, records.flag(eligible), repr(self._now(now)), "reject", reason, json.dumps([user]))
        return records.vote_result(await self._run(self._reject, approval_id, PENDING_KEY, *argv))

    async def withdraw(
        self, approval_id: str, *, user: str, sub: str, now: float | None = None
    ) -> VoteResult:
        """PENDING → WITHDRAWN when `user` (or `sub`) is the requester; "withdrawn", else why not."""
        argv = (user, sub, repr(self._now(now)), json.dumps([user]))
        return records.vote_result(await self._run(self._withdraw, approval_id, PENDING_KEY, *argv))

    async def expire(self, approval_id: str, now: float | None = None) -> bool:
        return await self._transition(self._expire, approval_id, PENDING_KEY, repr(self._now(now)))

    async def due_for_expiry(self, now: float) -> list[str]:
        return records.ids(await self._redis.zrangebyscore(PENDING_KEY, "-inf", now))

    # ----- execution ------------------------------------------------------------------------------------

    async def start(
        self, approval_id: str, *, lease_seconds: float, now: float | None = None
    ) -> Approval | None:
        """APPROVED → RUNNING; exactly one caller gets the record back, everyone else None. Only once the
        required replicas hold it (approvals.replication); else `StartNotReplicated`: do not run it."""
        if not _ID.fullmatch(approval_id):
            return None
        at = self._now(now)
        keys = (RUNNING_KEY, APPROVED_KEY)
        argv = (repr(at), repr(at + lease_seconds))
        try:
            reply = await replicated(
                self._redis,
                self._replication,
                lambda client: self._run(self._start, approval_id, keys, *argv, client=client),
            )
        except NotReplicated as exc:
            reply = cast(list[Any], exc.result)
            if str_if_bytes(reply[0]) != "yes":
                return None
            started = records.decode(records.pairs(reply[2:]))
            raise StartNotReplicated(started, exc.acked, exc.wanted) from None
        return records.decode(records.pairs(reply[2:])) if str_if_bytes(reply[0]) == "yes" else None

    async def finish(
        self,
        approval_id: str,
        status: ApprovalStatus,
        detail: str = "",
        now: float | None = None,
        *,
        from_server: bool = True,
    ) -> bool:
        """RUNNING → a final outcome. `from_server=False`: the detail is the bot's own reason for not calling
        (nothing of the server's is in it, so a private server's privacy does not hide it)."""
        if status not in FINAL_OUTCOMES:
            raise ValueError(f"a run ends as SUCCEEDED, FAILED or OUTCOME_UNKNOWN, not {status}")
        source = "server" if from_server else "bot"
        argv = (str(status), detail, repr(self._now(now)), "0", source)
        return await self._transition(self._finish, approval_id, RUNNING_KEY, *argv)

    async def approved_before(self, decided_before: float) -> list[str]:
        """APPROVED records decided before `decided_before` that no job has started yet."""
        return records.ids(await self._redis.zrangebyscore(APPROVED_KEY, "-inf", decided_before))

    async def forget_approved(self, approval_id: str) -> None:
        """Drop an id from the approved index (its record is no longer APPROVED)."""
        await self._redis.zrem(APPROVED_KEY, approval_id)

    async def stale_running(self, now: float) -> list[str]:
        return records.ids(await self._redis.zrangebyscore(RUNNING_KEY, "-inf", now))

    async def mark_unknown(self, approval_id: str, detail: str, now: float | None = None) -> bool:
        """RUNNING → OUTCOME_UNKNOWN once the lease has passed; it is never re-run on its own (SPEC §10)."""
        argv = (str(ApprovalStatus.OUTCOME_UNKNOWN), detail, repr(self._now(now)), "1", "server")
        return await self._transition(self._finish, approval_id, RUNNING_KEY, *argv)

    async def add_card(self, approval_id: str, channel: str, ts: str) -> bool:
        card = json.dumps({"channel": channel, "ts": ts})
        return await self._transition(self._add_card, approval_id, None, channel, ts, card)

    # ----- what people were shown --------------------------------------------------------------------------

    async def redraw_later(self, approval_id: str) -> None:
        """Note that a redraw of this approval's cards failed, for the sweep to try again."""
        await self._redis.sadd(STALE_CARDS_KEY, approval_id)

    async def take_stale_cards(self, count: int = 50) -> list[str]:
        """Up to `count` approvals whose cards need a redraw, each handed out once."""
        return records.ids(await self._redis.spop(STALE_CARDS_KEY, count) or [])

    async def first_notice(self, approval_id: str, what: str) -> bool:
        """True the first time this is asked for this approval and `what` (e.g. "expired"): whoever notices
        an expiry first (a click, the expiry job, the sweep) tells people, and nobody else does."""
        key = f"chatops:approval-{what}-told:{approval_id}"
        return bool(await self._redis.set(key, "1", nx=True, ex=TOLD_SECONDS))

    # ----- integrity ------------------------------------------------------------------------------------

    async def verify(self, approval: Approval) -> str | None:
        """None when the record is as created; otherwise why it must not run."""
        if not hmac.compare_digest(args_sha256(approval.arguments), approval.args_sha256):
            return "arguments changed after approval"
        if not (approval.server_url and approval.resource):
            # Recorded before approvals named their server: nothing shows the server is the one approved.
            return "the server changed since it was approved (the approval does not name its server's URL)"
        if not self._sealer.verifies(vars(approval), approval.seal):
            return "seal mismatch"
        return None

    # ----- helpers --------------------------------------------------------------------------------------

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    async def _run(
        self,
        script: AsyncScript,
        approval_id: str,
        third: str | tuple[str, ...] | None,
        *argv: str,
        client: aioredis.Redis | None = None,
    ) -> list[Any]:
        if not _ID.fullmatch(approval_id):
            raise UnknownApproval(approval_id)
        more = (third,) if isinstance(third, str) else third or ()
        keys = [records.record_key(approval_id), records.attempts_key(approval_id), *more]
        reply: list[Any] = await script(keys=keys, args=[approval_id, *argv], client=client)
        if str_if_bytes(reply[0]) == "missing":
            raise UnknownApproval(approval_id)
        return reply

    async def _transition(self, script: AsyncScript, approval_id: str, third: str | None, *argv: str) -> bool:
        if not _ID.fullmatch(approval_id):
            return False
        reply = await self._run(script, approval_id, third, *argv)
        return str_if_bytes(reply[0]) == "yes"

    async def _many(self, ids: Iterable[str]) -> list[Approval]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for approval_id in ids:
                pipe.hgetall(records.record_key(approval_id))
            rows = await pipe.execute()
        return [records.decode(row) for row in rows if row]
