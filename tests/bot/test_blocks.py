"""Block Kit builders: every payload is valid for slack_sdk and for Slack's limits, and nothing is dropped."""

import random
import re
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from approvals.workflow_runs import WorkflowRun
from bot.blocks import (
    CONNECT_ACTION_ID,
    CONNECT_SERVER_ACTION_ID,
    FEEDBACK_ACTION_ID,
    RECONNECT_ACTION_ID,
    AnswerLayout,
    Message,
    ProgressLine,
    answer_messages,
    connect_prompt,
    error_message,
    parse_feedback_value,
    progress_message,
    reconnect_prompt,
    server_connect_prompt,
    working_message,
)
from bot.mrkdwn import safe_mrkdwn
from bot.slack_text import ours
from bot.workflow_output import result_blocks
from fixtures.slack import BLOCKS_TEXT_LIMIT, check_message

FOOTER = "Used presto · query_history · 4.2 s"
ID = re.compile(r"[A-Za-z0-9._:-]+")


def assert_valid(message: Message) -> None:
    """slack_sdk's own validation, then the limits the fake Slack enforces like the real one."""
    for block in message.blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()
        assert parsed.to_dict() == block
    check_message(message.text, message.blocks, None, BLOCKS_TEXT_LIMIT)
    assert message.text.strip()
    assert "<!" not in message.text
    assert "<@" not in message.text
    for value in _values(message.blocks):
        assert ID.fullmatch(value), value


def _values(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["value"]] if isinstance(node.get("value"), str) else []
        return own + [v for child in node.values() for v in _values(child)]
    if isinstance(node, list):
        return [v for child in node for v in _values(child)]
    return []


def sections(message: Message) -> list[str]:
    return [b["text"]["text"] for b in message.blocks if b["type"] == "section"]


def shown(layout: AnswerLayout) -> str:
    return "".join(text for m in layout.messages for text in sections(m))


def plain(text: str) -> str:
    """Content without formatting: whitespace and fence markers may move at chunk boundaries."""
    return re.sub(r"\s|`", "", text)


def types(message: Message) -> list[str]:
    return [b["type"] for b in message.blocks]


def prose(rng: random.Random, size: int, *, fences: bool = True) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < size:
        if fences and rng.random() < 0.1:
            parts.append(
                "```\n"
                + "\n".join("SELECT * FROM t WHERE x < 3;" for _ in range(rng.randint(3, 60)))
                + "\n```"
            )
        else:
            parts.append(
                " ".join(rng.choice(["alpha", "beta", "**gamma**", "δelta", "@here"]) for _ in range(90))
            )
        parts.append(rng.choice(["\n\n", "\n"]))
    return "".join(parts)[:size]


# ----- answers ---------------------------------------------------------------------------------------------


def test_a_short_answer_is_one_message_with_footer_and_feedback() -> None:
    layout = answer_messages("All **green**.", footer=FOOTER, feedback_id="t123")
    assert not layout.upload_full_text
    [message] = layout.messages
    assert_valid(message)
    assert types(message) == ["section", "context", "context_actions"]
    assert sections(message) == ["All *green*."]
    assert message.text == "All green."
    assert message.blocks[1]["elements"][0]["text"] == FOOTER


def test_a_60k_answer_becomes_several_valid_messages_with_every_character() -> None:
    answer = prose(random.Random(60), 60_000)
    layout = answer_messages(answer, footer=FOOTER, feedback_id="t60")
    assert not layout.upload_full_text
    assert 5 <= len(layout.messages) <= 10
    for message in layout.messages:
        assert_valid(message)
        assert len(message.blocks) <= 50
        assert all(len(text) <= 3000 for text in sections(message))
    assert plain(shown(layout)) == plain(safe_mrkdwn(answer))


def test_content_needing_80_blocks_is_spread_over_messages_of_at_most_50() -> None:
    answer = "\n\n".join(f"paragraph {i} " + "x" * 380 for i in range(80))
    layout = answer_messages(
        answer, footer=FOOTER, feedback_id="t80", section_limit=400, blocks_text_limit=40_000
    )
    assert sum(len(sections(m)) for m in layout.messages) == 80
    assert [len(m.blocks) for m in layout.messages] == [50, 32]
    assert plain(shown(layout)) == plain(answer)


def test_80_sections_worth_fits_within_default_limits() -> None:
    answer = "\n\n".join(f"paragraph {i} " + "y" * 1580 for i in range(40))
    layout = answer_messages(answer, footer=FOOTER, feedback_id="t80")
    for message in layout.messages:
        assert_valid(message)
    assert plain(shown(layout)) == plain(answer)


def test_footer_and_feedback_appear_only_on_the_last_message() -> None:
    layout = answer_messages(prose(random.Random(3), 30_000), footer=FOOTER, feedback_id="t3")
    *earlier, last = layout.messages
    assert earlier
    for message in earlier:
        assert set(types(message)) == {"section"}
    assert types(last)[-2:] == ["context", "context_actions"]


