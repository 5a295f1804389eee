"""App Home (SPEC §7): the tab shows a person's link, the servers they may use, the approvals waiting on them,
their recent requests and the time saved; its buttons connect, disconnect, approve and reject."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from slack_sdk.models.views import View

from approvals.audit import Audit, AuditRecord
from approvals.home_records import TimeSaved
from approvals.store import Approval, Status
from bot.blocks import CONNECT_ACTION_ID, RECONNECT_ACTION_ID
from bot.cards import APPROVE_ACTION_ID, REJECT_ACTION_ID, REJECT_CALLBACK_ID
from bot.home import (
    HOME_APPROVAL_BLOCK_PREFIX,
    HOME_DISCONNECT_ACTION_ID,
    home_view,
    period_starts,
    remember_request,
)
from fixtures.slack import TEAM_ID
from fixtures.waiting import wait_until
from mcp_clients.tokens import Identity
from registry_cache.model import Governance, ServerEntry
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_approvals import ask, kills
from tests.scenarios.test_workflow_feedback import snapshot, thumbs_down

JSON = dict[str, Any]
CHANNEL = "C0INCIDENT"


def open_home(s: Scenario, user: str) -> JSON:
    """Open the Home tab as `user` and return the view published in answer."""
    return published_after(s, user, lambda: s.ingress.post(s.ingress.app_home_opened(user)).status)


def click_home(s: Scenario, user: str, action_id: str, value: str | None = None) -> JSON:
    """Click a button on `user`'s Home and return the view published in answer."""
    view = s.world.slack.home_view(user)
    assert view is not None

    def click() -> int:
        request = s.ingress.block_actions(user, action_id, view_id=view["id"], value=value)
        return s.ingress.post(request).status

    return published_after(s, user, click)


def published_after(s: Scenario, user: str, act: Callable[[], int]) -> JSON:
    """Do `act` (it returns the HTTP status of the request it sent) and wait for the Home it causes."""
    before = (s.world.slack.home_view(user) or {}).get("hash")
    assert act() == 200

    def fresh() -> JSON | None:
        view = s.world.slack.home_view(user)
        return view if view is not None and view["hash"] != before else None

    # Unwired, nothing ever publishes: bot.listeners.register must call register_home first.
    return wait_until(f"{user}'s Home to be published (is register_home wired in?)", fresh)


