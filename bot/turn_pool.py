"""The turn pool: agent turns run as tasks on one long-lived event loop, many at a time, in one process.

Why not a forked work-horse per turn: a turn is almost all waiting (for the model, for tools), yet each one
paid ~25 ms before its first step (the fork of a large parent, RQ's bookkeeping in a cold process, new
connections to Redis, the model, Slack and the MCP servers) and held a whole process while it waited. Here
turns share one process, whose connection pools stay warm, and a waiting conversation costs a task.

It is still RQ doing the queueing, in every way RQ and its tools can see: each slot of the pool is an RQ
worker (registered, heartbeating, with a current job, the StartedJobRegistry, job status, result or failure)
that takes one job at a time from the agent queue. Only the job's coroutine differs: it runs on the shared
loop instead of a fresh one (`LoopJob`). Approved actions and workflows keep RQ's forking worker: one
process per action, so a crash is contained and is seen as the work-horse's death (OUTCOME_UNKNOWN).

Stopping: SIGTERM or SIGINT stops taking jobs and lets running turns finish; a second one exits at once
(turn leases then lapse and the sweep takes the turns over, bot.recovery). A pool forked by `chatops worker`
also stops when that parent goes away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, ClassVar

from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue, SimpleWorker
from rq.exceptions import DequeueTimeout
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty, JobTimeoutException
from rq.worker import BaseWorker, WorkerStatus

from bot import jobs
from bot.queues import AGENT, JOB_TIMEOUT_SECONDS
from bot.redis_clients import sync_client

__all__ = ["LoopJob", "SlotWorker", "TurnPool"]

log = logging.getLogger(__name__)

DEQUEUE_WAIT_SECONDS = 2  # how long a slot blocks on the queue before it looks at the stop flag again
HEARTBEAT_SECONDS = 10.0  # RQ's forking worker heartbeats a running job every 30 s (job_monitoring_interval)
MAINTENANCE_SECONDS = 60  # RQ's default is 10 min; a turn stuck as below waits for this, plus RQ's minute
_STUCK = "Job was stuck in intermediate queue."  # what RQ's maintenance passes for such a job (rq 2.x)
PARENT_CHECK_SECONDS = 1.0


class _NoDeathPenalty(BaseDeathPenalty):
    """RQ's default penalty is SIGALRM, which only the main thread may use; a job's timeout is enforced
    where the job runs instead (`LoopJob._execute` cancels its task)."""

    def setup_death_penalty(self) -> None:
        return None

    def cancel_death_penalty(self) -> None:
        return None


class LoopJob(Job):
    """An RQ job whose coroutine runs on the pool's loop; the slot's thread waits for it, heartbeating."""

    loop: ClassVar[asyncio.AbstractEventLoop | None] = None
    keep_alive: Callable[[], None] | None = None

    def _execute(self) -> Any:
        if not self.func:
            raise ValueError("Cannot execute job: function is None")
        result = self.func(*self.args, **self.kwargs)
        if not asyncio.iscoroutine(result):
            return result
        if self.loop is None:
            result.close()
            raise RuntimeError("LoopJob.loop is not set: the turn pool is not running")
        future = asyncio.run_coroutine_threadsafe(result, self.loop)
        deadline = time.monotonic() + (self.timeout or JOB_TIMEOUT_SECONDS)
        while True:
            try:
                return future.result(timeout=max(0.0, min(HEARTBEAT_SECONDS, deadline - time.monotonic())))
            except concurrent.futures.TimeoutError:
                if time.monotonic() >= deadline:
                    future.cancel()
                    raise JobTimeoutException(f"the job ran past its {self.timeout} s timeout") from None
                if self.keep_alive is not None:
                    self.keep_alive()


class SlotWorker(SimpleWorker):
    """One slot: an RQ worker that runs one turn at a time from a thread of the pool."""

    death_penalty_class = _NoDeathPenalty

    # The forking worker's heartbeat TTL (90 s), renewed every HEARTBEAT_SECONDS while a job runs, where
    # SimpleWorker's is the whole job timeout: a pool that dies has its jobs seen as abandoned as soon as a
    # forking worker's would be.
    get_heartbeat_ttl = BaseWorker.get_heartbeat_ttl

    def _install_signal_handlers(self) -> None:
        return None  # only the main thread may install them; the pool owns the process's signals

    def subscribe(self) -> None:
        return None  # RQ's command channel (kill-horse, stop-job) has no horse to act on here

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry | None = None,
        exc_string: str = "",
    ) -> None:
        if exc_string == _STUCK and job.get_status(refresh=True) == JobStatus.QUEUED:
            # RQ's maintenance found a job a slot took off the queue (BLMOVE) and never started: its pool
            # died in between. Nobody ran it; RQ would mark it failed and the person would never be
            # answered. It goes back to the head of the queue instead (RQ then drops the stuck copy).
            log.warning(
                "turn slot %s: %s was taken by a pool that died before starting it; requeued",
                self.name,
                job.id,
            )
            self.connection.lpush(queue.key, job.id)
            return
        super().handle_job_failure(job, queue, started_job_registry, exc_string)

    def execute_job(self, job: Job, queue: Queue) -> None:
        if isinstance(job, LoopJob):
            job.keep_alive = lambda: self.maintain_heartbeats(job)
        super().execute_job(job, queue)

    def serve(self, stop: threading.Event, *, maintenance: bool) -> int:
        """Take jobs until `stop` is set, then finish the one running; return how many ran."""
        ran = 0
        self._last_beat = time.monotonic()
        self.register_birth()  # type: ignore[no-untyped-call]
        self.set_state(WorkerStatus.IDLE)
        backoff = 1.0
        try:
            while not stop.is_set():
                try:
                    if maintenance and self.should_run_maintenance_tasks:
                        self.run_maintenance_tasks()  # type: ignore[no-untyped-call]
                    found = self.queue_class.dequeue_any(
                        self._ordered_queues,
                        DEQUEUE_WAIT_SECONDS,
                        connection=self.connection,
                        job_class=self.job_class,
                        serializer=self.serializer,
                        death_penalty_class=self.death_penalty_class,
                    )
                    backoff = 1.0
                    if found is None:
                        continue
                    job, queue = found
                    if stop.is_set():  # taken while the pool was stopping: the next worker's, untouched
                        self._give_back(job, queue)
                        break
                    job.redis_server_version = self.get_redis_server_version()  # type: ignore[no-untyped-call]
                    self.execute_job(job, queue)
                    self._beat(force=True)
                    ran += 1
                except DequeueTimeout:
                    self._beat()
                except Exception as exc:  # Redis gone, or RQ's bookkeeping failed: the slot must live on
                    # (a turn cut short here is taken over by the sweep when its lease lapses)
                    log.error(
                        "turn slot %s: %s (%s); again in %.0f s", self.name, type(exc).__name__, exc, backoff
                    )
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            try:
                self.register_death()  # type: ignore[no-untyped-call]
            except RedisConnectionError:
                log.warning("turn slot %s: could not record its stop in Redis", self.name)
        return ran

    def _beat(self, *, force: bool = False) -> None:
        """RQ's worker heartbeat, at most every HEARTBEAT_SECONDS while idle (a dequeue ends every 2 s)."""
        if force or time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS:
            self.heartbeat()
            self._last_beat = time.monotonic()

    def _give_back(self, job: Job, queue: Queue) -> None:
        """Put a job this slot took (BLMOVE to RQ's intermediate queue) back at the head of its queue, in
        one transaction: it never started, so for RQ and for the next worker it was simply never taken."""
        with self.connection.pipeline(transaction=True) as pipeline:
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.lpush(queue.key, job.id)
            pipeline.execute()
        log.info("turn slot %s: stopping; %s left on %s for another worker", self.name, job.id, queue.name)