def test_continuation_messages_say_which_part_they_are() -> None:
    layout = answer_messages(prose(random.Random(4), 30_000), footer=FOOTER, feedback_id=None)
    total = len(layout.messages)
    assert [m.text.split(" ", 1)[0] for m in layout.messages] == [
        f"({i}/{total})" for i in range(1, total + 1)
    ]


@pytest.mark.parametrize("seed", range(25))
def test_any_answer_size_packs_into_valid_messages_without_loss(seed: int) -> None:
    rng = random.Random(seed)
    answer = prose(rng, rng.randint(1, 45_000), fences=rng.random() < 0.5)
    footer = "f" * rng.choice([0, 10, 2999])
    layout = answer_messages(answer, footer=footer, feedback_id=rng.choice([None, "tX"]))
    for message in layout.messages:
        assert_valid(message)
    assert plain(shown(layout)) == plain(safe_mrkdwn(answer))


def test_a_full_last_message_hands_the_footer_to_a_new_message() -> None:
    # Four full sections reach the 12,000 character budget, so the trailer cannot join them.
    answer = "\n\n".join("w" * 2998 for _ in range(4))
    layout = answer_messages(answer, footer=FOOTER, feedback_id="t4")
    assert [types(m) for m in layout.messages] == [
        ["section"] * 3,
        ["section", "context", "context_actions"],
    ]
    for message in layout.messages:
        assert_valid(message)


def test_an_answer_over_ten_messages_is_one_head_plus_a_file() -> None:
    answer = prose(random.Random(9), 200_000)
    layout = answer_messages(answer, footer=FOOTER, feedback_id="t9")
    assert layout.upload_full_text
    [message] = layout.messages
    assert_valid(message)
    assert types(message) == ["section", "context", "context", "context_actions"]
    assert "attached as a file" in message.blocks[1]["elements"][0]["text"]
    assert plain(safe_mrkdwn(answer)).startswith(plain(sections(message)[0]))


def test_overflow_threshold_is_adjustable() -> None:
    answer = prose(random.Random(10), 30_000)
    assert answer_messages(answer, footer=FOOTER, feedback_id=None, overflow_threshold=1).upload_full_text
    assert not answer_messages(answer, footer=FOOTER, feedback_id=None).upload_full_text


def test_answers_are_made_safe_unless_the_caller_already_did() -> None:
    hostile = "hey <!channel> see <https://evil|https://good> @here"
    text = sections(answer_messages(hostile, footer="<!here>", feedback_id=None).messages[0])[0]
    assert "<!channel>" not in text
    assert "<https://evil|" not in text
    layout = answer_messages(hostile, footer="<!here>", feedback_id=None)
    assert "<!here>" not in str(layout.messages[0].blocks)
    trusted = answer_messages("*already* mrkdwn", footer="", feedback_id=None, already_safe=True)
    assert sections(trusted.messages[0]) == ["*already* mrkdwn"]


def test_sections_are_verbatim_and_expanded() -> None:
    block = answer_messages("hi", footer="", feedback_id=None).messages[0].blocks[0]
    assert block["text"]["verbatim"] is True
    assert block["expand"] is True


def test_an_empty_answer_still_posts_a_valid_message() -> None:
    [message] = answer_messages("  \n", footer="", feedback_id=None).messages
    assert_valid(message)
    assert types(message) == ["section"]


def test_feedback_buttons_carry_only_the_id_and_read_back() -> None:
    block = answer_messages("ok", footer=FOOTER, feedback_id="t0a1b2").messages[0].blocks[-1]
    [element] = block["elements"]
    assert element["type"] == "feedback_buttons"
    assert element["action_id"] == FEEDBACK_ACTION_ID
    assert parse_feedback_value(element["positive_button"]["value"]) == ("up", "t0a1b2")
    assert parse_feedback_value(element["negative_button"]["value"]) == ("down", "t0a1b2")


@pytest.mark.parametrize("bad", ["", "has space", "<!channel>", "x" * 201, "a|b"])
def test_a_feedback_id_that_is_not_an_id_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="ids only"):
        answer_messages("ok", footer="", feedback_id=bad)


@pytest.mark.parametrize("value", ["", "up", "up:", "sideways:t1", "down:has space", "t1"])
def test_unexpected_feedback_values_are_not_understood(value: str) -> None:
    assert parse_feedback_value(value) is None


# ----- status, prompts, errors -----------------------------------------------------------------------------


def test_working_message_is_a_single_valid_status_line() -> None:
    message = working_message()
    assert_valid(message)
    assert message.text == "On it…"
    assert sections(message) == [":hourglass_flowing_sand: On it…"]
    assert "<!here>" not in str(working_message("wait <!here>").blocks)


