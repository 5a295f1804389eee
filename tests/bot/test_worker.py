"""bot.worker's forking worker: stopping while idle must not leave Redis a listener nobody reads."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
import redis
from rq import Queue
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer

from bot.queues import ACTIONS, SWEEP_JOB
from bot.worker import ForkingWorker
from fixtures.waiting import wait_until


def blocked_clients(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if c.get("cmd") in ("blpop", "blmove"))


class _Probe(ForkingWorker):
    """Stands in for RQ's scheduler stop (it joins the scheduler process: up to a second) and, in that
    window, looks at what Redis does with a job enqueued for this worker's queue."""

    def __init__(self, observer: redis.Redis, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
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
