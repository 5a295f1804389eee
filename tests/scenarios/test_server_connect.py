"""Servers with their own authorization server (`auth: oauth`, SPEC §5, issue 17's must-show): a person
connects one from Slack and from App Home, the waiting question is answered once they have, and that
server's token goes to that server alone.

The third-party server (`fixtures.own_as_mcp`) runs its own authorization server and records the
Authorization header of every request that reaches it; the company's fixture servers record theirs. The
bot registers itself there dynamically (PUBLIC_URL is plain http here, so no Client ID Metadata Document).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from bot.blocks import CONNECT_SERVER_ACTION_ID
from bot.home import HOME_DISCONNECT_ACTION_ID
from bot.home_servers import HOME_SERVER_CONNECT_PREFIX, HOME_SERVER_DISCONNECT_PREFIX
from bot.wiring import open_wiring
from fixtures.anthropic_fake import Body, Reply, text, tool_names, tool_results, tool_use
from fixtures.own_as_mcp import ThirdPartyServer
from fixtures.slack import TEAM_ID
from tests.faults.conftest import audit_records, secret_leaks
from tests.mcp_clients.oauth_world import raw_entry
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_home import click_home, open_home

CHANNEL = "C0INCIDENT"
NAME = "io.example/tickets"
JSON = dict[str, Any]


@pytest.fixture(scope="module")
def tickets_server() -> Iterator[ThirdPartyServer]:
    with ThirdPartyServer("tickets") as server:
        yield server


@pytest.fixture
def tickets(scenario: Scenario, tickets_server: ThirdPartyServer) -> ThirdPartyServer:
    """The tickets server in the scenario's registry (reset before every test), open to everyone."""
    tickets_server.seen.clear()
    tickets_server.auth.reset()
    tickets_server.auth.forget_grants()
    scenario.world.registry.add(raw_entry(tickets_server, NAME))
    return tickets_server


def needs_tickets(body: Body) -> Reply:
    """The model: asks who the person is at tickets, asking them to connect it first when it must."""
    results = tool_results(body)
    if results:
        said = json.dumps(results)
        if "has not connected tickets" in said:
            return text("I need tickets for that: please connect it with the button.")
        who = "alice" if "alice" in said else "nobody"  # whoami's answer: whose token reached tickets
        return text(f"tickets knows you as {who}.")
    names = tool_names(body)
    if "tickets__whoami" in names:
        return tool_use("tickets__whoami", {})
    if "connect__tickets" in names:
        return tool_use("connect__tickets", {})
    return text("I have no tickets tool.")


def connect_button(s: Scenario, user: str) -> str:
    (prompt,) = [
        e
        for m in s.world.slack.ephemerals(CHANNEL, user=user)
        for b in m.blocks
        if b.get("type") == "actions"
        for e in b["elements"]
        if e.get("action_id") == CONNECT_SERVER_ACTION_ID
    ]
    assert prompt["text"]["text"] == "Connect tickets"
    return str(prompt["url"])


def answers(s: Scenario, ts: str) -> str:
    return " ".join(m.text for m in s.bot_messages(CHANNEL, ts))


def bearer_tokens(server: ThirdPartyServer) -> set[str]:
    return {h[7:] for h in server.authorizations() if h}


