"""Files attached to a question (issue 19 item 5): a log's text reaches the model as untrusted data, a
screenshot as an image block, anything else is refused politely while the question is still answered; files
are downloaded with the bot token only, from Slack's file host only, and cut at the cap (said so)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from fixtures import server
from fixtures.anthropic_fake import text
from fixtures.world import BOT_TOKEN
from tests.scenarios.conftest import Scenario

CHANNEL = "C0DATAENG"
ANSWER = "The job died on an OOM in stage 3."
LOG = b"2026-12-07 21:00:01 ERROR stage 3 failed: java.lang.OutOfMemoryError\npassword=hunter2hunter2\n"
# The smallest valid PNG (1x1, transparent).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def ask_with(s: Scenario, files: list[dict[str, Any]], question: str = "why did the backfill fail?") -> str:
    s.link("alice")
    s.world.anthropic.set_default(text(ANSWER))
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, question, files=files)
    assert s.ingress.post(mention).status == 200
    s.work()
    return str(mention.event["ts"])


def question_blocks(s: Scenario) -> list[dict[str, Any]]:
    """The content of the person's message in the first request the model got."""
    (first, *_) = s.world.anthropic.requests()
    content = [m for m in first.body["messages"] if m["role"] == "user"][-1]["content"]
    return list(content) if isinstance(content, list) else [{"type": "text", "text": content}]


def said_in_thread(s: Scenario, ts: str) -> str:
    return "\n".join(
        m.text + str(m.blocks) + "".join(str(c.get("text", "")) for c in m.chunks)
        for m in s.bot_messages(CHANNEL, ts)
    )


def test_a_log_file_reaches_the_model_inside_the_untrusted_delimiters_with_secrets_redacted(
    scenario: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    s = scenario
    caplog.set_level(logging.DEBUG)
    log_file = s.world.slack.add_user_file("U0ALICE", "backfill.log", LOG)
    ts = ask_with(s, [log_file])

    texts = [b["text"] for b in question_blocks(s) if b["type"] == "text"]
    assert "why did the backfill fail?" in texts[0]
    (wrapped,) = [t for t in texts if "OutOfMemoryError" in t]
    region = wrapped[wrapped.index("<tool_output") :]
    assert region.startswith('<tool_output server="" tool="file:backfill.log" trust="untrusted-data">')
    assert region.rstrip().endswith("</tool_output>")
    assert "OutOfMemoryError" in region
    assert "hunter2" not in wrapped  # secrets in a pasted log are redacted before the model sees them
    assert ANSWER in said_in_thread(s, ts)
    assert s.turn_status(CHANNEL, ts) == "answered"
    # Downloaded once, with the bot token; no person's token; the token never logged.
    assert s.world.slack.downloads() == [(log_file["id"], "xoxb-")]
    assert BOT_TOKEN not in caplog.text
    assert all(
        not str(c.headers.get("authorization", "")).startswith("Bearer xoxp") for c in s.world.slack.calls()
    )


def test_a_screenshot_reaches_the_model_as_an_image_block(scenario: Scenario) -> None:
    s = scenario
    shot = s.world.slack.add_user_file("U0ALICE", "grafana.png", PNG)
    ask_with(s, [shot], "what does this dashboard say?")

    images = [b for b in question_blocks(s) if b["type"] == "image"]
    assert images == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
        }
    ]


def test_a_file_named_as_an_image_that_is_none_is_refused_and_the_question_answered(
    scenario: Scenario,
) -> None:
    s = scenario
    fake = s.world.slack.add_user_file("U0ALICE", "shot.png", b"<html>not a picture</html>")
    ts = ask_with(s, [fake])

    said = said_in_thread(s, ts)
    assert "shot.png" in said
    assert "not a PNG, JPEG, GIF or WebP image" in said
    assert ANSWER in said
    assert not [b for b in question_blocks(s) if b.get("type") == "image"]


def test_a_zip_is_refused_politely_and_the_question_is_still_answered(scenario: Scenario) -> None:
    s = scenario
    archive = s.world.slack.add_user_file("U0ALICE", "logs.zip", b"PK\x03\x04 not really a zip")
    ts = ask_with(s, [archive])

    said = said_in_thread(s, ts)
    assert "logs.zip" in said
    assert "text files and images" in said
    assert ANSWER in said
    assert s.turn_status(CHANNEL, ts) == "answered"
    assert s.world.slack.downloads() == []  # a refused type is not even downloaded
    (first,) = s.world.anthropic.requests()
    assert "PK" not in str(first.body["messages"])


def test_a_text_file_over_the_cap_is_cut_and_the_model_is_told(scenario: Scenario) -> None:
    s = scenario
    cap = s.settings.file_text_max_bytes
    big = b"".join(b"line %06d: GC overhead limit exceeded\n" % n for n in range(cap // 30))
    assert len(big) > cap
    ts = ask_with(s, [s.world.slack.add_user_file("U0ALICE", "huge.log", big)])

    (wrapped,) = [b["text"] for b in question_blocks(s) if b["type"] == "text" and "huge.log" in b["text"]]
    assert f"[file cut: only its first {cap} bytes of {len(big)} were read]" in wrapped
    assert "line 000000" in wrapped
    assert big[-40:].decode().strip() not in wrapped
    assert len(wrapped) < cap + 1000
    assert s.turn_status(CHANNEL, ts) == "answered"


def test_a_file_url_on_another_host_is_refused_without_any_request_to_it(scenario: Scenario) -> None:
    s = scenario
    real = s.world.slack.add_user_file("U0ALICE", "backfill.log", LOG)
    # A hostile event names an internal URL: here another server on this machine, which records every request.
    hits: list[str] = []

    async def record(request: Request) -> Response:
        hits.append(request.url.path)
        return PlainTextResponse("OutOfMemoryError from inside")

    internal = server.start(Starlette(routes=[Route("/{path:path}", record)]))
    try:
        url = f"{internal.url}/internal/secrets.log"
        hostile = {**real, "url_private_download": url, "url_private": url, "name": "secrets.log"}
        ts = ask_with(s, [hostile])
    finally:
        internal.stop()

    assert hits == []
    assert s.world.slack.downloads() == []
    said = said_in_thread(s, ts)
    assert "secrets.log" in said
    assert "Slack's file host" in said
    assert ANSWER in said
    (first,) = s.world.anthropic.requests()
    assert "OutOfMemoryError" not in str(first.body["messages"])
