"""Requests ("turns") and thread conversations in Redis: admitted once, run one at a time per thread.

- A turn's id is derived from (team, channel, ts), so Slack's retries and the app_mention/message pair of one
  message all name the same turn; `admit` records it once (SET NX) and says whether it is new.
- A worker claims a turn's attempt before running it (`start`), so even a job enqueued twice runs once.
- Each thread has at most one active run; later turns wait in the thread's backlog, in order, and the run that
  finishes hands the thread to the next one (`begin_run`/`end_run`, each one Lua script).
- The transcript of a thread lives here too, so a follow-up continues on any worker after any restart.
- A running attempt holds a lease (`start`, `renew`, `release`): a sorted set of "turn|attempt" scored by
  when the lease ends. The worker renews it while the turn runs; a lease that ends means the worker died
  (SIGKILL, a lost machine), and the sweep runs the turn again as a recovery attempt (flows/recovery.py).
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
from redis.utils import str_if_bytes

from approvals.replication import NO_REPLICAS, NotReplicated, Replication, replicated

__all__ = [
    "RUNNING_KEY",
    "Conversation",
    "QueuedJob",
    "Turn",
    "TurnStore",
    "base_attempt",
    "recoveries",
    "recovery_attempt",
    "thread_key",
    "turn_id_for",
]

SEEN_TTL_SECONDS = 7 * 86400
TURN_TTL_SECONDS = 30 * 86400
CONVERSATION_TTL_SECONDS = 30 * 86400
JOB_TTL_SECONDS = 86_400  # a queued job's state (approvals.turn_queue)
ACTIVE_TTL_SECONDS = 3600  # a crashed run must not hold its thread forever
RUNNING_KEY = "chatops:turns:running"  # zset "turn id|attempt" -> when its lease ends
_RECOVER = "recover-"


def turn_id_for(team: str, channel: str, ts: str) -> str:
    return "t" + hashlib.sha256(f"{team}|{channel}|{ts}".encode()).hexdigest()[:23]


def thread_key(team: str, channel: str, thread_ts: str) -> str:
    return f"{team}:{channel}:{thread_ts}"


def recoveries(attempt: str) -> int:
    """How many times this attempt's work was already taken over after a worker died (0 for a normal one)."""
    head, _, tail = attempt.rpartition(_RECOVER)
    return int(tail) if tail.isdigit() and (head == "" or head.endswith("-")) else 0


def base_attempt(attempt: str) -> str:
    """The attempt a recovery continues ("resume-ab12-recover-2" -> "resume-ab12", "recover-1" -> "first"),
    whose placeholder message it reuses and whose kind (a first run, a resume) it keeps."""
    if not recoveries(attempt):
        return attempt
    head = attempt.rpartition(_RECOVER)[0].removesuffix("-")
    return head or "first"


def recovery_attempt(attempt: str, n: int) -> str:
    base = base_attempt(attempt)
    return f"{_RECOVER}{n}" if base == "first" else f"{base}-{_RECOVER}{n}"


def lease_member(turn_id: str, attempt: str) -> str:
    return f"{turn_id}|{attempt}"


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
    files: str = ""  # the attached files' refs as JSON (agent.attachments.dump_refs); "" for none

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
    """A job to queue in the same atomic step that admits a new turn: its state hash and its entry on the
    turn queue's stream (the layout of approvals.turn_queue)."""

    job_id: str
    job_key: str
    stream_key: str
    state: Mapping[str, str]
    entry: Mapping[str, str]