def text(view: JSON) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def buttons(view: JSON) -> list[tuple[str | None, JSON]]:
    return [(b.get("block_id"), e) for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_an_unlinked_person_is_offered_a_connect_button_that_links_them(scenario: Scenario) -> None:
    s = scenario
    view = open_home(s, "U0DAVE")
    assert view["type"] == "home"
    connect = [e for _, e in buttons(view) if e["action_id"] == CONNECT_ACTION_ID]
    assert len(connect) == 1
    assert connect[0]["url"].startswith(s.web.url + "/oauth/start/")
    assert HOME_DISCONNECT_ACTION_ID not in text(view)
    assert "Servers you can use" not in text(view)  # nothing to show before we know who they are

    s.browse_link("dave", connect[0]["url"])
    view = open_home(s, "U0DAVE")
    assert "Connected as *dave@example.com*" in text(view)
    assert "ledger" in text(view)  # dave is in finance


def test_a_data_eng_person_sees_their_servers_with_owners_and_tool_policies(scenario: Scenario) -> None:
    s = scenario
    s.link("bob")
    view = open_home(s, "U0BOB")
    shown = text(view)
    assert "Connected as *bob@example.com*" in shown
    assert "presto-oncall" in shown  # bob's groups
    for server, owner in (
        ("presto", "data-platform"),
        ("spark", "compute-platform"),
        ("airflow", "data-platform"),
    ):
        section = next(
            b["text"]["text"] for b in view["blocks"] if f"`{server}`" in b.get("text", {}).get("text", "")
        )
        assert f"Owner: {owner}" in section
    assert "`ledger`" not in shown  # finance only
    assert "`hive-legacy`" not in shown  # suspended
    assert "`kill_query` needs 2 approvals from presto-oncall" in shown
    assert "`query_history` runs at once" in shown
    assert "drop_table" not in shown  # disabled tools are not advertised
    assert "Only in <#C0INCIDENT>" in shown  # statuspage is open to everyone, in #incidents only
    actions = {e["action_id"]: e for _, e in buttons(view)}
    assert actions[RECONNECT_ACTION_ID]["url"].startswith(s.web.url + "/oauth/start/")
    assert HOME_DISCONNECT_ACTION_ID in actions


def test_approvals_waiting_on_a_person_show_the_cards_buttons_but_not_to_the_requester(
    scenario: Scenario,
) -> None:
    s = scenario
    s.link("alice")
    s.link("bob")
    _, approval = ask(s, "kill the runaway backfill")

    bob = open_home(s, "U0BOB")
    assert "Waiting on your approval (1)" in text(bob)
    assert "runaway backfill" in text(bob)  # the arguments, so the approver sees what runs
    decided = [(block, e["action_id"], e["value"]) for block, e in buttons(bob) if "value" in e]
    block = HOME_APPROVAL_BLOCK_PREFIX + approval.id
    assert decided == [(block, APPROVE_ACTION_ID, approval.id), (block, REJECT_ACTION_ID, approval.id)]

    alice = open_home(s, "U0ALICE")  # alice is in presto-oncall too, but it is her own request
    assert "Waiting on your approval (0)" in text(alice)
    assert approval.id not in text(alice)
    recent = next(b["text"]["text"] for b in alice["blocks"] if "kill the runaway backfill" in json.dumps(b))
    assert "waiting for approval" in recent
    assert "<https://" in recent  # a link to the thread


def test_approving_on_home_counts_like_the_card_and_the_action_runs_once(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob", "carol"):
        s.link(person)
    _, approval = ask(s, "kill the runaway backfill")
    open_home(s, "U0BOB")
    after = click_home(s, "U0BOB", APPROVE_ACTION_ID, approval.id)
    assert [v.user for v in s.approval(approval.id).approvals] == ["U0BOB"]
    assert "You have approved this" in text(after)
    assert APPROVE_ACTION_ID not in text(after)  # no second vote offered

    open_home(s, "U0CAROL")
    after = click_home(s, "U0CAROL", APPROVE_ACTION_ID, approval.id)
    assert s.approval(approval.id).status == Status.APPROVED
    assert "Your approval of `kill_query` on presto is recorded" in text(after)
    s.work()
    assert s.approval(approval.id).status == Status.SUCCEEDED
    assert kills(s) == 1


def test_a_click_for_an_approval_the_home_did_not_show_changes_nothing(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob"):
        s.link(person)
    _, approval = ask(s, "kill the runaway backfill")
    s.link("dave")
    open_home(s, "U0DAVE")  # dave's Home lists no approvals: he is not an approver
    after = click_home(s, "U0DAVE", APPROVE_ACTION_ID, approval.id)
    assert "not one I showed you" in text(after)
    assert s.approval(approval.id).approvals == ()


def test_rejecting_on_home_asks_for_a_reason_like_the_card(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob"):
        s.link(person)
    _, approval = ask(s, "kill the runaway backfill")
    home = open_home(s, "U0BOB")
    click = s.ingress.block_actions("U0BOB", REJECT_ACTION_ID, view_id=home["id"], value=approval.id)
    assert s.ingress.post(click).status == 200
    modal = wait_until(
        "the reason modal", lambda: next((v for v in s.world.slack.views() if v["type"] == "modal"), None)
    )
    assert modal["callback_id"] == REJECT_CALLBACK_ID
    submit = s.ingress.view_submission(
        "U0BOB",
        view_id=modal["id"],
        callback_id=REJECT_CALLBACK_ID,
        private_metadata=approval.id,
        values={"reason": {"reason_input": "wait for the backfill"}},
    )
    assert s.ingress.post(submit).status == 200
    wait_until("the rejection", lambda: s.approval(approval.id).status == Status.REJECTED or None)
    s.work()
    assert kills(s) == 0


def test_disconnect_forgets_the_link_and_offers_connect_again(scenario: Scenario) -> None:
    s = scenario
    s.link("bob")
    open_home(s, "U0BOB")
    after = click_home(s, "U0BOB", HOME_DISCONNECT_ACTION_ID)
    assert not s.redis.exists(f"chatops:link:{TEAM_ID}:U0BOB")
    assert "Disconnected" in text(after)
    assert CONNECT_ACTION_ID in {e["action_id"] for _, e in buttons(after)}
    entries: Any = s.redis.xrange("chatops:audit")  # redis-py types stream replies loosely
    records = [json.loads(fields[b"record"]) for _, fields in entries]
    assert [(r["kind"], r["user"], r["sub"]) for r in records if r["kind"] == "account_unlink"] == [
        ("account_unlink", "U0BOB", "u-bob")
    ]


def test_disconnect_revokes_the_sign_in_at_the_provider_and_says_so(scenario: Scenario) -> None:
    s = scenario
    s.link("bob")
    open_home(s, "U0BOB")
    after = click_home(s, "U0BOB", HOME_DISCONNECT_ACTION_ID)
    assert "revoked at your identity provider" in text(after)
    assert [f.revoked_reason for f in s.world.idp.families("bob")] == ["revoked by the client"]
    entries: Any = s.redis.xrange("chatops:audit")
    records = [json.loads(fields[b"record"]) for _, fields in entries]
    unlink = [r for r in records if r["kind"] == "account_unlink"]
    assert [r["detail"] for r in unlink] == [
        "disconnected from App Home; refresh token revoked at the provider"
    ]


def test_remembered_requests_are_listed_once_newest_first_with_links(scenario: Scenario) -> None:
    s = scenario
    asked = {
        "t1": "<@U0CHATOPS> is presto slow?",
        "t2": "<@U0CHATOPS> and spark?",
        "t3": "<@U0CHATOPS> my token is xoxb-123456789012-abcdef",
    }
    ts = {turn: s.world.slack.post_user_message(CHANNEL, "U0DAVE", said) for turn, said in asked.items()}

    async def remember() -> None:
        client = aioredis.Redis.from_url(s.redis_url)
        for turn in ("t1", "t2", "t1", "t3"):  # t1 twice: a retried or resumed turn is one request
            await remember_request(client, TEAM_ID, "U0DAVE", turn, CHANNEL, ts[turn], asked[turn])
        await client.aclose()

    asyncio.run(remember())
    s.redis.hset("chatops:turn-status:t2", "status", "answered")
    view = open_home(s, "U0DAVE")
    lines = next(b["text"]["text"] for b in view["blocks"] if "is presto slow?" in json.dumps(b)).split("\n")
    assert len(lines) == 3
    assert "my token is [redacted]" in lines[0]
    assert "xoxb" not in text(view)
    assert lines[1].endswith("|and spark?> · _answered_")
    assert lines[2].endswith("|is presto slow?> · _in progress_")
    assert lines[2].startswith(
        f"• <https://example.slack.com/archives/{CHANNEL}/p{ts['t1'].replace('.', '')}|"
    )


def test_time_saved_counts_this_weeks_and_months_successes_of_this_person_only(scenario: Scenario) -> None:
    s = scenario
    s.link("bob")
    now = time.time()
    earlier = min(period_starts(now)) - 3600  # before this week and this month began

    async def seed() -> None:
        client = aioredis.Redis.from_url(s.redis_url)
        audit = Audit(client)
        for record in (
            AuditRecord(kind="tool_call", outcome="succeeded", user="U0BOB", minutes_saved=15, time=now),
            AuditRecord(kind="workflow_run", outcome="succeeded", user="U0BOB", minutes_saved=50, time=now),
            AuditRecord(kind="tool_call", outcome="failed", user="U0BOB", minutes_saved=30, time=now),
            AuditRecord(kind="tool_call", outcome="succeeded", user="U0CAROL", minutes_saved=99, time=now),
            AuditRecord(kind="tool_call", outcome="succeeded", user="U0BOB", minutes_saved=40, time=earlier),
        ):
            await audit.record(record)
        await client.aclose()

    asyncio.run(seed())
    saved = next(b for b in open_home(s, "U0BOB")["blocks"] if b.get("fields"))
    both = "1 h 5 min by the owners' estimate\n1 h 5 min counting only answers and runs not marked unhelpful"
    assert [f["text"] for f in saved["fields"]] == [f"*This week*\n{both}", f"*This month*\n{both}"]


def test_a_thumbs_down_on_a_run_lowers_its_starters_calibrated_time_saved_and_shows_no_ones_reason(
    scenario: Scenario,
) -> None:
    s = scenario
    run = snapshot(s)  # alice's run: the workflow's 15 minutes and its steps' 15
    s.link("bob")
    before = saved_fields(open_home(s, "U0ALICE"))
    assert before["This month"] == [
        "30 min by the owners' estimate",
        "30 min counting only answers and runs not marked unhelpful",
    ]

    reason = "It listed the wrong DAG, Alice should have checked"
    thumbs_down(s, "U0BOB", run, reason)  # anyone in the channel may rate a result, as on an answer
    after = open_home(s, "U0ALICE")
    fields = saved_fields(after)
    assert fields["This month"] == [
        "30 min by the owners' estimate",
        "0 min counting only answers and runs not marked unhelpful",
    ]
    assert fields["This week"] == fields["This month"]
    assert "wrong DAG" not in text(after)  # another person's reason never reaches someone's Home
    assert "wrong DAG" not in text(open_home(s, "U0BOB"))  # nor their own: reasons are for the owners


def saved_fields(view: JSON) -> dict[str, list[str]]:
    """The time-saved figures of a Home: period -> its lines."""
    fields = next(b for b in view["blocks"] if b.get("fields"))["fields"]
    return {f["text"].split("\n")[0].strip("*"): f["text"].split("\n")[1:] for f in fields}


def test_weeks_start_on_monday_and_months_on_the_first_in_utc() -> None:
    wednesday = datetime(2026, 12, 2, 15, 30, tzinfo=UTC).timestamp()
    week, month = period_starts(wednesday)
    assert datetime.fromtimestamp(week, tz=UTC) == datetime(2026, 11, 30, tzinfo=UTC)  # the week spans months
    assert datetime.fromtimestamp(month, tz=UTC) == datetime(2026, 12, 1, tzinfo=UTC)


def test_a_crowded_home_stays_within_slacks_limits_and_says_what_is_left_out() -> None:
    governance = Governance.model_validate(
        {"status": "active", "owner_team": "t" * 300, "allowed_groups": ["*"]}
    )
    servers = [(_server(i, governance), "x" * 1500) for i in range(45)]
    approvals = [_approval(i) for i in range(30)]
    recent = [("<@U0CHATOPS> why? |" * 50, "https://example.slack.com/archives/C1/p1", "answered")] * 20
    facts: dict[str, Any] = {"servers": servers, "approvals": approvals, "recent": recent}

    unlinked = home_view(identity=None, saved=TimeSaved(), connect_url=None, **facts)
    assert "Servers you can use" not in json.dumps(unlinked)  # nothing about access before we know who

    identity = Identity(TEAM_ID, "U0BOB", "u-bob", "bob@example.com", frozenset({"data-eng"}), 0.0, ())
    url = "https://chatops.example.com/oauth/start/x"
    saved = TimeSaved(week=1.2e6, month=61, week_calibrated=1.2e6, month_calibrated=30)
    view = home_view(identity=identity, saved=saved, connect_url=url, **facts)
    assert len(view["blocks"]) <= 100
    View(**view).validate_json()
    shown = json.dumps(view, ensure_ascii=False)
    assert "…and 20 more." in shown  # servers
    assert "…and 15 more." in shown  # approvals
    assert "<!channel>" not in shown  # a reason cannot ping anyone
    assert "20000 h" in shown


def _server(i: int, governance: Governance) -> ServerEntry:
    return ServerEntry(f"io.example/s{i}", f"s{i}", "T" * 200, "", "1", "https://x", "active", governance, {})


def _approval(i: int) -> Approval:
    now = time.time()
    return Approval(
        id=f"a{i:023x}",
        turn_id="t",
        team=TEAM_ID,
        channel="C0INCIDENT",
        thread_ts="1.0",
        requester="U0ALICE",
        requester_sub="u-alice",
        requester_email="alice@example.com",
        server="io.example/s1",
        short_name="s1",
        owner_team="t",
        tool="drop" * 50,
        arguments={"sql": "<&>" * 3000},
        args_sha256="0" * 64,
        fingerprint="f",
        reason="`<!channel>`" * 500,
        approver_groups=("g",) * 20,
        created_at=now,
        expires_at=now + 60,
        seal="s",
    )
