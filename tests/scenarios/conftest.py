"""End-to-end harness: the real web app on loopback, signed Slack requests, real Redis, real RQ workers,
and the fixture world (identity provider, registry, MCP servers, Slack, model) behind them.

Scenario tests are synchronous on purpose: RQ runs async jobs on a fresh event loop of their own, which
cannot start inside a running test loop. `Scenario.work()` drains the queues with real workers (burst).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from approvals.audit import AUDIT_STREAM
from approvals.store import Approval, ApprovalStore
from approvals.turn_queue import queued_job_ids
from approvals.turns import turn_id_for
from bot import jobs
from bot.cards import APPROVE_ACTION_ID
from bot.identity import BotIdentity
from bot.preflight import whoami
from bot.queues import RQ_QUEUES, WORKFLOWS
from bot.redis_clients import async_client, sync_client
from bot.settings import Role, Settings, load_settings
from bot.turn_pool import drain_turns
from bot.web import build_web
from bot.wiring import open_wiring
from fixtures.mcp_servers import reseed
from fixtures.redis_proc import RedisProc
from fixtures.server import RunningServer, bind_loopback, start
from fixtures.slack import TEAM_ID, Message
from fixtures.slack_ingress import SlackIngress
from fixtures.waiting import wait_until
from fixtures.world import SIGNING_SECRET, World, start_world
from flows.linking import Linking

SLACK_IDS = {"alice": "U0ALICE", "bob": "U0BOB", "carol": "U0CAROL", "dave": "U0DAVE", "erin": "U0ERIN"}


class _CountingWorker(SimpleWorker):
    """Counts the jobs it ran. RQ keeps `successful_job_count` in the worker's Redis hash, which is gone once
    a burst worker stops: the attribute stays 0, so `work() == 0` could never fail."""

    executed = 0

    def execute_job(self, job: Job, queue: Queue) -> None:
        self.executed += 1
        super().execute_job(job, queue)


@dataclass
class Scenario:
    world: World
    settings: Settings
    env: dict[str, str]
    bot: BotIdentity
    web: RunningServer
    ingress: SlackIngress
    redis_url: str
    # Where a person signs in at the company provider (default: the world's FakeIdP).
    login_url: Callable[[str], str] | None = None

    @property
    def redis(self) -> redis.Redis:
        return sync_client(self.redis_url)

    def work(self) -> int:
        """Run every queued job to completion in this process: RQ's with a real RQ worker, the turn queue's
        with a real consumer (bot.turn_pool.drain_turns), until neither finds work; return how many ran."""
        connection = sync_client(self.redis_url)
        executed = 0
        while True:
            worker = _CountingWorker(
                list(RQ_QUEUES),
                connection=connection,
                serializer=JSONSerializer,
                job_class=jobs.wired_job_class(self.settings, self.bot),
            )
            worker.work(burst=True, with_scheduler=False)
            turns = drain_turns(self.settings, self.bot)
            executed += worker.executed + turns
            if not turns:
                break
        connection.close()
        return executed

    def work_in_subprocess(self) -> None:
        """The same, in a separate `chatops worker --burst` process (a restart, another machine)."""
        env = {**os.environ, **self.env, "CHATOPS_NETGUARD": "1"}
        subprocess.run(
            [sys.executable, "-m", "bot.cli", "worker", "--burst"], env=env, check=True, timeout=120
        )

    def link(self, person: str, *, slack_user: str | None = None) -> None:
        """Connect a person's account through the real browser flow against the web process; `slack_user`
        links another Slack account of theirs (the person signs in at the identity provider either way)."""
        page = self.browse_link(person, self.offer_url(person, slack_user=slack_user))
        assert page.status_code == 200, f"linking {person} failed: {page.text}"

    def offer_url(self, person: str, *, slack_user: str | None = None) -> str:
        """The Connect link the bot would hand this person (or their other Slack account) in Slack."""

        async def offer() -> str:
            async with open_wiring(self.settings, self.bot) as svc:
                linking: Linking = svc.linking
                return await linking.offer(TEAM_ID, slack_user or SLACK_IDS[person])

        return asyncio.run(offer())

    @contextmanager
    def browser(self, person: str | None = None) -> Iterator[httpx2.Client]:
        """One browser (its own cookie jar), signed in at the identity provider as `person` if given."""
        with httpx2.Client(follow_redirects=True, timeout=10) as browser:
            if person is not None:
                browser.get((self.login_url or self.world.idp.login_url)(person))
            yield browser

    def browse_link(self, person: str, url: str) -> httpx2.Response:
        with self.browser(person) as browser:
            return browser.get(url)

    def bot_messages(self, channel: str, thread_ts: str) -> list[Message]:
        return [m for m in self.world.slack.messages(channel, thread_ts=thread_ts) if m.bot_id]

    def approvals(self, turn_channel: str, ts: str) -> list[Approval]:
        async def load() -> list[Approval]:
            client = async_client(self.redis_url)
            try:
                store = ApprovalStore(client, seal_key=b"x" * 32)
                return await store.for_turn(turn_id_for(TEAM_ID, turn_channel, ts))
            finally:
                await client.aclose()

        return sorted(asyncio.run(load()), key=lambda a: a.created_at)

    def approval(self, approval_id: str) -> Approval:
        async def load() -> Approval | None:
            client = async_client(self.redis_url)
            try:
                return await ApprovalStore(client, seal_key=b"x" * 32).get(approval_id)
            finally:
                await client.aclose()

        found = asyncio.run(load())
        assert found is not None
        return found

    def card_ts(self, approval: Approval) -> str:
        return next(c.ts for c in approval.cards if c.channel == approval.channel)

    def click(
        self, user: str, approval: Approval, action: str = APPROVE_ACTION_ID, *, wait: bool = True
    ) -> None:
        """Click a card button as `user` and wait until the lazy listener has recorded the attempt."""
        before = self.redis.llen(f"chatops:approval:{approval.id}:attempts")
        request = self.ingress.block_actions(
            user, action, channel=approval.channel, message_ts=self.card_ts(approval), value=approval.id
        )
        assert self.ingress.post(request).status == 200
        if wait:
            wait_until(
                "the click to be recorded",
                lambda: self.redis.llen(f"chatops:approval:{approval.id}:attempts") > before,
            )
            self.settled(approval)

    def settled(self, approval: Approval) -> None:
        """An approving click enqueues the action just after recording the vote; wait for that too, so a
        following work() cannot run before the job exists."""
        wait_until(
            "the approved action to be queued",
            lambda: (
                self.approval(approval.id).status.value != "APPROVED"
                or Job.exists(f"exec-{approval.id}", connection=self.redis)
            ),
        )

    def told(self, user: str, channel: str, count: int = 1) -> list[str]:
        """Ephemeral messages to `user` in `channel`, once at least `count` have arrived."""
        found = wait_until(
            f"{count} ephemeral message(s) to {user}",
            lambda: (lambda e: e if len(e) >= count else None)(
                self.world.slack.ephemerals(channel, user=user)
            ),
        )
        return [m.text for m in found]

    def resume_queued(self, channel: str, ts: str) -> None:
        """Wait until the paused turn of the message at (channel, ts) is queued to resume: a decision is
        recorded first, and its follow-ups (cards, audit, then the resume) come just after."""
        turn = turn_id_for(TEAM_ID, channel, ts)

        def queued() -> bool:  # on the queue itself, not just the job's state
            return any(j.startswith(f"{turn}-resume-") for j in queued_job_ids(self.redis))

        wait_until("the turn's resume to be queued", queued)

    def runs_queued(self, user: str, count: int = 1) -> None:
        """Wait until the newest `count` workflow runs of `user` are on their queue: /oncall's lazy
        listener stores a run and then enqueues it, and a `work()` between the two finds nothing to do."""

        def queued() -> bool:  # on the queue itself: a job's hash is written before it is pushed there
            ids = [i.decode() for i in self.redis.lrange(f"chatops:wfruns:{TEAM_ID}:{user}", 0, -1)]
            waiting = set(Queue(WORKFLOWS, connection=self.redis, serializer=JSONSerializer).job_ids)
            return len(ids) >= count and all(f"wf-{i}" in waiting for i in ids[:count])  # the newest

        wait_until(f"{count} workflow run(s) of {user} to be queued", queued)

    def turn_status(self, channel: str, ts: str) -> str | None:
        raw = self.redis.hget(f"chatops:turn-status:{turn_id_for(TEAM_ID, channel, ts)}", "status")
        return raw.decode() if isinstance(raw, bytes) else None

    def audit(self, kind: str) -> list[dict[str, Any]]:
        """The audit trail's records of `kind`, oldest first."""
        records = [json.loads(fields[b"record"]) for _, fields in self.redis.xrange(AUDIT_STREAM)]
        return [r for r in records if r["kind"] == kind]