# KEYS: seen, turn hash, seen-event[, job state hash, turn queue stream]. ARGV: ttl, turn ttl, turn id, the
# turn's fields as one JSON object of strings, then (with a job) the job's state as one JSON object, its
# state's ttl and its stream entry as one JSON object. Few arguments on purpose: encoding many of them was
# the largest part of what this (the ingress hot path) cost the web process.
# Returns 1 when newly admitted. The event marker is written either way (it names the turn).
_ADMIT = """
local function flat_json(json)
  local flat = {}
  for name, value in pairs(cjson.decode(json)) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  return flat
end
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[1])
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then return 0 end
redis.call('HSET', KEYS[2], unpack(flat_json(ARGV[4])))
redis.call('EXPIRE', KEYS[2], ARGV[2])
if #KEYS == 5 then
  redis.call('HSET', KEYS[4], unpack(flat_json(ARGV[5])))
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  redis.call('XADD', KEYS[5], '*', unpack(flat_json(ARGV[7])))
end
return 1
"""
# KEYS: claim, status, running. ARGV: lease member, lease end, now, attempt, ttl. One script, so a worker
# that wins the claim always leaves a lease behind it (and the status says which attempt holds it).
_START = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[5]) == false then return 0 end
redis.call('HSET', KEYS[2], 'status', 'running', 'attempt', ARGV[4], 'at', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""
# KEYS: running. ARGV: member, lease end. XX: a lease the sweep already took over is not brought back.
_RENEW = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
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


class TurnStore:
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
        # Registered once: EVALSHA sends a digest instead of the script on every call (ingress hot path).
        self._admit = redis.register_script(_ADMIT)
        self._begin = redis.register_script(_BEGIN)
        self._end = redis.register_script(_END)
        self._start = redis.register_script(_START)
        self._renew = redis.register_script(_RENEW)

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
        files: str = "",
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
            files,
        )
        fields = json.dumps({key: str(value) for key, value in asdict(turn).items()}, ensure_ascii=False)
        seen_event = f"chatops:seen-event:{event_id}" if event_id else f"chatops:seen-event:-{turn.id}"
        keys = [f"chatops:seen:{team}:{channel}:{ts}", f"chatops:turn:{turn.id}", seen_event]
        args: list[EncodableT] = [SEEN_TTL_SECONDS, TURN_TTL_SECONDS, turn.id, fields]
        if job is not None:
            queued = job(turn.id)
            keys += [queued.job_key, queued.stream_key]
            args += [json.dumps(dict(queued.state)), str(JOB_TTL_SECONDS), json.dumps(dict(queued.entry))]
        admitted = await self._admit(keys=keys, args=args)
        return turn, bool(admitted)

    async def seen_event(self, event_id: str) -> bool:
        return bool(event_id) and bool(await self._redis.exists(f"chatops:seen-event:{event_id}"))

    async def load(self, turn_id: str) -> Turn | None:
        raw = await self._redis.hgetall(f"chatops:turn:{turn_id}")
        if not raw:
            return None
        data = {str_if_bytes(k): str_if_bytes(v) for k, v in raw.items()}
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
            files=data.get("files", ""),
        )

    async def status(self, turn_id: str) -> dict[str, str]:
        raw = await self._redis.hgetall(f"chatops:turn-status:{turn_id}")
        return {str_if_bytes(k): str_if_bytes(v) for k, v in raw.items()}

    async def set_status(self, turn_id: str, status: str, **fields: str) -> None:
        key = f"chatops:turn-status:{turn_id}"
        mapping: dict[FieldT, EncodableT] = {"status": status, "at": repr(self._clock())}
        mapping.update(fields)
        await self._redis.hset(key, mapping=mapping)
        await self._redis.expire(key, TURN_TTL_SECONDS)

    # --- leases of running attempts ---------------------------------------------------------------------

    async def start(self, turn_id: str, attempt: str, lease_seconds: float) -> bool:
        """`claim` this attempt and, in the same step, mark it running under a lease. False: a duplicate.
        `NotReplicated` when the required replicas did not confirm the claim (approvals.replication): a
        failover could lose it and run the turn again, so do not run it now; its lease lapses and the
        sweep takes it over as a recovery attempt, like a turn whose worker died."""
        now = self._clock()
        keys = [f"chatops:turn-claim:{turn_id}:{attempt}", f"chatops:turn-status:{turn_id}", RUNNING_KEY]
        args = [lease_member(turn_id, attempt), repr(now + lease_seconds), repr(now), attempt]
        try:
            won = await replicated(
                self._redis,
                self._replication,
                lambda client: self._start(keys=keys, args=[*args, str(TURN_TTL_SECONDS)], client=client),
            )
        except NotReplicated as exc:
            if not exc.result:
                return False  # a duplicate either way: nothing to protect
            raise
        return bool(won)

    async def renew(self, turn_id: str, attempt: str, lease_seconds: float) -> bool:
        """Extend a held lease; False when it is gone (released, or taken over by the sweep)."""
        member, until = lease_member(turn_id, attempt), repr(self._clock() + lease_seconds)
        return bool(await self._renew(keys=[RUNNING_KEY], args=[member, until]))

    async def release(self, turn_id: str, attempt: str) -> None:
        await self._redis.zrem(RUNNING_KEY, lease_member(turn_id, attempt))

    async def expired_leases(self, now: float, limit: int = 50) -> list[tuple[str, str]]:
        """(turn id, attempt) of leases that ended before `now`: their worker stopped renewing them."""
        raw = await self._redis.zrangebyscore(RUNNING_KEY, "-inf", now, start=0, num=limit)
        found = []
        for member in raw:
            text = str_if_bytes(member) if isinstance(member, bytes | str) else ""
            turn_id, _, attempt = text.partition("|")
            found.append((turn_id, attempt))
        return found

    async def mark_once(self, name: str) -> bool:
        """True the first time `name` is marked (e.g. telling a thread something exactly once)."""
        return bool(await self._redis.set(f"chatops:once:{name}", "1", nx=True, ex=TURN_TTL_SECONDS))

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

    async def active_run(self, thread: str) -> str | None:
        raw = await self._redis.get(f"chatops:thread-active:{thread}")
        return str_if_bytes(raw) if raw else None

    async def end_run(self, thread: str, turn_id: str) -> str | None:
        keys = (f"chatops:thread-active:{thread}", f"chatops:thread-backlog:{thread}")
        nxt = await self._end(keys=list(keys), args=[turn_id, str(ACTIVE_TTL_SECONDS)])
        return str_if_bytes(nxt) if nxt else None

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
