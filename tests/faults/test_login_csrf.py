"""Login CSRF on account linking (issue 14 item 1, SPEC §5 "Account linking"): a Connect link made for one
Slack user links only that person's own sign-in, in the browser that opened it.

Through the real web app, the fixture identity provider and the fake Slack; each browser is one httpx2
client with its own cookie jar.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from typing import Any

import pytest

from bot.settings import Role, load_settings
from bot.web import build_web
from fixtures.anthropic_fake import text
from fixtures.idp import IssSent
from fixtures.server import bind_loopback, start
from fixtures.slack import TEAM_ID
from fixtures.slack_ingress import SlackIngress
from fixtures.world import SIGNING_SECRET
from tests.faults.conftest import Scenario, audit_records, redis_dump, secret_leaks

CHANNEL = "C0DATAENG"
HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


@contextmanager
def web_with(s: Scenario, public_url: str | None = None, **env: str) -> Iterator[Scenario]:
    """Another web process on the scenario's Redis and world, with settings of its own."""
    sock = bind_loopback()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    full = {**s.world.env(public_url=public_url or url, redis_url=s.redis_url), **env}
    settings = load_settings(Role.WEB_HTTP, env=full)
    web = start(build_web(settings, s.bot), sock=sock)
    s.world.allow_redirect(web.url)
    ingress = SlackIngress(web.url, SIGNING_SECRET, slack=s.world.slack)
    try:
        yield Scenario(s.world, settings, full, s.bot, web, ingress, s.redis_url)
    finally:
        ingress.close()
        web.stop()


def linked_sub(s: Scenario, user: str) -> str | None:
    sub = s.redis.hget(f"chatops:link:{TEAM_ID}:{user}", "sub")
    return sub.decode() if sub is not None else None


def link_audit(s: Scenario) -> list[dict[str, Any]]:
    return [r for r in audit_records(s.redis) if r["kind"] == "account_link"]


def refused(s: Scenario, user: str, detail: str, sub: str = "") -> bool:
    return any(
        (r["outcome"], r["user"], r["detail"], r["sub"]) == ("denied", user, detail, sub)
        for r in link_audit(s)
    )


@pytest.mark.parametrize("second_browser_cookie", [False, True], ids=["no-cookie", "another-browsers-cookie"])
def test_a_connect_link_finished_in_another_browser_links_nobody(
    scenario: Scenario, second_browser_cookie: bool
) -> None:
    s = scenario
    with s.browser("dave") as first, s.browser("dave") as second:
        started = first.get(s.offer_url("dave"), follow_redirects=False)
        assert started.status_code == 302
        if second_browser_cookie:  # the other browser has started a sign-in of its own
            assert second.get(s.offer_url("erin"), follow_redirects=False).status_code == 302
        page = second.get(started.headers["location"])  # the provider's page, then back to the callback
    assert page.status_code == 400
    assert "not started in this browser" in page.text
    assert linked_sub(s, "U0DAVE") is None
    assert refused(s, "U0DAVE", "browser_mismatch")
    assert not [r for r in s.world.idp.requests("/token") if r.grant_type == "authorization_code"]


def test_someone_else_signing_in_on_a_connect_link_is_refused_with_the_mismatch_page(
    scenario: Scenario,
) -> None:
    s = scenario
    page = s.browse_link("erin", s.offer_url("dave"))
    assert page.status_code == 400
    text_shown = html.unescape(page.text)
    assert "You signed in as erin@example.com" in text_shown
    assert "another email address" in text_shown
    assert "dave@example.com" not in text_shown  # the page does not tell a stranger the Slack user's email
    assert linked_sub(s, "U0DAVE") is None
    assert linked_sub(s, "U0ERIN") is None
    assert refused(s, "U0DAVE", "email_mismatch", sub="u-erin")


def test_the_persons_own_email_in_another_case_links(scenario: Scenario) -> None:
    s = scenario
    s.world.idp.set_email("dave", "Dave@EXAMPLE.com")
    page = s.browse_link("dave", s.offer_url("dave"))
    assert page.status_code == 200, page.text
    assert "connected" in page.text
    assert linked_sub(s, "U0DAVE") == "u-dave"
    assert [(r["outcome"], r["user"], r["sub"]) for r in link_audit(s)] == [("succeeded", "U0DAVE", "u-dave")]


def test_a_slack_profile_without_an_email_cannot_be_linked(scenario: Scenario) -> None:
    s = scenario
    s.world.slack.set_profile_email("U0DAVE", None)
    page = s.browse_link("dave", s.offer_url("dave"))
    assert page.status_code == 400
    assert "Slack profile shows no email address" in page.text
    assert linked_sub(s, "U0DAVE") is None
    assert refused(s, "U0DAVE", "slack_email_missing", sub="u-dave")