@pytest.fixture(scope="session")
def scenario_world() -> Iterator[World]:
    world = start_world()
    yield world
    world.stop()


@pytest.fixture(scope="session")
def scenario_redis() -> Iterator[RedisProc]:
    server = RedisProc().start()
    yield server
    server.stop()


@contextmanager
def serving(world: World, redis_url: str) -> Iterator[tuple[RunningServer, Settings, BotIdentity]]:
    """The real web process for `world`, on a kernel-chosen loopback port."""
    sock = bind_loopback()
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = load_settings(Role.WEB_HTTP, env=world.env(public_url=public_url, redis_url=redis_url))
    bot = whoami(settings)
    web = start(build_web(settings, bot), sock=sock)
    try:
        yield web, settings, bot
    finally:
        web.stop()


@contextmanager
def scenario_of(world: World, redis_url: str) -> Iterator[Scenario]:
    """A whole scenario around a world a test started for itself (the shared one is `scenario`)."""
    with serving(world, redis_url) as (web, settings, bot):
        world.allow_redirect(web.url)
        env = world.env(public_url=web.url, redis_url=redis_url)
        ingress = SlackIngress(web.url, SIGNING_SECRET, slack=world.slack)
        try:
            yield Scenario(world, settings, env, bot, web, ingress, redis_url)
        finally:
            ingress.close()