def test_a_person_connects_a_server_from_the_thread_and_the_waiting_question_is_answered(
    scenario: Scenario, tickets: ThirdPartyServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for noisy in ("httpx2", "httpcore2", "httpx", "httpcore"):  # the test's own browser logs its URLs
        caplog.set_level(logging.WARNING, logger=noisy)
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(needs_tickets)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which tickets are mine?")
    s.ingress.post(mention)
    s.work()
    ts = mention.event["ts"]
    assert "please connect it" in answers(s, ts)
    assert tickets.authorizations() == []  # nothing was sent to a server the person has not connected
    url = connect_button(s, "U0ALICE")
    assert url.startswith(s.web.url + "/oauth/server-start/")

    with s.browser() as browser:  # the person's browser: the bot, then the server's own sign-in, and back
        page = browser.get(url)
    assert page.status_code == 200, page.text
    assert "connected to tickets" in page.text
    (authorize,) = tickets.auth.requests("authorize")
    assert authorize.params["code_challenge_method"] == "S256"
    assert authorize.params["resource"] == tickets.url
    s.work()  # the waiting question runs again, now with tickets' tools
    assert "tickets knows you as alice" in answers(s, ts)
    assert s.turn_status(CHANNEL, ts) == "answered"

    # tickets received only its own token, issued by its own authorization server for its resource ...
    tokens = bearer_tokens(tickets)
    assert tokens
    assert all(tickets.auth.tokens[t].resource == tickets.url for t in tokens)
    # ... and that token went nowhere else: not to the company's servers, nor its identity provider,
    # nor Slack, the model, Redis or the audit in the clear.
    for server in s.world.servers.values():
        assert not tokens & {r.authorization[7:] for r in server.record.all() if r.authorization}
    company = {v for r in s.world.idp.requests() for _, v in r.params}
    assert not tokens & company
    refresh = {r.params.get("refresh_token") for r in tickets.auth.requests("token")}
    issued = tokens | set(tickets.auth.tokens) | {t for t in refresh if t}
    assert secret_leaks(s, issued) == []
    assert not [t for t in issued if t in caplog.text]  # the web's and the worker's logs alike
    (connected,) = [r for r in audit_records(s.redis) if r["kind"] == "server_connect"]
    assert (connected["outcome"], connected["server"], connected["user"]) == ("succeeded", NAME, "U0ALICE")


def test_app_home_shows_connect_then_connected_and_disconnect_revokes(
    scenario: Scenario, tickets: ThirdPartyServer
) -> None:
    s = scenario
    s.link("alice")
    view = open_home(s, "U0ALICE")
    section = tickets_section(view)
    assert "Not connected" in section["text"]["text"]
    connect = section["accessory"]
    assert connect["action_id"].startswith(HOME_SERVER_CONNECT_PREFIX)
    with s.browser() as browser:
        assert browser.get(connect["url"]).status_code == 200

    view = open_home(s, "U0ALICE")
    section = tickets_section(view)
    assert "Connected" in section["text"]["text"]
    disconnect = section["accessory"]
    assert disconnect["action_id"].startswith(HOME_SERVER_DISCONNECT_PREFIX)
    (issued,) = tickets.auth.tokens.values()
    view = click_home(s, "U0ALICE", disconnect["action_id"], disconnect["value"])
    assert "revoked" in json.dumps(view["blocks"])
    assert "Not connected" in tickets_section(view)["text"]["text"]
    (revoke,) = tickets.auth.requests("revoke")
    assert revoke.params["token_type_hint"] == "refresh_token"
    assert tickets.auth.revoked
    assert not tickets.auth.tokens
    assert issued.sub == "alice"
    kinds = [(r["kind"], r["server"]) for r in audit_records(s.redis) if r["kind"].startswith("server_")]
    assert kinds == [("server_connect", NAME), ("server_disconnect", NAME)]


def test_the_company_groups_still_decide_who_may_connect_and_use_it(
    scenario: Scenario, tickets: ThirdPartyServer
) -> None:
    """tickets opened to finance only: alice (data-eng) is never offered it, in a turn or on her Home, and a
    connect link minted for her anyway cannot start; dave (finance) is offered it."""
    s = scenario
    s.world.registry.patch_governance(NAME, {"allowed_groups": ["finance"]})
    s.link("alice")
    s.world.anthropic.set_default(needs_tickets)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which tickets are mine?")
    s.ingress.post(mention)
    s.work()
    assert "I have no tickets tool" in answers(s, mention.event["ts"])
    assert "connect__tickets" not in tool_names(s.world.anthropic.last_request().body)
    assert "`tickets`" not in json.dumps(open_home(s, "U0ALICE")["blocks"])
    with s.browser() as browser:
        page = browser.get(offer_url(s, "U0ALICE"))
    assert page.status_code == 400
    assert tickets.auth.requests("authorize") == []
    s.link("dave")
    assert "Not connected" in tickets_section(open_home(s, "U0DAVE"))["text"]["text"]


def offer_url(s: Scenario, user: str) -> str:
    """A Connect link minted for `user` directly (as if the bot had offered it)."""

    async def offer() -> str:
        async with open_wiring(s.settings, s.bot) as svc:
            return await svc.server_linking.offer(TEAM_ID, user, NAME)

    return asyncio.run(offer())


def test_a_callback_in_another_browser_connects_nobody(scenario: Scenario, tickets: ThirdPartyServer) -> None:
    """Login CSRF: the start link opened in one browser, the authorization server's answer delivered to
    another (the attacker's code landing in the victim's browser, or the reverse) is refused."""
    s = scenario
    s.link("alice")
    view = open_home(s, "U0ALICE")
    url = tickets_section(view)["accessory"]["url"]
    with s.browser() as started:
        at_server = started.get(url, follow_redirects=False)
        assert at_server.status_code == 302
        back = started.get(at_server.headers["location"], follow_redirects=False)
    assert back.status_code == 302  # the authorization server's redirect to the bot's callback
    with s.browser() as other:
        page = other.get(back.headers["location"])
    assert page.status_code == 400
    assert "not started in this browser" in page.text
    assert "Not connected" in tickets_section(open_home(s, "U0ALICE"))["text"]["text"]
    assert tickets.auth.requests("token") == []  # the code was never redeemed
    (denied,) = [r for r in audit_records(s.redis) if r["kind"] == "server_connect"]
    assert (denied["outcome"], denied["detail"], denied["user"]) == ("denied", "browser_mismatch", "U0ALICE")


def test_a_refused_sign_in_at_the_server_stores_nothing_and_says_so(
    scenario: Scenario, tickets: ThirdPartyServer
) -> None:
    s = scenario
    s.link("alice")
    url = tickets_section(open_home(s, "U0ALICE"))["accessory"]["url"]
    with s.browser() as browser:
        at_server = browser.get(url, follow_redirects=False)
        state = dict(query_params(at_server.headers["location"]))["state"]
        page = browser.get(f"{s.web.url}/oauth/server-callback?error=access_denied&state={state}")
        again = browser.get(f"{s.web.url}/oauth/server-callback?code=x&state={state}")  # state single-use
    assert page.status_code == 400
    assert "access_denied" in page.text
    assert again.status_code == 400
    assert "already used" in again.text
    assert "Not connected" in tickets_section(open_home(s, "U0ALICE"))["text"]["text"]
    reasons = [r["detail"] for r in audit_records(s.redis) if r["kind"] == "server_connect"]
    assert reasons == ["denied", "state_unknown"]


def test_the_client_metadata_document_is_served_at_public_url(scenario: Scenario) -> None:
    with scenario.browser() as browser:
        doc = browser.get(f"{scenario.web.url}/oauth/client-metadata.json").json()
    assert doc["redirect_uris"] == [f"{scenario.web.url}/oauth/server-callback"]
    assert doc["token_endpoint_auth_method"] == "none"


def tickets_section(view: JSON) -> JSON:
    (section,) = [b for b in view["blocks"] if "accessory" in b and "`tickets`" in b["text"]["text"]]
    return dict(section)


def query_params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


def test_disconnecting_the_account_ends_the_server_connections_too(
    scenario: Scenario, tickets: ThirdPartyServer
) -> None:
    s = scenario
    s.link("alice")
    with s.browser() as browser:
        assert browser.get(tickets_section(open_home(s, "U0ALICE"))["accessory"]["url"]).status_code == 200
    assert "Connected" in tickets_section(open_home(s, "U0ALICE"))["text"]["text"]
    click_home(s, "U0ALICE", HOME_DISCONNECT_ACTION_ID)
    assert tickets.auth.revoked
    assert not tickets.auth.tokens
    assert not list(s.redis.scan_iter(match="chatops:srvtok:*"))


def files_a_ticket(body: Body) -> Reply:
    results = tool_results(body)
    if results:
        return text("Filed it." if "filed" in json.dumps(results) else "I need more access to tickets.")
    if "tickets__write_ticket" in tool_names(body):
        return tool_use("tickets__write_ticket", {"title": "disk full"})
    return tool_use("connect__tickets", {})


def test_a_server_asking_for_more_scope_brings_the_button_back_and_the_request_is_answered_after(
    scenario: Scenario, tickets: ThirdPartyServer
) -> None:
    """Step-up from Slack: tickets answers 403 insufficient_scope to write_ticket; the person is asked to
    grant more, the sign-in asks for the scope the server named, and the waiting request then files it."""
    s = scenario
    s.world.registry.patch_governance(NAME, {"tools": {"write_ticket": {"approval": "never"}}})
    s.link("alice")
    with s.browser() as browser:  # connected once, with no scope in particular
        assert browser.get(tickets_section(open_home(s, "U0ALICE"))["accessory"]["url"]).status_code == 200
    s.world.anthropic.set_default(files_a_ticket)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "file a ticket: disk full")
    s.ingress.post(mention)
    s.work()
    ts = mention.event["ts"]
    assert "I need more access to tickets" in answers(s, ts)
    prompt = " ".join(m.text for m in s.world.slack.ephemerals(CHANNEL, user="U0ALICE"))
    assert "more access" in prompt
    with s.browser() as browser:
        assert browser.get(connect_button(s, "U0ALICE")).status_code == 200
    assert "tickets:write" in tickets.auth.requests("authorize")[-1].params["scope"].split()
    s.work()
    assert "Filed it." in answers(s, ts)
