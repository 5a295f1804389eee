"""Several bot processes on one Redis, as a deployment runs them: `chatops serve` (HTTP) per web port and
`chatops worker` per worker, each a real subprocess in its own session so a test can SIGKILL one.

Requests reach a web process the way Slack sends them (signed, via fixtures.slack_ingress); a delivery that
fails because its web process died is redelivered to another one with the same body and event_id and an
`x-slack-retry-num` header, as Slack's retries do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import redis
from rq import Worker
from rq.serializers import JSONSerializer

from approvals.turn_queue import SLOTS_KEY, job_state
from bot.queues import ACTIONS
from fixtures.redis_proc import free_port
from fixtures.slack import TEAM_ID
from fixtures.slack_ingress import Delivery, SlackIngress, SlackRequest
from fixtures.waiting import wait_until
from fixtures.world import SIGNING_SECRET, World
from tests.processes import children_of, in_tree
from tests.scenarios.conftest import SLACK_IDS

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Web:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    ingress: SlackIngress

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Cluster:
    world: World
    redis_url: str
    env: dict[str, str]  # what every bot process shares (the world, Redis, short turn leases)
    logs: Path
    webs: list[Web] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def _spawn(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with open(self.logs / log, "wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "bot.cli", *args],
                env={**os.environ, **env, "CHATOPS_NETGUARD": "1"},
                cwd=str(ROOT),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, webs: int, workers: int) -> None:
        for i in range(webs):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            self.world.allow_redirect(url)
            env = {**self.env, **self.world.env(public_url=url, redis_url=self.redis_url), "PORT": str(port)}
            proc = self._spawn(["serve", "--host", "127.0.0.1"], env, f"web-{i}.log")
            self.webs.append(
                Web(f"web-{i}", url, proc, SlackIngress(url, SIGNING_SECRET, slack=self.world.slack))
            )
        # Workers offer account links on the first web's address (any web serves the callback).
        worker_env = {**self.env, **self.world.env(public_url=self.webs[0].url, redis_url=self.redis_url)}
        for i in range(workers):
            self.workers.append(self._spawn(["worker"], worker_env, f"worker-{i}.log"))
        for web in self.webs:
            wait_until(f"{web.name} to answer", functools.partial(self._healthy, web), timeout=60)
        connection = self.redis

        def registered() -> bool:
            """Every `chatops worker` has its forking worker registered with RQ and its turn pool's slots
            listening on the turn queue (a slot is named "<host>.<pool pid>.turns.<n>")."""
            queues = [
                (w.pid, tuple(w.queue_names()))
                for w in Worker.all(connection=connection, serializer=JSONSerializer)
            ]
            slots = connection.zrangebyscore(SLOTS_KEY, time.time(), "+inf")
            pools = {int(slot.decode().rsplit(".", 3)[1]) for slot in slots}
            return all(
                any(in_tree(pid, proc.pid) for pid in pools)
                and any(in_tree(pid, proc.pid) and ACTIONS in names for pid, names in queues)
                for proc in self.workers
            )

        wait_until(f"{workers} workers to register", registered, timeout=60)

    def _healthy(self, web: Web) -> bool:
        if not web.alive:
            raise RuntimeError(f"{web.name} exited; see {self.logs}")
        with contextlib.suppress(httpx2.HTTPError):
            return httpx2.get(web.url + "/healthz", timeout=1.0).status_code == 200
        return False

    def stop(self) -> None:
        for web in self.webs:
            web.ingress.close()
        for proc in [*(w.proc for w in self.webs), *self.workers]:
            _kill(proc)

    # --- people and requests -------------------------------------------------------------------------

    def link(self, person: str, web: Web) -> None:
        """Connect a person's account through the real browser flow, served by `web`."""
        from bot.preflight import whoami
        from bot.settings import Role, load_settings
        from bot.wiring import open_wiring

        settings = load_settings(
            Role.WEB_HTTP, env=self.world.env(public_url=web.url, redis_url=self.redis_url)
        )

        async def offer() -> str:
            async with open_wiring(settings, whoami(settings)) as svc:
                url: str = await svc.linking.offer(TEAM_ID, SLACK_IDS[person])
                return url

        url = asyncio.run(offer())
        with httpx2.Client(follow_redirects=True, timeout=10) as browser:
            browser.get(self.world.idp.login_url(person))
            page = browser.get(url)
        assert page.status_code == 200, page.text[:300]
        assert "connected" in page.text, page.text[:300]

    def deliver(self, request: SlackRequest, web: Web) -> tuple[Delivery, list[str]]:
        """Post an event to `web`; if that web does not acknowledge it (it died), redeliver it to a live one
        with Slack's retry headers. Returns the acknowledgement and the webs that were tried."""
        tried: list[str] = []
        target, retry = web, 0
        while True:
            tried.append(target.name)
            signed = (
                target.ingress.sign(request, retry_num=retry, retry_reason="http_error") if retry else request
            )
            with contextlib.suppress(httpx2.HTTPError):
                answer = target.ingress.post(signed)
                if answer.status == 200:
                    return answer, tried
            retry += 1
            assert retry <= 3, f"no web acknowledged {request.payload.get('event_id')}"
            target = next(w for w in self.webs if w.alive and w is not target)

    def redeliver(self, request: SlackRequest, web: Web, retry_num: int = 1) -> Delivery:
        """Slack's retry of a delivery it saw no acknowledgement for in time (the first one was processed)."""
        return web.ingress.post(web.ingress.sign(request, retry_num=retry_num, retry_reason="http_timeout"))

    # --- failures --------------------------------------------------------------------------------------

    def kill_web(self, web: Web) -> None:
        _kill(web.proc)

    def kill_worker_running(self, job_id: str) -> int:
        """SIGKILL the process running `job_id` (a turn pool, or a work-horse with its worker), as a crash
        of that process would; return its pid. A `chatops worker` whose turn pool died stops on its own
        after its running action (bot.worker), and is not restarted here."""
        connection = self.redis

        def running() -> int | None:
            state = job_state(connection, job_id)  # a turn: the turn queue records who runs it
            if state.get("status") == "running":
                return int(state["pid"])
            workers = Worker.all(connection=connection, serializer=JSONSerializer)
            return next((w.pid for w in workers if w.get_current_job_id() == job_id and w.pid), None)

        victim = wait_until(f"a worker to run {job_id}", running, timeout=30)
        assert any(in_tree(victim, p.pid) for p in self.workers), "not one of this cluster's workers"
        for pid in [*children_of(victim), victim]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return victim


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process we started and what it forked (an RQ work-horse has a process group of its own)."""
    for pid in [*children_of(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is ours alone
    proc.wait(timeout=10)


@contextlib.contextmanager
def running_cluster(
    world: World, redis_url: str, *, webs: int, workers: int, lease: int
) -> Iterator[Cluster]:
    env = {
        **world.env(public_url="http://127.0.0.1:9", redis_url=redis_url),
        "CHATOPS_TURN_LEASE_SECONDS": str(lease),
        # One turn at a time per worker, as a forking worker had: a SIGKILL then stops exactly the turn
        # the test chose. A pool's death with several turns in flight: tests/bot/test_turn_pool.py.
        "CHATOPS_TURN_CONCURRENCY": "1",
    }
    cluster = Cluster(world, redis_url, env, Path(tempfile.mkdtemp(prefix="chatops-scaleout-")))
    try:
        cluster.start(webs, workers)
        yield cluster
    finally:
        cluster.stop()
