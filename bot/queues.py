"""Queues and enqueueing: jobs that take ids only, with ids derived from what they do. Turns go on our own
turn queue (approvals.turn_queue); approved actions, expiries, sweeps and workflows are RQ jobs (JSON).

Deriving the job id from the work (a turn id, an approval id) makes enqueueing idempotent: enqueueing the
same work twice is at worst a second job that finds the work already claimed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from approvals import turn_queue
from approvals.turns import QueuedJob

__all__ = ["ACTIONS", "AGENT", "QUEUE_NAMES", "RQ_QUEUES", "WORKFLOWS", "Queues", "waiting_key"]

AGENT = "chatops-agent"  # the turn queue's name where people see it (doctor, metrics): approvals.turn_queue
ACTIONS = "chatops-actions"
WORKFLOWS = "chatops-workflows"
QUEUE_NAMES = (ACTIONS, AGENT, WORKFLOWS)  # every queue, as people see them
RQ_QUEUES = (ACTIONS, WORKFLOWS)  # RQ's, in its priority order: an approved action first

ACTION_JOB = "bot.jobs.execute_approved"
EXPIRE_JOB = "bot.jobs.expire_approval"
SWEEP_JOB = "bot.jobs.sweep"
WORKFLOW_JOB = "bot.jobs.run_workflow"
WORKFLOW_RESUME_JOB = "bot.jobs.resume_workflow"
SWEEP_INTERVAL_SECONDS = 30
# An approved action may be slow, but a job that outlives its approval lease is reported, never retried.
ACTION_TIMEOUT_SECONDS = 600
JOB_TIMEOUT_SECONDS = 900
RESULT_TTL_SECONDS = 86_400
_DEAD_JOB = {JobStatus.FAILED, JobStatus.FINISHED, JobStatus.STOPPED, JobStatus.CANCELED}


class Queues:
    def __init__(self, connection: Redis) -> None:
        self.connection = connection
        self._queues = {
            name: Queue(name, connection=connection, serializer=JSONSerializer) for name in RQ_QUEUES
        }

    def __getitem__(self, name: str) -> Queue:
        return self._queues[name]

    def turn_job(self, turn_id: str) -> QueuedJob:
        """The first job of a new turn, described for `TurnStore.admit` to queue atomically with the turn
        (ingress: one async round trip, where `enqueue_turn` made a blocking one)."""
        return turn_queue.first_job(turn_id)

    def enqueue_turn(self, turn_id: str, attempt: str = "first") -> str:
        """Queue a run of the turn on the turn queue (approvals.turn_queue), which the turn pools read."""
        return turn_queue.enqueue(self.connection, turn_id, attempt)

    def turn_job_exists(self, job_id: str) -> bool:
        return bool(self.connection.exists(turn_queue.job_key(job_id)))

    def enqueue_action(self, approval_id: str) -> str:
        """Run an approved action. The job id is the approval's: enqueueing twice cannot run it twice, and the
        job itself only proceeds after winning APPROVED → RUNNING. No RQ retry: a lost run is reported."""
        job_id = _action_job_id(approval_id)
        if not self.job_exists(job_id):
            self._queues[ACTIONS].enqueue_call(
                ACTION_JOB,
                args=(approval_id,),
                job_id=job_id,
                timeout=ACTION_TIMEOUT_SECONDS,
                result_ttl=RESULT_TTL_SECONDS,
                failure_ttl=RESULT_TTL_SECONDS,
            )
        return job_id

    def has_live_action(self, approval_id: str) -> bool:
        """Whether the action's job is queued, scheduled or running (it will get to the run)."""
        job = self._action_job(approval_id)
        return job is not None and job.get_status(refresh=False) not in _DEAD_JOB

    def requeue_action(self, approval_id: str) -> None:
        """Enqueue the action again, in place of a job that ended before it could start the run."""
        job = self._action_job(approval_id)
        if job is not None:
            job.delete()
        self.enqueue_action(approval_id)

    def _action_job(self, approval_id: str) -> Job | None:
        try:
            job_id = _action_job_id(approval_id)
            return Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return None

    def schedule_expiry(self, approval_id: str, at: float) -> None:
        when = datetime.fromtimestamp(at, tz=UTC)
        self._queues[ACTIONS].enqueue_at(when, EXPIRE_JOB, approval_id, job_id=f"expire-{approval_id}")

    def schedule_sweep(self, delay: float = SWEEP_INTERVAL_SECONDS) -> bool:
        """Keep one sweep chain alive for the whole deployment (a marker in Redis), whoever asks."""
        if not self.connection.set("chatops:sweep-scheduled", "1", nx=True, ex=int(delay * 2) + 5):
            return False
        self._queues[ACTIONS].enqueue_in(timedelta(seconds=delay), SWEEP_JOB)
        return True

    def enqueue_sweep_now(self) -> None:
        self._queues[ACTIONS].enqueue_call(SWEEP_JOB)

    def enqueue_workflow(self, run_id: str) -> str:
        self._queues[WORKFLOWS].enqueue_call(
            WORKFLOW_JOB,
            args=(run_id,),
            job_id=f"wf-{run_id}",
            timeout=JOB_TIMEOUT_SECONDS,
            result_ttl=RESULT_TTL_SECONDS,
            failure_ttl=RESULT_TTL_SECONDS,
        )
        return run_id

    def enqueue_workflow_resume(self, run_id: str, approval_id: str) -> None:
        self._queues[WORKFLOWS].enqueue_call(
            WORKFLOW_RESUME_JOB,
            args=(run_id, approval_id),
            job_id=f"wf-{run_id}-{approval_id}",
            timeout=JOB_TIMEOUT_SECONDS,
            result_ttl=RESULT_TTL_SECONDS,
            failure_ttl=RESULT_TTL_SECONDS,
        )

    def job_exists(self, job_id: str) -> bool:
        return Job.exists(job_id, connection=self.connection)


def waiting_key(name: str) -> str:
    """The list of an RQ queue's waiting job ids, named by RQ's public prefix (doctor, metrics)."""
    return Queue.redis_queue_namespace_prefix + name


def _action_job_id(approval_id: str) -> str:
    return f"exec-{approval_id}"