class TurnPool:
    """`slots` RQ workers on the agent queue, their jobs' coroutines on one event loop in this process."""

    def __init__(self, redis_url: str, slots: int, *, name: str | None = None) -> None:
        self.redis_url = redis_url
        self.slots = slots
        self.name = name or f"{os.uname().nodename}.{os.getpid()}.turns"
        self.stop = threading.Event()
        self._signals = 0

    def run(self, *, parent: int | None = None) -> int:
        """Serve until stopped (a signal, or `parent` gone); return the process's exit status."""
        self._install_signal_handlers()  # first: a stop during start-up must not kill the process mid-way
        loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=loop.run_forever, name="turn-loop", daemon=True)
        loop_thread.start()
        job_class = type("PoolJob", (LoopJob,), {"loop": loop})
        status = 0
        try:
            asyncio.run_coroutine_threadsafe(jobs.open_resident(), loop).result(timeout=60)
            workers = [self._slot(i, job_class) for i in range(self.slots)]
            threads = [
                threading.Thread(
                    target=worker.serve, args=(self.stop,), kwargs={"maintenance": i == 0}, name=worker.name
                )
                for i, worker in enumerate(workers)
            ]
            for thread in threads:
                thread.start()
            log.info("turn pool %s: %d slots on %s", self.name, self.slots, AGENT)
            while any(t.is_alive() for t in threads):
                if parent is not None and os.getppid() != parent and not self.stop.is_set():
                    log.warning("turn pool %s: its worker process is gone; finishing its turns", self.name)
                    self.stop.set()
                for thread in threads:
                    thread.join(timeout=PARENT_CHECK_SECONDS / len(threads))
        except Exception:
            log.exception("turn pool %s failed", self.name)
            status = 1
            self.stop.set()
        finally:
            try:
                asyncio.run_coroutine_threadsafe(jobs.close_resident(), loop).result(timeout=10)
            except Exception:  # closing is best effort: the process is about to end
                log.warning("turn pool %s: closing its connections failed", self.name, exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
            loop_thread.join(timeout=5)
        return status

    def _slot(self, index: int, job_class: type[Job]) -> SlotWorker:
        connection = sync_client(self.redis_url)
        return SlotWorker(
            [AGENT],
            name=f"{self.name}.{index}",
            connection=connection,
            serializer=JSONSerializer,
            job_class=job_class,
            maintenance_interval=MAINTENANCE_SECONDS,
        )

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("turn pool %s: stopping after the running turns (signal %d)", self.name, signum)
            self.stop.set()
            return
        log.warning("turn pool %s: stopping now; running turns are left to the sweep", self.name)
        os._exit(1)
