"""bot.worker's forking worker: stopping while idle must not leave Redis a listener nobody reads, and a
stop must always end the worker, whatever its children were doing when it came."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.context import ForkProcess
from types import SimpleNamespace
from typing import cast

import pytest
import redis
from rq import Queue
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from bot.identity import BotIdentity
from bot.queues import ACTIONS, SWEEP_JOB
from bot.settings import Settings
from bot.turn_pool import FORWARDED_STOP, TurnPool
from bot.worker import ForkingWorker, _held_until_rq_listens
from fixtures.waiting import wait_until

BOT = BotIdentity("T0CHATOPS", "U0CHATOPS", "B0CHATOPS")


def blocked_clients(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if c.get("cmd") in ("blpop", "blmove"))


class _Probe(ForkingWorker):
    """Stands in for RQ's scheduler stop (it joins the scheduler process: up to a second) and, in that
    window, looks at what Redis does with a job enqueued for this worker's queue."""

    def __init__(self, observer: redis.Redis, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.observer = observer
        self.scheduler = object()  # type: ignore[assignment]  # so RQ's stop stops "it"

    def stop_scheduler(self) -> None:
        wait_until(
            "Redis to stop counting the worker as waiting", lambda: blocked_clients(self.observer) == 0
        )
        Queue(ACTIONS, connection=self.observer, serializer=JSONSerializer).enqueue_call(
            SWEEP_JOB, job_id="late"
        )


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("signal_handlers")
def test_an_idle_worker_told_to_stop_drops_its_blocking_dequeue_so_the_next_job_waits(redis_url: str) -> None:
    """RQ stops an idle worker from its SIGTERM handler: it stops its scheduler, then raises out of the
    BLPOP. Until the connection closes, Redis counts it as waiting and hands it the next job, which
    nobody reads: an approved action enqueued in that second was lost. The worker now raises at once
    (redis-py drops the connection) and leaves the scheduler to RQ's teardown."""
    observer = redis.Redis.from_url(redis_url)
    worker = _Probe(
        observer, [ACTIONS], connection=redis.Redis.from_url(redis_url), serializer=JSONSerializer
    )
    worker._install_signal_handlers()  # type: ignore[no-untyped-call]  # RQ's own: SIGTERM -> request_stop

    def terminate_once_blocked() -> None:
        wait_until("the worker to block on its queue", lambda: blocked_clients(observer) == 1)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_once_blocked)
    killer.start()
    with pytest.raises(StopRequested):
        worker.dequeue_job_and_maintain_ttl(timeout=30)  # in the main thread, as RQ's work loop runs it
    killer.join(timeout=10)
    worker.stop_scheduler()  # where RQ's teardown stops it, once the work loop has ended
    assert Queue(ACTIONS, connection=observer, serializer=JSONSerializer).job_ids == ["late"]  # still there


def _exit_status(pid: int) -> int:
    found: list[int] = []

    def reaped() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            found.append(status)
        return bool(done)

    wait_until("the child to exit", reaped, timeout=10)
    return found[0]


@pytest.mark.usefixtures("signal_handlers")
def test_a_child_forked_while_a_stop_is_held_still_stops_on_sigterm() -> None:
    """RQ forks its scheduler before it puts its own handlers in place, while the worker holds stops. A
    SIGTERM reaching the scheduler in that window was held in the child, where nobody hands it over, and
    RQ's teardown then waited for the scheduler forever: `chatops worker` never exited (seen in CI)."""
    with _held_until_rq_listens():
        read, write = os.pipe()
        started_read, started = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: blocked before it installs any handler, as the scheduler starting up
            os.close(write)
            os.write(started, b"1")  # past CPython's after-fork reset, which drops a signal landing in it
            os.read(read, 1)
            os._exit(0)
        os.close(read)
        try:
            os.read(started_read, 1)
            os.kill(pid, signal.SIGTERM)
            status = _exit_status(pid)
        finally:
            os.close(write)  # the old code's child: let it go
            os.close(started)
            os.close(started_read)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGTERM


