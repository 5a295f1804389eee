"""`chatops demo`: the whole product, locally, with no credentials and no Redis.

It starts an embedded Redis, the fixture world (identity provider, registry, presto/spark/airflow MCP servers,
a fake Slack and a scripted model), then the real `chatops serve` and `chatops worker` processes, and plays
an incident: a mention in #incidents, the Connect prompt, account linking in a "browser", and the
investigation answered in the thread. It prints what people in Slack would see, with timings.
"""

from __future__ import annotations

import html
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import redis

from approvals.turns import turn_id_for
from devtools.demo_stage import NAMES, Clock, DemoFailed, button_url, message_text, say, show_new, wait_until
from devtools.embedded import embedded_redis
from devtools.keep import keep_running
from devtools.process_tree import stop_tree
from fixtures.anthropic_fake import FakeAnthropic
from fixtures.incident_script import incident_responder
from fixtures.redis_proc import free_port
from fixtures.slack import BOT_USER_ID, TEAM_ID, FakeSlack, Message
from fixtures.slack_ingress import SlackIngress
from fixtures.world import ANTHROPIC_KEY, SIGNING_SECRET, World, start_world

__all__ = ["run_demo"]

CHANNEL = "C0INCIDENT"
DEMO_WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


@contextmanager
def bot_processes(env: dict[str, str], port: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    python = sys.executable
    log = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    commands = {
        "serve": [python, "-m", "bot.cli", "serve", "--host", "127.0.0.1"],
        "worker": [python, "-m", "bot.cli", "worker"],
    }
    # Fixed argument lists of our own command: nothing untrusted reaches the subprocess. Each in a session of
    # its own: a Ctrl-C reaches the demo alone, which stops them in order (devtools.process_tree).
    procs = {
        name: subprocess.Popen(cmd, env=env, stderr=log, stdout=log, start_new_session=True)  # noqa: S603
        for name, cmd in commands.items()
    }
    try:

        def healthy() -> bool:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise DemoFailed(f"`chatops {name}` exited with {proc.returncode}")
            try:
                return httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx2.HTTPError:
                return False

        wait_until("the web process to start", healthy)
        yield list(procs.values())
    finally:
        for proc in procs.values():  # web first: nothing new is enqueued while the worker finishes
            stop_tree(proc)
        log.close()


# Over 60 lines on purpose: a script, read top to bottom like the incident it plays.
def play(
    world: World,
    slack: FakeSlack,
    ingress: SlackIngress,
    redis_url: str,
    port: int,
    *,
    real_model: bool = False,
) -> None:
    clock = Clock()
    r = redis.Redis.from_url(redis_url)
    print("\n#incidents\n")
    question = f"<@{BOT_USER_ID}> why did daily_ad_metrics fail last night?"
    mention = ingress.app_mention("U0ALICE", CHANNEL, question)
    say(clock, "Alice", question.replace(f"<@{BOT_USER_ID}>", "@chatops"))
    delivery = ingress.post(mention)
    acked = f"{delivery.latency * 1000:.0f} ms: HTTP {delivery.status}"
    print(f"{' ' * 10}(Slack got its acknowledgement in {acked})")
    ts = mention.event["ts"]

    prompt = wait_until(
        "the Connect prompt", lambda: next(iter(slack.ephemerals(CHANNEL, user="U0ALICE")), None)
    )
    say(clock, "chatops (only visible to Alice)", message_text(prompt))
    url = button_url(prompt)
    if url is None:
        raise DemoFailed("the Connect prompt has no link")

    with httpx2.Client(follow_redirects=True) as browser:
        browser.get(world.idp.login_url("alice"))
        page = browser.get(url)
    headline = html.unescape(page.text.split("<h1>", 1)[-1].split("</h1>", 1)[0])
    print(f'{clock.stamp()} (browser) Alice signs in at the identity provider -> "{headline}"')

    turn = turn_id_for(TEAM_ID, CHANNEL, ts)

    def finished() -> str | None:
        raw = r.hget(f"chatops:turn-status:{turn}", "status")
        status = raw.decode() if isinstance(raw, bytes) else raw
        return status if status in ("answered", "paused", "failed") else None

    status = wait_until("the answer", finished)
    for message in slack.messages(CHANNEL, thread_ts=ts):
        if message.ts == ts:
            continue
        say(clock, NAMES.get(message.user, message.user), message_text(message))
    print(
        f"{' ' * 10}(turn {status}; Presto saw only Alice's own token: "
        f"{sorted({s for s in world.servers['presto'].record.subs() if s})})"
    )
    shown = {m.ts for m in slack.messages(CHANNEL, thread_ts=ts)}
    try:
        act_two(world, slack, ingress, r, clock, ts, shown)
    except DemoFailed as exc:
        if not real_model:
            raise
        # A real model decides for itself; it may not propose the kill the script does.
        show_new(slack, CHANNEL, clock, ts, shown)
        print(f"{' ' * 10}(the real model did not go the scripted way: {exc}; moving on)")
    act_three(world, slack, ingress, r, clock)
    epilogue(r, clock, redis_url)
    r.close()


def wait_for_card(r: redis.Redis, approval_id: str, ts: str) -> None:
    """A click counts only from a card the approval knows as its own (approvals.service), and the card's
    ts is recorded just after Slack shows it: a person is never that quick, the demo could be."""
    wait_until(
        "the card to be recorded", lambda: ts in str(r.hget(f"chatops:approval:{approval_id}", "cards"))
    )


# Over 60 lines on purpose: a script, read top to bottom like the incident it plays.
def act_three(world: World, slack: FakeSlack, ingress: SlackIngress, r: redis.Redis, clock: Clock) -> None:
    print(f"\n{clock.stamp()} Alice runs the canned workflow from the slash command:")
    command = "run restart-failed-dag dag_id=daily_ad_metrics"
    say(clock, "Alice", f"/oncall {command}")
    before = {m.ts for m in slack.messages(CHANNEL)}
    ingress.post(ingress.slash_command("U0ALICE", "/oncall", command, channel=CHANNEL))
    started = wait_until(
        "the workflow to start",
        lambda: next((m for m in slack.ephemerals(CHANNEL, user="U0ALICE") if "Starting" in m.text), None),
    )
    say(clock, "chatops (only visible to Alice)", started.text)
    progress = wait_until(
        "the progress message",
        lambda: next((m for m in slack.messages(CHANNEL) if m.ts not in before and m.bot_id), None),
    )
    card = wait_until(
        "the workflow's approval card",
        lambda: next(
            (
                m
                for m in slack.messages(CHANNEL, thread_ts=progress.ts)
                if "approval_approve" in json.dumps(m.blocks)
            ),
            None,
        ),
    )
    current = slack.message(CHANNEL, progress.ts) or progress
    say(clock, "chatops", message_text(current))
    say(clock, "chatops (in the thread)", message_text(card))
    approval_id = next(
        str(e["value"])
        for b in card.blocks or []
        if b.get("type") == "actions"
        for e in b["elements"]
        if e.get("action_id") == "approval_approve"
    )
    wait_for_card(r, approval_id, card.ts)
    print(f"{clock.stamp()} (Bob, an airflow admin, taps Approve)")
    ingress.post(
        ingress.block_actions(
            "U0BOB", "approval_approve", channel=CHANNEL, message_ts=card.ts, value=approval_id
        )
    )

    def finished() -> Message | None:
        message = slack.message(CHANNEL, progress.ts)
        return (
            message
            if message is not None
            and ("Done" in json.dumps(message.blocks) or ":x:" in json.dumps(message.blocks))
            else None
        )

    say(
        clock,
        "chatops (progress message, updated)",
        message_text(wait_until("the workflow to finish", finished)),
    )
    print(
        f"{' ' * 10}(clear_task_instances ran "
        f"{world.servers['airflow'].ledger.count('clear_task_instances')} time(s))"
    )


def epilogue(r: redis.Redis, clock: Clock, redis_url: str) -> None:
    print(f"\n{clock.stamp()} The audit trail (`chatops audit export`), one line per record:")
    minutes = 0.0
    for _, fields in r.xrange("chatops:audit") or []:
        record = json.loads((fields or {})[b"record"])
        minutes += float(record.get("minutes_saved") or 0)
        server = str(record.get("server") or "").split("/")[-1]
        what = f"{server}.{record['tool']}" if server else str(record.get("tool") or "")
        print(
            f"{' ' * 10}{record['kind']:<20} {record.get('outcome', ''):<16} {record.get('user', ''):<9} "
            f"{what:<34} approvers={','.join(record.get('approvers') or []) or '-'}"
        )
    print(f"{' ' * 10}time saved in this incident, by the owners' estimates: {minutes:.0f} minutes")
    print(f"\n{clock.stamp()} `chatops stats`:")
    for line in stats_table(redis_url).splitlines():
        print(f"{' ' * 10}{line}")


def stats_table(redis_url: str) -> str:
    import asyncio

    import redis.asyncio as aioredis

    from approvals.impact import default_months, monthly_stats, render_table

    async def build() -> str:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return render_table(await monthly_stats(client, months=default_months(time.time())[-1:]))
        finally:
            await client.aclose()

    return asyncio.run(build())


def link_quietly(world: World, env: dict[str, str], person: str, user: str) -> None:
    """Connect a person's account the way their browser would (for people who linked before the incident)."""
    import asyncio

    from bot.identity import BotIdentity
    from bot.settings import Role, load_settings
    from bot.wiring import open_wiring

    settings = load_settings(Role.WEB_HTTP, env=env)

    async def offer() -> str:
        async with open_wiring(settings, BotIdentity(TEAM_ID, "", "")) as svc:
            return await svc.linking.offer(TEAM_ID, user)

    url = asyncio.run(offer())
    with httpx2.Client(follow_redirects=True) as browser:
        browser.get(world.idp.login_url(person))
        browser.get(url)


# Over 60 lines on purpose: a script, read top to bottom like the incident it plays.
def act_two(
    world: World,
    slack: FakeSlack,
    ingress: SlackIngress,
    r: redis.Redis,
    clock: Clock,
    ts: str,
    shown: set[str],
) -> None:
    print(f"\n{clock.stamp()} (Bob and Carol, both presto-oncall, connected their accounts earlier)")
    question = "kill it please"
    say(clock, "Alice", question)
    follow_up = ingress.message("U0ALICE", CHANNEL, question, thread_ts=ts)
    shown.add(str(follow_up.event["ts"]))
    ingress.post(follow_up)
    card = wait_until(
        "the approval card",
        lambda: next(
            (m for m in slack.messages(CHANNEL, thread_ts=ts) if "approval_approve" in json.dumps(m.blocks)),
            None,
        ),
    )
    show_new(slack, CHANNEL, clock, ts, shown)
    approval_id = next(
        str(e["value"])
        for b in card.blocks or []
        if b.get("type") == "actions"
        for e in b["elements"]
        if e.get("action_id") == "approval_approve"
    )

    wait_for_card(r, approval_id, card.ts)

    def click(user: str) -> None:
        attempts = f"chatops:approval:{approval_id}:attempts"
        before = r.llen(attempts)
        name = NAMES[user]
        print(f"{clock.stamp()} ({name} taps Approve)")
        ingress.post(
            ingress.block_actions(
                user, "approval_approve", channel=CHANNEL, message_ts=card.ts, value=approval_id
            )
        )
        wait_until(f"{name}'s click to be recorded", lambda: r.llen(attempts) > before)

    shown.update(f"e:{m.ts}" for m in slack.ephemerals(CHANNEL, user="U0ALICE"))
    click("U0ALICE")
    wait_until("the refusal", lambda: slack.ephemerals(CHANNEL, user="U0ALICE")[1:] or None)
    show_new(slack, CHANNEL, clock, ts, shown, ephemeral_to="U0ALICE")
    click("U0BOB")
    click("U0CAROL")

    def resumed() -> bool:
        return any(
            "Next, clear the failed tasks" in message_text(m) or "did not lead" in message_text(m)
            for m in slack.messages(CHANNEL, thread_ts=ts)
        )

    wait_until("the action and the resumed answer", resumed)
    show_new(slack, CHANNEL, clock, ts, shown)
    card_now = slack.message(CHANNEL, card.ts)
    if card_now is not None:
        say(clock, "chatops (the card, updated)", message_text(card_now))
    kills = world.servers["presto"].ledger.count("kill_query")
    print(
        f"{' ' * 10}(kill_query ran {kills} time(s), as Alice: "
        f"{[c.sub for c in world.servers['presto'].record.tool_calls('kill_query')]})"
    )


def run_demo(*, keep: bool = False) -> int:
    # The demo prints a conversation; HTTP client chatter (which would include OAuth codes) stays out of it.
    logging.basicConfig(level=logging.WARNING, force=True)
    real_key = os.environ.get("ANTHROPIC_API_KEY", "")
    real_model = bool(real_key) and real_key != ANTHROPIC_KEY
    what = "the real model" if real_model else "a scripted model"
    print(f"chatops demo: starting a local world (identity provider, registry, MCP servers, Slack), {what}.")
    model = FakeAnthropic(api_key=ANTHROPIC_KEY)
    model.set_default(incident_responder)
    world = start_world(anthropic=model)
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    world.allow_redirect(public_url)
    try:
        with embedded_redis() as redis_url:
            env = {**os.environ, **world.env(public_url=public_url, redis_url=redis_url)}
            env.update({"PORT": str(port), "LOG_LEVEL": "WARNING", "CHATOPS_NETGUARD": "1"})
            # The demo's workflows are the checkout's, wherever it is started from (the default folder is
            # relative to the current one: run elsewhere, /oncall would find no workflow).
            env.setdefault("WORKFLOWS_DIR", str(DEMO_WORKFLOWS))
            if real_model:
                # Only the worker's model calls leave this machine; everything else stays on loopback.
                env.update({"ANTHROPIC_API_KEY": real_key, "CHATOPS_NETGUARD": "0"})
                env.pop("ANTHROPIC_BASE_URL", None)
                if os.environ.get("ANTHROPIC_BASE_URL"):
                    env["ANTHROPIC_BASE_URL"] = os.environ["ANTHROPIC_BASE_URL"]
            with bot_processes(env, port):
                link_quietly(world, env, "bob", "U0BOB")
                link_quietly(world, env, "carol", "U0CAROL")
                ingress = SlackIngress(f"{public_url}", SIGNING_SECRET, slack=world.slack)
                play(world, world.slack, ingress, redis_url, port, real_model=real_model)
                if keep:
                    keep_running(env)
    except DemoFailed as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        world.stop()
    print("\ndemo finished.")
    return 0
