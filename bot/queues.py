"""RQ queues and enqueueing: JSON-serialized jobs that take ids only, with ids derived from what they do.

Deriving the job id from the work (a turn id, an approval id) makes enqueueing idempotent: enqueueing the
same work twice is at worst a second job that finds the work already claimed.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

__all__ = ["ACTIONS", "AGENT", "QUEUE_NAMES", "WORKFLOWS", "Queues"]

AGENT = "chatops-agent"
ACTIONS = "chatops-actions"
WORKFLOWS = "chatops-workflows"
QUEUE_NAMES = (ACTIONS, AGENT, WORKFLOWS)  # actions first: an approved action should not wait behind chats

TURN_JOB = "bot.jobs.run_turn"
JOB_TIMEOUT_SECONDS = 900
RESULT_TTL_SECONDS = 86_400


class Queues:
    def __init__(self, connection: Redis) -> None:
        self.connection = connection
        self._queues = {
            name: Queue(name, connection=connection, serializer=JSONSerializer) for name in QUEUE_NAMES
        }

    def __getitem__(self, name: str) -> Queue:
        return self._queues[name]

    def enqueue_turn(self, turn_id: str, attempt: str = "first") -> str:
        job_id = turn_id if attempt == "first" else f"{turn_id}-{attempt}"
        self._queues[AGENT].enqueue_call(
            TURN_JOB,
            args=(turn_id, attempt),
            job_id=job_id,
            timeout=JOB_TIMEOUT_SECONDS,
            result_ttl=RESULT_TTL_SECONDS,
            failure_ttl=RESULT_TTL_SECONDS,
        )
        return job_id

    def job_exists(self, job_id: str) -> bool:
        return bool(self.connection.exists(f"rq:job:{job_id}"))