def _deaf_scheduler(ready: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.write(ready, b"1")
    threading.Event().wait()


def test_a_scheduler_that_ignores_its_stop_is_killed_so_the_worker_still_exits(redis_url: str) -> None:
    read, write = os.pipe()
    process = ForkProcess(target=_deaf_scheduler, args=(write,), daemon=True)
    process.start()
    os.read(read, 1)  # it ignores SIGTERM from here on
    worker = ForkingWorker([ACTIONS], connection=redis.Redis.from_url(redis_url), serializer=JSONSerializer)
    worker.scheduler = SimpleNamespace(_process=process)  # type: ignore[assignment]
    worker.scheduler_stop_seconds = 0.2
    try:
        worker.stop_scheduler()  # RQ's own joined it without a limit: this never returned
        assert not process.is_alive()
        assert process.exitcode == -signal.SIGKILL
    finally:
        if process.is_alive():
            process.kill()
        os.close(read)
        os.close(write)


class _SignalledWhileFormatting(logging.StreamHandler[io.StringIO]):
    """A log handler that, once the worker listens, sends it SIGTERM while a record is being formatted:
    inside logging's emit, which turns any Exception into "--- Logging error ---" (in CI the stop landed
    in our secret-redacting formatter)."""

    def __init__(self, listening: Callable[[], bool]) -> None:
        super().__init__(io.StringIO())
        self.listening = listening
        self.sent = False

    def format(self, record: logging.LogRecord) -> str:
        if not self.sent and self.listening():
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs at once, in the code below
        return super().format(record)


@pytest.mark.usefixtures("signal_handlers")
def test_a_stop_that_lands_while_the_worker_logs_still_stops_it(redis_url: str) -> None:
    """RQ stops an idle worker by raising from its signal handler wherever the main thread is. Landing in a
    log call, the raise was swallowed, the handlers already switched to a cold stop, and the worker went
    back to a 405-second BLPOP, then another: `chatops worker` never exited on SIGTERM (seen in CI)."""
    worker = ForkingWorker([ACTIONS], connection=redis.Redis.from_url(redis_url), serializer=JSONSerializer)
    handler = _SignalledWhileFormatting(lambda: signal.getsignal(signal.SIGTERM) == worker.request_stop)
    rq_log = logging.getLogger("rq.worker")
    rq_log.addHandler(handler)
    stuck = threading.Event()

    def watchdog() -> None:  # the old code's worker: a second SIGTERM is RQ's cold stop (SystemExit)
        stuck.set()
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Timer(30, watchdog)
    timer.start()
    try:
        worker.work(logging_level="INFO")  # in the main thread, as `chatops worker` runs it
    except SystemExit:
        pass
    finally:
        timer.cancel()
        rq_log.removeHandler(handler)
    assert handler.sent  # the stop did land mid-format
    assert not stuck.is_set(), "the worker went on listening after its SIGTERM"


class _FailingWrites(logging.Handler):
    """What a log line written from a signal handler meets when the main thread was itself writing to stderr:
    the write raises "reentrant call", and so does logging's report of it, out of the handler."""

    failing = True

    def emit(self, record: logging.LogRecord) -> None:
        if self.failing:
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")


@pytest.fixture
def failing_log() -> Iterator[_FailingWrites]:
    handler = _FailingWrites()
    loggers = [logging.getLogger(name) for name in ("rq.worker", "bot.worker", "bot.turn_pool")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.addHandler(handler)
        each.setLevel(logging.INFO)
    yield handler
    for each, level in zip(loggers, levels, strict=True):
        each.removeHandler(handler)
        each.setLevel(level)


@pytest.mark.usefixtures("signal_handlers")
def test_a_stop_whose_log_line_fails_still_stops_an_idle_worker(
    redis_url: str, failing_log: _FailingWrites
) -> None:
    worker = ForkingWorker([ACTIONS], connection=redis.Redis.from_url(redis_url), serializer=JSONSerializer)
    worker.request_stop(signal.SIGTERM, None)  # raised RuntimeError into the main thread, the stop not kept
    failing_log.failing = False  # the main thread's own lines are written again
    with pytest.raises(StopRequested):
        worker.dequeue_job_and_maintain_ttl(timeout=30)  # at once: the stop is acted on before blocking


@pytest.mark.usefixtures("signal_handlers", "failing_log")
def test_a_stop_whose_log_line_fails_still_stops_a_busy_worker_after_its_job(redis_url: str) -> None:
    worker = ForkingWorker([ACTIONS], connection=redis.Redis.from_url(redis_url), serializer=JSONSerializer)
    worker.set_state(WorkerStatus.BUSY)
    worker.request_stop(signal.SIGTERM, None)
    assert worker._stop_requested  # RQ's loop ends after the running job


@pytest.mark.usefixtures("signal_handlers", "failing_log")
def test_a_turn_pool_keeps_a_stop_whose_log_line_fails(redis_url: str) -> None:
    pool = TurnPool(cast(Settings, SimpleNamespace(redis_url=redis_url)), BOT, 1, name="test.turns")
    pool._on_forwarded(FORWARDED_STOP, None)  # raised before it noted the stop
    assert pool._stopping