@pytest.mark.parametrize(
    ("sent", "says", "detail"),
    [
        ("omit", "did not say which identity provider", "iss_missing"),
        ("trailing-slash", "unexpected identity provider", "iss_mismatch"),
    ],
)
def test_an_answer_without_the_exact_issuer_is_refused_before_the_code_is_used(
    scenario: Scenario, sent: IssSent, says: str, detail: str
) -> None:
    s = scenario
    s.world.idp.set_iss_parameter(advertised=True, sent=sent)
    page = s.browse_link("dave", s.offer_url("dave"))
    assert page.status_code == 400
    assert says in page.text
    assert linked_sub(s, "U0DAVE") is None
    assert refused(s, "U0DAVE", detail)
    assert not [r for r in s.world.idp.requests("/token") if r.grant_type == "authorization_code"]


def test_a_provider_that_does_not_advertise_iss_may_leave_it_out(scenario: Scenario) -> None:
    s = scenario
    s.world.idp.set_iss_parameter(advertised=False, sent="omit")
    with web_with(s) as fresh:  # a process that reads the provider's metadata afresh
        page = fresh.browse_link("dave", fresh.offer_url("dave"))
    assert page.status_code == 200, page.text
    assert linked_sub(s, "U0DAVE") == "u-dave"


def test_the_start_cookie_is_httponly_lax_scoped_short_lived_and_secure_behind_https(
    scenario: Scenario,
) -> None:
    s = scenario
    with web_with(s, public_url="https://chatops.example.com/team-a") as behind_https:
        for web, secure, path in ((s, False, "/oauth"), (behind_https, True, "/team-a/oauth")):
            offer = web.offer_url("dave").rsplit("/", 1)[1]
            with web.browser() as browser:
                started = browser.get(f"{web.web.url}/oauth/start/{offer}", follow_redirects=False)
            assert started.status_code == 302
            morsel = SimpleCookie(started.headers["set-cookie"])["chatops_link"]
            assert morsel["httponly"] is True
            assert morsel["samesite"].lower() == "lax"
            assert morsel["path"] == path
            assert 0 < int(morsel["max-age"]) <= 900
            assert bool(morsel["secure"]) is secure
            assert len(morsel.value) >= 32
            assert morsel.value not in redis_dump(s.redis)  # the server keeps only its fingerprint


def test_without_email_matching_the_person_confirms_on_a_page_with_its_own_csrf_token(
    scenario: Scenario,
) -> None:
    s = scenario
    s.world.idp.set_email("carol", "c.chen@corp.example")  # the company spells it unlike Slack does
    s.world.anthropic.set_default(text("Nothing is running on Presto."))
    with web_with(s, OAUTH_MATCH_EMAIL="false") as own:
        mention = own.ingress.app_mention("U0CAROL", CHANNEL, "anything running on presto?")
        assert own.ingress.post(mention).status == 200
        own.work()
        ts = mention.event["ts"]
        prompt = own.world.slack.ephemerals(CHANNEL, user="U0CAROL")[0]
        url = next(e["url"] for b in prompt.blocks or [] if b["type"] == "actions" for e in b["elements"])
        confirm = f"{own.web.url}/oauth/confirm"
        with own.browser("carol") as browser:
            page = browser.get(url)
            assert page.status_code == 200, page.text
            assert "Link Slack user Carol Chen to c.chen@corp.example?" in html.unescape(page.text)
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
            assert linked_sub(own, "U0CAROL") is None  # the callback alone links nobody
            assert secret_leaks(own) == []  # the held tokens are sealed
            form = dict(HIDDEN.findall(page.text))
            assert set(form) == {"pending", "csrf"}
            assert browser.post(confirm, data={"pending": form["pending"]}).status_code == 400
            assert browser.post(confirm, data={**form, "csrf": form["csrf"][::-1]}).status_code == 400
            with own.browser("carol") as another:
                assert another.post(confirm, data=form).status_code == 400
            assert linked_sub(own, "U0CAROL") is None
            done = browser.post(confirm, data=form)
            assert done.status_code == 200, done.text
            assert "connected" in done.text
            assert browser.post(confirm, data=form).status_code == 400  # once
        assert linked_sub(own, "U0CAROL") == "u-carol"
        own.work()
        assert any(
            "Nothing is running on Presto." in f"{m.text} {m.blocks}" for m in own.bot_messages(CHANNEL, ts)
        )
    assert refused(s, "U0CAROL", "confirm_csrf")
    assert refused(s, "U0CAROL", "confirm_browser")
    assert [r["outcome"] for r in link_audit(s)].count("succeeded") == 1
