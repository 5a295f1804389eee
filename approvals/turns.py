"""Requests ("turns") and thread conversations in Redis: admitted once, run one at a time per thread.

- A turn's id is derived from (team, channel, ts), so Slack's retries and the app_mention/message pair of one
  message all name the same turn; `admit` records it once (SET NX) and says whether it is new.
- A worker `claim`s a turn before running it, so even a job enqueued twice runs once.
- Each thread has at most one active run; later turns wait in the thread's backlog, in order, and the run that
  finishes hands the thread to the next one (`begin_run`/`end_run`, each one Lua script).
- The transcript of a thread lives here too, so a follow-up continues on any worker after any restart.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

__all__ = ["Conversation", "QueuedJob", "Turn", "TurnStore", "thread_key", "turn_id_for"]

SEEN_TTL_SECONDS = 7 * 86400
TURN_TTL_SECONDS = 30 * 86400
CONVERSATION_TTL_SECONDS = 30 * 86400
ACTIVE_TTL_SECONDS = 3600  # a crashed run must not hold its thread forever


def turn_id_for(team: str, channel: str, ts: str) -> str:
    return "t" + hashlib.sha256(f"{team}|{channel}|{ts}".encode()).hexdigest()[:23]


def thread_key(team: str, channel: str, thread_ts: str) -> str:
    return f"{team}:{channel}:{thread_ts}"


@dataclass(frozen=True)
class Turn:
    id: str
    team: str
    channel: str
    channel_type: str
    user: str
    text: str
    ts: str
    thread_ts: str
    created_at: float
    source: str = "mention"  # mention | dm | thread | workflow | linked

    @property
    def thread(self) -> str:
        return thread_key(self.team, self.channel, self.thread_ts)


@dataclass
class Conversation:
    messages: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # digests of calls people rejected in this thread
    users: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class QueuedJob:
    """A job to put on a queue in the same atomic step that admits a new turn: its hash, its id pushed on
    the queue's list, the list registered in the set of queues (the layout of RQ; see bot.queues)."""

    job_id: str
    job_key: str
    queue_key: str
    queues_key: str
    fields: Mapping[str, EncodableT]


