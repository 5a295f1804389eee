"""Faults and attacks (ACCEPTANCE.md) against the same loopback world as the scenarios.

The scenario fixtures are reused as they are: the real web app, signed Slack requests, a real Redis and
real RQ workers. `scenario_on` starts a second web process on a Redis of the test's own (one it may kill
or starve); `with_services` runs a coroutine against the bot's own composition root, for the few cases
that must reach inside one process (an enqueue that fails between a decision and its job).

After every test that passed, the ACCEPTANCE invariants are checked against what it left behind
(`assert_invariants`): (a) each executed tool call of an approval has exactly one terminal `tool_call` audit
record carrying the SPEC §9 fields; (b) no fake MCP server performed more side effects than there were
approved executions, and no idempotency key ran twice; (c) no credential of the world appears in what the bot
sent to the model or to Slack, in the audit, or anywhere in Redis. (d), nothing leaving 127.0.0.1, is the
network guard's job (tests/netguard.py) for every test.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
import redis as sync_redis

from approvals.store import Approval
from bot.settings import Role, load_settings
from bot.web import build_web
from bot.wiring import Wiring, open_wiring
from fixtures.anthropic_fake import Body, Reply
from fixtures.idp import DEFAULT_CLIENT_SECRET
from fixtures.redis_proc import RedisProc
from fixtures.server import bind_loopback, start
from fixtures.slack_ingress import SlackIngress
from fixtures.world import ANTHROPIC_KEY, APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, World
from tests.scenarios.conftest import (  # noqa: F401  (fixtures, re-exported for this folder)
    Scenario,
    scenario,
    scenario_redis,
    scenario_web,
    scenario_world,
)

T = TypeVar("T")


def proposed_kill(s: Scenario, script: Callable[[Body], Reply]) -> Approval:
    """Alice asks in #incidents (the model follows `script`) and her turn pauses on the kill; bob and carol
    are linked, to decide. Returns the approval as it was proposed."""
    for person in ("alice", "bob", "carol"):
        s.link(person)
    s.world.anthropic.set_default(script)
    mention = s.ingress.app_mention("U0ALICE", "C0INCIDENT", "kill the runaway backfill")
    s.ingress.post(mention)
    s.work()
    (approval,) = s.approvals("C0INCIDENT", mention.event["ts"])
    return approval


def approved_kill(s: Scenario, script: Callable[[Body], Reply]) -> Approval:
    """`proposed_kill`, then bob and carol approve, and the action and the resumed turn run."""
    approval = proposed_kill(s, script)
    s.click("U0BOB", approval)
    s.click("U0CAROL", approval)
    s.work()
    return approval


def with_services(s: Scenario, work: Callable[[Wiring], Awaitable[T]]) -> T:
    async def run() -> T:
        async with open_wiring(s.settings, s.bot) as svc:
            return await work(svc)

    return asyncio.run(run())


@contextmanager
def scenario_on(s: Scenario, redis: RedisProc) -> Iterator[Scenario]:
    """The same world, served by a fresh web process whose Redis is `redis`."""
    sock = bind_loopback()
    env = s.world.env(public_url=f"http://127.0.0.1:{sock.getsockname()[1]}", redis_url=redis.url)
    settings = load_settings(Role.WEB_HTTP, env=env)
    web = start(build_web(settings, s.bot), sock=sock)
    s.world.allow_redirect(web.url)
    ingress = SlackIngress(web.url, SIGNING_SECRET, slack=s.world.slack)
    own = Scenario(s.world, settings, env, s.bot, web, ingress, redis.url)
    _MOVED.add(id(s))
    try:
        yield own
        if redis.running:
            assert_invariants(own)
    finally:
        ingress.close()
        web.stop()


# ----- invariants (ACCEPTANCE: "checked in every case's teardown") -------------------------------------

TERMINAL = ("succeeded", "failed", "outcome_unknown")
EXECUTED = ("SUCCEEDED", "OUTCOME_UNKNOWN")  # the call reached the server (or may have)
WAS_APPROVED = ("APPROVED", "RUNNING", "SUCCEEDED", "FAILED", "OUTCOME_UNKNOWN")
SPEC_FIELDS = ("time", "kind", "team", "user", "sub", "server", "tool", "args_sha256", "outcome")
CREDENTIAL_SHAPES = re.compile(
    r"\bxox[abposre]-[A-Za-z0-9-]+|\bxapp-[A-Za-z0-9-]+|\bsk-ant-[A-Za-z0-9_-]{8,}"
)


def audit_records(client: sync_redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields[b"record"]) for _, fields in client.xrange("chatops:audit")]


def approval_statuses(client: sync_redis.Redis) -> dict[str, str]:
    found: dict[str, str] = {}
    for key in client.scan_iter(match="chatops:approval:a*"):
        name = key.decode()
        if name.count(":") == 2 and client.type(key) == b"hash":
            status = client.hget(key, "status")
            found[name.rsplit(":", 1)[1]] = status.decode() if status else ""
    return found


def world_secrets(world: World) -> set[str]:
    """Every credential the world handed out or accepted during the test (at least 12 characters)."""
    found = {BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, ANTHROPIC_KEY, DEFAULT_CLIENT_SECRET, world.secret_key}
    for server in world.servers.values():
        found |= {r.authorization.removeprefix("Bearer ") for r in server.record.all() if r.authorization}
    for request in world.idp.requests("/token"):
        found |= {v for k, v in request.params if k in ("code", "refresh_token", "code_verifier")}
    found |= set(world.idp.store.refresh)
    return {x for x in found if x and len(x) >= 12}


def redis_dump(client: sync_redis.Redis) -> str:
    read = {
        "string": client.get,
        "hash": client.hgetall,
        "list": lambda k: client.lrange(k, 0, -1),
        "set": client.smembers,
        "zset": lambda k: client.zrange(k, 0, -1),
        "stream": client.xrange,
    }
    return repr([(key, read[client.type(key).decode()](key)) for key in client.scan_iter()])


def secret_leaks(
    s: Scenario, secrets: set[str] | None = None, *, model_said: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """(where, first characters) of every credential found where the bot writes (ACCEPTANCE 38).

    `model_said`: strings a test scripted into the model's own replies. The model's turns are kept in the
    conversation and sent back to it verbatim, so those (and only those) may appear in later requests to the
    model and in the stored conversation."""
    secrets = world_secrets(s.world) if secrets is None else secrets

    def unsaid(blob: str) -> str:
        for said in model_said:
            blob = blob.replace(said, "[the model's own words]")
        return blob

    stores = {
        "anthropic requests": unsaid(json.dumps([r.body for r in s.world.anthropic.requests(None)])),
        "slack calls": json.dumps([c.args for c in s.world.slack.calls()]),
        "slack files": json.dumps(
            [(f.content or b"").decode(errors="replace") for f in s.world.slack.files()]
        ),
        "redis": unsaid(redis_dump(s.redis)),
    }
    leaks = [(where, secret[:12]) for where, blob in stores.items() for secret in secrets if secret in blob]
    leaks += [
        (where, m.group(0)[:12]) for where, blob in stores.items() for m in CREDENTIAL_SHAPES.finditer(blob)
    ]
    return leaks


def assert_invariants(s: Scenario, *, model_said: frozenset[str] = frozenset()) -> None:
    client = s.redis
    records = audit_records(client)
    statuses = approval_statuses(client)
    # (a) one terminal audit record per executed call, with the SPEC §9 fields and its approval
    calls = [r for r in records if r["kind"] == "tool_call" and r["outcome"] in TERMINAL]
    for record in calls:
        missing = [f for f in SPEC_FIELDS if not record.get(f)]
        assert not missing, f"tool_call record lacks {missing}: {record}"
        assert re.fullmatch(r"[0-9a-f]{64}", record["args_sha256"]), record
    for approval_id, status in statuses.items():
        mine = [r for r in calls if r.get("approval_id") == approval_id]
        expected = 1 if status in EXECUTED else (0, 1)
        assert len(mine) in ((expected,) if isinstance(expected, int) else expected), (
            f"approval {approval_id} ({status}) has {len(mine)} terminal tool_call records"
        )
    assert {r["approval_id"] for r in calls if r.get("approval_id")} <= set(statuses)
    # (b) side effects never exceed approved executions; one key never runs twice
    approved = {a for a, status in statuses.items() if status in WAS_APPROVED}
    entries = [e for server in s.world.servers.values() for e in server.ledger.entries()]
    assert len(entries) <= len(approved), f"{len(entries)} side effects for {len(approved)} approvals"
    keys = [e["key"] for e in entries if e["key"] is not None]
    assert len(keys) == len(set(keys)), f"an idempotency key ran twice: {keys}"
    assert set(keys) <= approved, f"side effects without an approval: {set(keys) - approved}"
    # (c) the secret sweep finds nothing
    assert secret_leaks(s, model_said=model_said) == []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_PASSED] = report.passed


_PASSED = pytest.StashKey[bool]()
_MODEL_SAID = pytest.StashKey[set[str]]()
_MOVED: set[int] = set()  # scenarios whose test ran on a Redis of its own (checked by scenario_on)


@pytest.fixture
def model_said(request: pytest.FixtureRequest) -> set[str]:
    """Add the credential-shaped strings a test scripts the model to say (see `secret_leaks`)."""
    return request.node.stash.setdefault(_MODEL_SAID, set())


@pytest.fixture(autouse=True)
def invariants(request: pytest.FixtureRequest) -> Iterator[None]:
    """Set up the scenario first (so it is still alive at this teardown), then check what the test left."""
    checked = request.getfixturevalue("scenario") if "scenario" in request.fixturenames else None
    yield
    if checked is None or id(checked) in _MOVED:
        _MOVED.discard(id(checked))
        return
    if request.node.stash.get(_PASSED, False):
        assert_invariants(checked, model_said=frozenset(request.node.stash.get(_MODEL_SAID, set())))