@pytest.fixture(scope="session")
def scenario_web(
    scenario_world: World, scenario_redis: RedisProc
) -> Iterator[tuple[RunningServer, Settings, BotIdentity]]:
    with serving(scenario_world, scenario_redis.url) as served:
        yield served


def fresh_world(world: World) -> None:
    """The shared world as a test expects to find it: no messages, replies, grants or hostile knobs left."""
    world.slack.reset()
    world.anthropic.reset()
    world.registry.reset()
    world.idp.reset()
    reseed(world.servers)
    for server in world.servers.values():
        server.record.clear()
        server.knobs.reset()
        server.ledger.reset()


@pytest.fixture
def scenario(
    scenario_world: World,
    scenario_redis: RedisProc,
    scenario_web: tuple[RunningServer, Settings, BotIdentity],
) -> Iterator[Scenario]:
    web, settings, bot = scenario_web
    world = scenario_world
    client = redis.Redis.from_url(scenario_redis.url)
    client.flushall()
    client.close()
    fresh_world(world)
    world.allow_redirect(web.url)
    env = world.env(public_url=web.url, redis_url=scenario_redis.url)
    ingress = SlackIngress(web.url, SIGNING_SECRET, slack=world.slack)
    yield Scenario(world, settings, env, bot, web, ingress, scenario_redis.url)
    ingress.close()
