"""`chatops worker`: RQ workers for the agent, action and workflow queues (SPEC §2).

The job module is imported here, before any fork, so every work-horse inherits anthropic, mcp and slack_sdk
already loaded (api-facts §4.3). Jobs are JSON-serialized: a pickled job planted in Redis cannot run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerPool

from bot import jobs
from bot.queues import QUEUE_NAMES, Queues
from bot.redis_check import require_safe_redis
from bot.services import BotIdentity
from bot.settings import Settings
from bot.warmup import warm_up
from mcp_clients.connection import shared_ssl_context
from registry_cache.snapshot import preload

__all__ = ["ForkingWorker", "run_worker"]

log = logging.getLogger(__name__)


class ForkingWorker(Worker):
    """RQ's forking worker, handing each work-horse the registry view already parsed."""

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
    queues: Sequence[str] = QUEUE_NAMES,
) -> None:
    connection = Redis.from_url(str(settings.redis_url))
    require_safe_redis(connection)  # an evicting Redis could drop approvals: refuse to start (ConfigError)
    jobs.configure(settings, bot)
    # Built once here, inherited by every forked job: ~30 ms per job otherwise (bench/approval.py).
    shared_ssl_context()
    warm_up()  # the client libraries' lazy first-use work, done once here instead of in every job
    Queues(connection).schedule_sweep()  # expiry and crash detection keep running while any worker lives
    worker_class: type[Worker] = SimpleWorker if simple else ForkingWorker  # type: ignore[assignment]
    if processes > 1:
        pool = WorkerPool(
            list(queues),
            connection=connection,
            num_workers=processes,
            worker_class=worker_class,
            serializer=JSONSerializer,
        )
        pool.start(burst=burst, logging_level=settings.log_level)
        return
    worker = worker_class(list(queues), connection=connection, serializer=JSONSerializer)
    worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)