# KEYS: seen, turn hash, seen-event[, set of queues, job hash, queue list]. ARGV: ttl, turn ttl, turn id,
# the number n of turn field/value arguments, those n, then (with a job) the job id and the job's pairs.
# Returns 1 when newly admitted. The event marker is written either way (it names the turn).
_ADMIT = """
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[1])
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then return 0 end
local n = tonumber(ARGV[4])
for i = 5, 4 + n, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[2], ARGV[2])
if #KEYS == 6 then
  for i = 6 + n, #ARGV, 2 do redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1]) end
  redis.call('SADD', KEYS[4], KEYS[6])
  redis.call('RPUSH', KEYS[6], ARGV[5 + n])
end
return 1
"""
# KEYS: active, backlog. ARGV: turn id, ttl. 1 = this turn runs now; 0 = queued behind the active run.
_BEGIN = """
local active = redis.call('GET', KEYS[1])
if active and active ~= ARGV[1] then
  if redis.call('LPOS', KEYS[2], ARGV[1]) == false then redis.call('RPUSH', KEYS[2], ARGV[1]) end
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# KEYS: active, backlog. ARGV: turn id, ttl. Returns the next turn to run, if any (it becomes active).
_END = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local nxt = redis.call('LPOP', KEYS[2])
if nxt then redis.call('SET', KEYS[1], nxt, 'EX', ARGV[2]) else redis.call('DEL', KEYS[1]) end
return nxt
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class TurnStore:
    def __init__(self, redis: aioredis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock
        # Registered once: EVALSHA sends a digest instead of the script on every call (ingress hot path).
        self._admit = redis.register_script(_ADMIT)
        self._begin = redis.register_script(_BEGIN)
        self._end = redis.register_script(_END)

    async def admit(
        self,
        *,
        team: str,
        channel: str,
        channel_type: str,
        user: str,
        text: str,
        ts: str,
        thread_ts: str,
        source: str,
        event_id: str = "",
        job: Callable[[str], QueuedJob] | None = None,
    ) -> tuple[Turn, bool]:
        """Record the turn for this message once. Returns (turn, newly_admitted).

        `job(turn_id)` describes the job that answers a new turn: it is queued in the same atomic step, so
        a new turn is never stored without its job (and the event costs one round trip to Redis)."""
        turn = Turn(
            turn_id_for(team, channel, ts),
            team,
            channel,
            channel_type,
            user,
            text,
            ts,
            thread_ts,
            self._clock(),
            source,
        )
        values: list[EncodableT] = []
        for key, value in asdict(turn).items():
            values += [key, str(value)]
        seen_event = f"chatops:seen-event:{event_id}" if event_id else f"chatops:seen-event:-{turn.id}"
        keys = [f"chatops:seen:{team}:{channel}:{ts}", f"chatops:turn:{turn.id}", seen_event]
        args: list[EncodableT] = [SEEN_TTL_SECONDS, TURN_TTL_SECONDS, turn.id, len(values), *values]
        if job is not None:
            queued = job(turn.id)
            keys += [queued.queues_key, queued.job_key, queued.queue_key]
            args.append(queued.job_id)
            for name, value in queued.fields.items():
                args += [name, value]
        admitted = await self._admit(keys=keys, args=args)
        return turn, bool(admitted)

    async def seen_event(self, event_id: str) -> bool:
        return bool(event_id) and bool(await self._redis.exists(f"chatops:seen-event:{event_id}"))

    async def load(self, turn_id: str) -> Turn | None:
        raw = await self._redis.hgetall(f"chatops:turn:{turn_id}")
        if not raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}
        return Turn(
            id=data["id"],
            team=data["team"],
            channel=data["channel"],
            channel_type=data["channel_type"],
            user=data["user"],
            text=data["text"],
            ts=data["ts"],
            thread_ts=data["thread_ts"],
            created_at=float(data["created_at"]),
            source=data.get("source", "mention"),
        )

    async def status(self, turn_id: str) -> dict[str, str]:
        raw = await self._redis.hgetall(f"chatops:turn-status:{turn_id}")
        return {_text(k): _text(v) for k, v in raw.items()}

    async def set_status(self, turn_id: str, status: str, **fields: str) -> None:
        key = f"chatops:turn-status:{turn_id}"
        mapping: dict[FieldT, EncodableT] = {"status": status, "at": repr(self._clock())}
        mapping.update(fields)
        await self._redis.hset(key, mapping=mapping)
        await self._redis.expire(key, TURN_TTL_SECONDS)

    async def claim(self, turn_id: str) -> bool:
        """True exactly once per turn, whichever worker asks first."""
        return bool(await self._redis.set(f"chatops:turn-claim:{turn_id}", "1", nx=True, ex=TURN_TTL_SECONDS))

    # --- threads ---------------------------------------------------------------------------------------

    async def mark_bot_thread(self, team: str, channel: str, thread_ts: str) -> None:
        await self._redis.set(
            f"chatops:bot-thread:{thread_key(team, channel, thread_ts)}", "1", ex=CONVERSATION_TTL_SECONDS
        )

    async def is_bot_thread(self, team: str, channel: str, thread_ts: str) -> bool:
        return bool(await self._redis.exists(f"chatops:bot-thread:{thread_key(team, channel, thread_ts)}"))

    async def begin_run(self, thread: str, turn_id: str) -> bool:
        keys = (f"chatops:thread-active:{thread}", f"chatops:thread-backlog:{thread}")
        return bool(await self._begin(keys=list(keys), args=[turn_id, str(ACTIVE_TTL_SECONDS)]))

    async def end_run(self, thread: str, turn_id: str) -> str | None:
        keys = (f"chatops:thread-active:{thread}", f"chatops:thread-backlog:{thread}")
        nxt = await self._end(keys=list(keys), args=[turn_id, str(ACTIVE_TTL_SECONDS)])
        return _text(nxt) if nxt else None

    # --- transcripts -----------------------------------------------------------------------------------

    async def conversation(self, thread: str) -> Conversation:
        raw = await self._redis.get(f"chatops:conv:{thread}")
        if raw is None:
            return Conversation()
        data: Mapping[str, Any] = json.loads(raw)
        return Conversation(
            list(data.get("messages", [])), list(data.get("rejected", [])), list(data.get("users", []))
        )

    async def save_conversation(self, thread: str, conversation: Conversation) -> None:
        blob = json.dumps(asdict(conversation), separators=(",", ":"), ensure_ascii=False, default=str)
        await self._redis.set(f"chatops:conv:{thread}", blob, ex=CONVERSATION_TTL_SECONDS)
