"""Workflow runs in Redis: what was asked, by whom, where, and how far it got (resumable after approvals)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from approvals.replication import NO_REPLICAS, NotReplicated, Replication, replicated

__all__ = ["WorkflowRun", "WorkflowRunStore"]

RUN_TTL_SECONDS = 30 * 86400
RUNNING_KEY = "chatops:wfruns:running"  # zset "run id|claim token" -> when its lease ends
RECENT_PER_USER = 20


@dataclass
class WorkflowRun:
    id: str
    workflow: str
    params: dict[str, Any]
    team: str
    channel: str
    user: str
    created_at: float
    thread_ts: str | None = None
    status: str = "queued"  # queued | running | waiting_approval | succeeded | failed | rejected | expired
    state: str = ""  # agent.workflow_runner.RunState JSON
    message_ts: str | None = None
    approvals: list[str] = field(default_factory=list)
    summary: str = ""
    finished_at: float | None = None
    sub: str = ""  # the person who started it (SPEC §5): every step runs as them or not at all


class WorkflowRunStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        clock: Callable[[], float] = time.time,
        replication: Replication = NO_REPLICAS,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._replication = replication

    async def create(
        self,
        *,
        workflow: str,
        params: dict[str, Any],
        team: str,
        channel: str,
        user: str,
        sub: str,
        thread_ts: str | None = None,
    ) -> WorkflowRun:
        run = WorkflowRun(
            "w" + secrets.token_hex(5),
            workflow,
            params,
            team,
            channel,
            user,
            self._clock(),
            thread_ts,
            sub=sub,
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(f"chatops:wfrun:{run.id}", json.dumps(asdict(run)), ex=RUN_TTL_SECONDS)
            pipe.lpush(f"chatops:wfruns:{team}:{user}", run.id)
            pipe.ltrim(f"chatops:wfruns:{team}:{user}", 0, RECENT_PER_USER - 1)
            await pipe.execute()
        return run

    async def get(self, run_id: str) -> WorkflowRun | None:
        raw = await self._redis.get(f"chatops:wfrun:{run_id}")
        return WorkflowRun(**json.loads(raw)) if raw else None

    async def save(self, run: WorkflowRun) -> None:
        await self._redis.set(f"chatops:wfrun:{run.id}", json.dumps(asdict(run)), ex=RUN_TTL_SECONDS)

    async def recent(self, team: str, user: str, limit: int = 5) -> list[WorkflowRun]:
        ids = await self._redis.lrange(f"chatops:wfruns:{team}:{user}", 0, limit - 1)
        runs = [await self.get(str_if_bytes(i)) for i in ids]
        return [r for r in runs if r is not None]

    async def start(self, run_id: str, token: str, seconds: float) -> bool:
        """Once per (run, token): a job enqueued twice does not run a step twice. Claims and holds the run's
        lease at once, confirmed by the required replicas (approvals.replication). False: a
        duplicate. `NotReplicated`: a failover could lose the claim and run the steps again (a resume could
        ask for a second approval of the same step), so do not run them (the claim stays: it is never
        run by this token again)."""

        async def write(client: aioredis.Redis) -> bool:
            claim = f"chatops:wfrun-claim:{run_id}:{token}"
            if not await client.set(claim, "1", nx=True, ex=RUN_TTL_SECONDS):
                return False
            await client.zadd(RUNNING_KEY, {f"{run_id}|{token}": self._clock() + seconds})
            return True

        try:
            return await replicated(self._redis, self._replication, write)
        except NotReplicated as exc:
            if not exc.result:
                return False
            raise

    # --- leases of running executions (a worker that dies mid-run stops renewing; see flows.workflow) ---

    async def renew(self, run_id: str, token: str, seconds: float) -> bool:
        """Extend a held lease; False when it is gone (released, or ended by the sweep)."""
        member = f"{run_id}|{token}"
        return bool(await self._redis.zadd(RUNNING_KEY, {member: self._clock() + seconds}, xx=True, ch=True))

    async def release(self, run_id: str, token: str) -> None:
        await self._redis.zrem(RUNNING_KEY, f"{run_id}|{token}")

    async def lapsed(self, now: float, limit: int = 50) -> list[tuple[str, str]]:
        """(run id, token) of executions whose lease ended before `now`."""
        raw = await self._redis.zrangebyscore(RUNNING_KEY, "-inf", now, start=0, num=limit)
        found = []
        for member in raw:
            text = member.decode() if isinstance(member, bytes) else str(member)
            run_id, _, token = text.partition("|")
            found.append((run_id, token))
        return found