def test_progress_lines_are_compact_and_show_latency_when_done() -> None:
    message = progress_message(
        [
            ProgressLine("presto", "query_history", "ok", 120.4),
            ProgressLine("spark", "job_status", "failed", 12_345.0),
            ProgressLine("airflow", "list_dags", "running", None),
        ]
    )
    assert_valid(message)
    assert sections(message) == [
        ":white_check_mark: presto · `query_history` (120 ms)\n"
        ":x: spark · `job_status` (12.3 s)\n"
        ":hourglass_flowing_sand: airflow · `list_dags`"
    ]
    assert message.text == "Working: 2 of 3 tool calls finished"


def test_progress_is_capped_at_40_lines() -> None:
    lines = [ProgressLine("presto", f"tool_{i}", "ok", 1.0) for i in range(55)]
    message = progress_message(lines)
    assert_valid(message)
    text = "\n".join(sections(message))
    assert len(text.splitlines()) == 41
    assert text.endswith("…and 15 more")


def test_progress_escapes_names_that_come_from_servers() -> None:
    message = progress_message([ProgressLine("<!channel>", "x`<@U1>`" + "y" * 500, "running", None)])
    assert_valid(message)
    text = sections(message)[0]
    assert "<" not in text
    assert len(text) < 200


def test_connect_prompt_explains_identity_and_offers_a_url_button() -> None:
    message = connect_prompt("https://bot.example/oauth/start?s=abc", reason="Presto needs your account.")
    assert_valid(message)
    assert types(message) == ["section", "actions"]
    text = sections(message)[0]
    assert "your own company identity" in text
    assert "waiting request" in text
    assert "Presto needs your account." in text
    [button] = message.blocks[1]["elements"]
    assert button["url"] == "https://bot.example/oauth/start?s=abc"
    assert button["action_id"] == CONNECT_ACTION_ID
    assert button["style"] == "primary"
    assert button["text"]["text"] == "Connect your account"
    assert "value" not in button


def test_reconnect_prompt_says_why_with_its_own_action() -> None:
    message = reconnect_prompt("http://127.0.0.1:8000/oauth/start?s=1", why="Your <!here> token expired.")
    assert_valid(message)
    assert "token expired" in sections(message)[0]
    assert "<!here>" not in sections(message)[0]
    assert message.blocks[1]["elements"][0]["action_id"] == RECONNECT_ACTION_ID


def test_server_connect_prompt_names_the_server_safely_with_its_own_action() -> None:
    url = "https://bot.example/oauth/server-start/abc"
    message = server_connect_prompt(url, short_name="tick<!channel>ets", step_up=False)
    assert_valid(message)
    text = sections(message)[0]
    assert "<!channel>" not in text  # a registry name is never a broadcast
    assert "waiting request" in text
    [button] = message.blocks[1]["elements"]
    assert (button["url"], button["action_id"]) == (url, CONNECT_SERVER_ACTION_ID)
    assert button["text"]["text"] == "Connect tick<!channel>ets"  # plain text: shown, never parsed
    more = server_connect_prompt(url, short_name="tickets", step_up=True)
    assert "Grant tickets more access" in sections(more)[0]


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://x", "https://x y", ""])
def test_prompts_refuse_links_that_are_not_http(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        connect_prompt(url, reason="r")


def test_error_message_is_escaped_and_valid() -> None:
    message = error_message("Tool failed: <!channel> **boom**")
    assert_valid(message)
    assert sections(message) == [":warning: Tool failed: &lt;!channel&gt; *boom*"]


def test_a_huge_error_says_how_much_is_not_shown() -> None:
    message = error_message("e " * 20_000)
    assert_valid(message)
    assert types(message)[-1] == "context"
    assert "more characters of this error are not shown" in message.blocks[-1]["elements"][0]["text"]


@pytest.mark.parametrize(
    "limits",
    [{"max_blocks": 2}, {"section_limit": 3001}, {"blocks_text_limit": 3000}],
)
def test_limits_that_cannot_hold_a_section_and_the_trailer_are_refused(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="room"):
        answer_messages("ok", footer=FOOTER, feedback_id="t1", **limits)


def test_a_message_unpacks_into_post_arguments() -> None:
    message = error_message("x")
    assert message.as_kwargs() == {"text": message.text, "blocks": message.blocks}


def test_a_workflow_result_told_to_its_starter_carries_feedback_for_the_run() -> None:
    run = WorkflowRun("w0123456789", "incident-snapshot", {}, "T1", "C1", "U1", 0.0)
    text = ours(":x: {name}: {message}", name="incident-snapshot", message="Not run: <!channel> ask first.")
    message = Message(text, result_blocks(run, text))
    assert_valid(message)
    assert types(message) == ["section", "context_actions"]
    [buttons] = message.blocks[1]["elements"]
    values = [buttons[side]["value"] for side in ("positive_button", "negative_button")]
    assert [parse_feedback_value(v) for v in values] == [("up", run.id), ("down", run.id)]
    assert buttons["negative_button"]["accessibility_label"] == "This result was not helpful"
