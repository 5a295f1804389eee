"""`chatops worker`: RQ workers for the agent, action and workflow queues (SPEC §2).

One `chatops worker` is a process tree:
- the process itself: RQ's forking worker for approved actions and workflows (and RQ's scheduler, which
  runs the expiry sweeps). One work-horse per job: an approved action runs in a process of its own, and a
  crash mid-action is seen as that horse's death and reported, never retried;
- one turn pool per `--processes` (bot.turn_pool), forked before anything else starts: the turn queue's
  jobs, up to `--turns` (CHATOPS_TURN_CONCURRENCY) at a time per pool, on one warm event loop.
`--burst` (drain every queue, then exit) and `--simple` (no fork at all: a plain RQ worker and one turn slot
in a thread) are for tests, scripts and the embedded Redis that cannot fork.

The job module is imported and the client libraries warmed here, before any fork, so the pools and every
work-horse start with them loaded (api-facts §4.3). Jobs are JSON-serialized: a pickled job planted in Redis
cannot run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, ClassVar, cast

import redis
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus
from rq.worker_pool import WorkerPool

from bot import jobs
from bot.identity import BotIdentity
from bot.queues import ACTIONS, RQ_QUEUES, WORKFLOWS, Queues
from bot.redis_check import require_safe_redis, warn_few_replicas
from bot.redis_clients import sync_client
from bot.settings import Settings
from bot.turn_pool import FORWARDED_STOP, TurnPool, TurnThread, drain_turns
from bot.warmup import warm_up
from mcp_clients.connection import shared_ssl_context
from registry_cache.snapshot import preload

__all__ = ["ForkingWorker", "run_worker"]

log = logging.getLogger(__name__)

FORKED_QUEUES = (ACTIONS, WORKFLOWS)
POOL_STOP_GRACE_SECONDS = 10  # beyond the longest turn (CHATOPS_MAX_TURN_SECONDS), before SIGKILL


@dataclass
class _Listening:
    """Whether a worker is in its blocking dequeue, and whether a stop came, for its signal handler."""

    blocked: bool = False  # inside BLPOP/BLMOVE
    stopping: bool = False  # a stop came while idle

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        self.blocked = True  # before the check: a stop landing between the two is raised by the handler
        try:
            if self.stopping:
                raise StopRequested()
            yield
        finally:
            self.blocked = False


BLOCKING_DEQUEUE_SECONDS = 10  # a stop landing just before a BLPOP, so not raised, waits at most this


class _ListeningQueue(Queue):
    """RQ's queue as this worker dequeues from it: a stop that came while idle is acted on before the next
    blocking read instead of after it (RQ's own BLPOP lasts up to 405 s). Each worker makes its own
    subclass, so the state is that worker's."""

    listening: ClassVar[_Listening]  # set by each worker's subclass (ForkingWorker.__init__)

    @classmethod
    def lpop(
        cls, queue_keys: Sequence[str], timeout: int | None, connection: redis.Redis | None = None
    ) -> Any:
        if timeout is None:
            return super().lpop(queue_keys, timeout, connection=connection)
        with cls.listening.blocking():
            return super().lpop(queue_keys, min(timeout, BLOCKING_DEQUEUE_SECONDS), connection=connection)

    @classmethod
    def lmove(cls, connection: redis.Redis, queue_key: str, timeout: int | None) -> Any:
        if timeout is None:
            return super().lmove(connection, queue_key, timeout)
        with cls.listening.blocking():
            return super().lmove(connection, queue_key, min(timeout, BLOCKING_DEQUEUE_SECONDS))


def _in_redis_client(frame: FrameType | None) -> bool:
    return frame is not None and str(frame.f_globals.get("__name__", "")).startswith("redis.")


class ForkingWorker(Worker):
    """RQ's forking worker, handing each work-horse the registry view already parsed."""

    on_stop: Callable[[], None] | None = None  # told first when a signal asks this worker to stop
    scheduler_stop_seconds: float = 10.0  # ten of the scheduler's rounds

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listening = _Listening()
        queue_class = type("ListeningQueue", (_ListeningQueue,), {"listening": self.listening})
        self.queue_class = cast(type[Queue], queue_class)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.on_stop is not None:
            self.on_stop()
        # First: RQ's handler logs, which can fail here (bot.stopping.log_in_handler); the stop is kept.
        self._stop_requested = self.listening.stopping = True
        if self.get_state() == WorkerStatus.BUSY:
            with contextlib.suppress(RuntimeError):  # the stop is kept; the job's horse is still watched
                super().request_stop(signum, frame)  # type: ignore[no-untyped-call]  # after the running job
            return
        # Idle, RQ stops its scheduler first (it joins the scheduler's process: up to a second), then
        # raises out of its blocking BLPOP. All that while Redis counts the connection as waiting and would
        # hand it the next job (an approved action), which nobody would read: gone. So a stop that finds
        # the worker in that read raises at once (redis-py drops the connection) and RQ's teardown stops
        # the scheduler afterwards. Raised anywhere else it can be swallowed (logging's emit and redis-py's
        # destructors catch Exception: seen in CI, the worker never stopped), so there it is only noted,
        # for RQ's loop and the next blocking read. The rest is RQ's: a second signal is a cold stop.
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        with contextlib.suppress(RuntimeError):
            self.handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        if self.listening.blocked and _in_redis_client(frame):
            raise StopRequested()

    def stop_scheduler(self) -> None:
        """RQ's, with a limit: RQ joins its scheduler process without one, so a scheduler that missed its
        SIGTERM kept the worker from ever exiting. The scheduler looks for the stop every second."""
        process: BaseProcess | None = getattr(self.scheduler, "_process", None)  # RQ types it as None
        if process is None or not process.pid:
            return
        with contextlib.suppress(OSError):
            os.kill(process.pid, signal.SIGTERM)
        process.join(self.scheduler_stop_seconds)
        if process.is_alive():
            log.warning("RQ's scheduler (pid %d) did not stop in time; killing it", process.pid)
            process.kill()
            process.join(5)

    def execute_job(self, job: Job, queue: Queue) -> None:
        preload(self.connection)  # one GET when the registry did not change since the last job
        super().execute_job(job, queue)


def run_worker(
    settings: Settings,
    bot: BotIdentity,
    *,
    processes: int = 1,
    burst: bool = False,
    simple: bool = False,
    turns: int | None = None,
) -> int:
    """Run until stopped; return the exit status (1 when a turn pool died under us)."""
    connection = sync_client(str(settings.redis_url))
    require_safe_redis(connection)  # an evicting Redis could drop approvals: refuse to start (ConfigError)
    warn_few_replicas(connection, settings.redis_replication.replicas)
    job_class = jobs.wired_job_class(settings, bot)
    # Built once here, inherited by every forked job: ~30 ms per job otherwise (bench/approval.py).
    shared_ssl_context()
    warm_up()  # the client libraries' lazy first-use work, done once here instead of in every job
    Queues(connection).schedule_sweep()  # expiry and crash detection keep running while any worker lives
    if burst:
        while True:  # RQ's queues, then the turns; until a round of turns queues nothing more
            worker = ForkingWorker(
                list(RQ_QUEUES), connection=connection, serializer=JSONSerializer, job_class=job_class
            )
            worker.work(burst=True, with_scheduler=False, logging_level=settings.log_level)
            if not drain_turns(settings, bot):
                return 0
    if simple:
        turn_thread = TurnThread(settings, bot)
        turn_thread.start()
        plain = SimpleWorker(
            list(RQ_QUEUES), connection=connection, serializer=JSONSerializer, job_class=job_class
        )
        with _held_until_rq_listens():
            plain.work(with_scheduler=True, logging_level=settings.log_level)
        turn_thread.stop(timeout=settings.max_turn_seconds + POOL_STOP_GRACE_SECONDS)
        return 0
    slots = turns or settings.turn_concurrency
    with _held_until_rq_listens(), _turn_pools(settings, bot, processes, slots) as pools:
        if processes > 1:
            pool = _Pool(
                list(FORKED_QUEUES),
                connection=connection,
                num_workers=processes,
                worker_class=ForkingWorker,
                serializer=JSONSerializer,
                job_class=job_class,
            )
            pool.on_stop = pools.stop
            pool.start(logging_level=settings.log_level)
        else:
            worker = ForkingWorker(
                list(FORKED_QUEUES), connection=connection, serializer=JSONSerializer, job_class=job_class
            )
            worker.on_stop = pools.stop
            worker.work(with_scheduler=True, logging_level=settings.log_level)
    return 1 if pools.failed.is_set() else 0


@contextlib.contextmanager
def _held_until_rq_listens() -> Iterator[None]:
    """From here until RQ has put its own signal handlers in place (it forks the turn pools' siblings, its
    scheduler, first), a stop is held, not raised: an exception raised while a fork runs its at-fork hooks
    is swallowed by Python ("Exception ignored in _releaseLock"), and the stop was lost. Once RQ listens,
    a held stop is sent again, to RQ's handler: its warm shutdown, as if it had come a moment later."""
    held: list[int] = []
    owner = os.getpid()

    def hold(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            # A process forked in this window (RQ's scheduler, a turn pool) that has not yet put its own
            # handler in place: nobody there would hand a held stop over, and RQ's teardown waits for its
            # scheduler without a limit, so a stop swallowed here hung the whole worker. It stops as it
            # would had we held nothing: the signal's default action.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        held.append(signum)

    for each in (signal.SIGTERM, signal.SIGINT):
        signal.signal(each, hold)
    done = threading.Event()

    def hand_over() -> None:
        while not done.wait(0.05):
            if signal.getsignal(signal.SIGTERM) is not hold:  # RQ (or its pool) listens now
                if held:
                    os.kill(os.getpid(), held[0])
                return

    threading.Thread(target=hand_over, name="signals", daemon=True).start()
    try:
        yield
    finally:
        done.set()


class _Pool(WorkerPool):
    """RQ's pool of forking workers, telling the turn pools to stop as soon as it is told."""

    on_stop: Callable[[], None] | None = None

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if self.on_stop is not None:
            self.on_stop()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


@dataclass
class _TurnPools:
    pids: list[int]
    failed: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        """Tell every pool (once) to take no new turn and finish the running ones. Called from the signal
        handler, so a stop reaches the pools at once, not after the forking worker's running job. Not
        SIGTERM: a pool that got one from the supervisor too would count this as a second (bot.turn_pool)."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, FORWARDED_STOP)


@contextlib.contextmanager
def _turn_pools(settings: Settings, bot: BotIdentity, count: int, slots: int) -> Iterator[_TurnPools]:
    """Fork `count` turn pools; when the body ends, stop them (their running turns finish first). If one
    dies on its own, this process is asked to stop too (SIGTERM to itself: RQ's warm shutdown), so the
    process manager restarts the whole worker instead of running it without turns."""
    parent = os.getpid()
    pids: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the pool: it never returns into the caller's code
            status = 1
            try:
                status = TurnPool(settings, bot, slots).run(parent=parent)
            finally:
                os._exit(status)
        pids.append(pid)
    pools = _TurnPools(pids)

    def watch(pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            _, raw = os.waitpid(pid, 0)
            if not pools.stopping.is_set():
                log.error("turn pool %d exited (status %d); stopping this worker", pid, raw)
                pools.failed.set()
                os.kill(parent, signal.SIGTERM)

    watchers = [threading.Thread(target=watch, args=(pid,), daemon=True) for pid in pids]
    for thread in watchers:
        thread.start()
    try:
        yield pools
    finally:
        pools.stop()
        deadline = time.monotonic() + settings.max_turn_seconds + POOL_STOP_GRACE_SECONDS
        for pid, thread in zip(pids, watchers, strict=True):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("turn pool %d did not stop in time; killing it", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                thread.join(timeout=5)
