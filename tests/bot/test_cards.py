"""Approval cards: every fact and every argument shown, valid for Slack, buttons carrying ids only."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from approvals.store import Approval, ApprovalStatus, Vote, args_sha256
from bot.blocks import Message
from bot.cards import (
    APPROVE_ACTION_ID,
    REJECT_ACTION_ID,
    REJECT_MODAL_CALLBACK_ID,
    CardLayout,
    approval_card,
    decided_card,
    reject_modal,
)
from fixtures.slack import BLOCKS_TEXT_LIMIT, check_message

T0 = 1_764_079_320.0
ID = "a" + "0123456789abcdef0123456"[:23]
FINAL = [
    ApprovalStatus.APPROVED,
    ApprovalStatus.RUNNING,
    ApprovalStatus.SUCCEEDED,
    ApprovalStatus.FAILED,
    ApprovalStatus.OUTCOME_UNKNOWN,
    ApprovalStatus.REJECTED,
    ApprovalStatus.EXPIRED,
]


def approval(arguments: dict[str, Any] | None = None, **changes: Any) -> Approval:
    args = {"query_id": "20231125_0001", "force": True} if arguments is None else arguments
    base = Approval(
        id=ID,
        turn_id="t1",
        team="T0CHATOPS",
        channel="C0INCIDENT",
        thread_ts="1764040000.000100",
        requester="U0ALICE",
        requester_sub="sub-alice",
        requester_email="alice@example.com",
        server="io.example/presto",
        short_name="presto",
        owner_team="data-platform",
        tool="kill_query",
        arguments=args,
        args_sha256=args_sha256(args),
        fingerprint="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        reason="Query 20231125_0001 has run for **3 hours** and blocks the cluster.",
        approver_groups=("presto-oncall",),
        created_at=T0,
        expires_at=T0 + 3600,
        seal="0" * 64,
        quorum=2,
        model_name="claude-test",
    )
    return dataclasses.replace(base, **changes)


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
    for text in texts(message):
        assert text.count("```") % 2 == 0, text  # a fence left open would swallow the rest of the card
    for value in values(message.blocks):
        assert value == ID


def values(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["value"]] if isinstance(node.get("value"), str) else []
        return own + [v for child in node.values() for v in values(child)]
    if isinstance(node, list):
        return [v for child in node for v in values(child)]
    return []


def texts(message: Message) -> list[str]:
    found: list[str] = []
    for block in message.blocks:
        if isinstance(block.get("text"), dict):
            found.append(block["text"]["text"])
        found += [f["text"] for f in block.get("fields", [])]
        found += [e["text"] for e in block.get("elements", []) if isinstance(e.get("text"), str)]
    return found


def shown(message: Message) -> str:
    return "\n".join(texts(message))


def actions(message: Message) -> list[dict[str, Any]]:
    return [b for b in message.blocks if b["type"] == "actions"]


def card(a: Approval, now: float = T0 + 60) -> CardLayout:
    layout = approval_card(a, now=now)
    assert_valid(layout.message)
    return layout


# ----- the live card ----------------------------------------------------------------------------------------


def test_the_card_shows_who_what_where_why_who_may_approve_and_until_when() -> None:
    layout = card(approval())
    text = shown(layout.message)
    for fact in (
        "<@U0ALICE>",
        "alice@example.com",
        "`io.example/presto`",
        "owner: data-platform",
        "`kill_query`",
        "presto-oncall · 2 needed",
        f"<!date^{int(T0 + 3600)}^{{date_short_pretty}} {{time}}|2025-11-25 15:02 UTC>",
        "Query 20231125_0001 has run for *3 hours* and blocks the cluster.",
        "the assistant (claude-test)",
        'query_id: "20231125_0001"',
        "force: true",
        "Waiting for 2 approvals from presto-oncall.",
        "sha256 `" + args_sha256(approval().arguments)[:12] + "`",
        "fingerprint `9f86d081884c`",
    ):
        assert fact in text, fact
    assert layout.arguments_file is None
    assert layout.message.text == "Approval needed: kill_query on presto, requested by alice@example.com"


def test_approve_and_reject_buttons_carry_only_the_approval_id() -> None:
    [block] = actions(card(approval()).message)
    approve, reject = block["elements"]
    assert (approve["action_id"], approve["style"], approve["value"]) == (APPROVE_ACTION_ID, "primary", ID)
    assert (reject["action_id"], reject["style"], reject["value"]) == (REJECT_ACTION_ID, "danger", ID)


def test_a_malformed_id_never_reaches_a_button() -> None:
    with pytest.raises(ValueError, match="ids only"):
        approval_card(approval(id="a1|rm -rf"), now=T0)


def test_the_progress_line_counts_approvals_so_far() -> None:
    one = approval(approvals=(Vote("U0BOB", "sub-bob", "bob@example.com", T0),))
    assert "1 of 2 approvals so far (<@U0BOB>)" in shown(card(one).message)


def test_a_workflow_step_is_labelled_as_such() -> None:
    text = shown(card(approval(source="workflow", workflow_run_id="w123", step_id="clear")).message)
    assert "workflow run `w123`, step `clear`" in text
    assert "Reason given by the assistant" not in text


def test_model_text_cannot_ping_or_disguise_links() -> None:
    hostile = approval(
        reason="<!channel> approve fast: <https://evil.example|https://good.example> @here",
        arguments={"note": "<!here> <@U0BOB>", "<!everyone>": 1},
        requester_email="<!channel>@example.com",
        owner_team="<!subteam^S123>",
    )
    text = shown(card(hostile).message)
    assert "<!channel>" not in text
    assert "<!here>" not in text
    assert "<!everyone>" not in text
    assert "<!subteam" not in text
    assert "<@U0BOB>" not in text
    assert "<https://evil.example|" not in text


def test_invisible_characters_and_backticks_in_arguments_are_spelled_out() -> None:
    sneaky = {"cmd": "rm\u202e-rf`` `\u200b/\U000e0041", "line": "a\nb\u2028c\x7f"}
    text = shown(card(approval(sneaky)).message)
    assert 'cmd: "rm\\u202e-rf\\u0060\\u0060 \\u0060\\u200b/\\udb40\\udc41"' in text
    assert 'line: "a\\nb\\u2028c\\u007f"' in text


# ----- arguments that do not fit ----------------------------------------------------------------------------


def test_forty_arguments_with_a_10_kb_value_list_every_key_and_attach_the_full_value() -> None:
    arguments: dict[str, Any] = {f"param_{i:02d}": f"value {i}" for i in range(39)}
    arguments["payload"] = "".join(random.Random(1).choice("abcdef0123") for _ in range(10_000))
    layout = card(approval(arguments))
    text = shown(layout.message)
    for key in arguments:
        assert f"{key}: " in text, key
    assert 'param_17: "value 17"' in text
    assert f'payload: "{arguments["payload"][:199]}' in text
    assert "(10,000 chars; full value in the attached file)" in text
    assert arguments["payload"] not in text
    assert layout.arguments_file is not None
    assert json.loads(layout.arguments_file) == arguments


def test_many_mid_sized_values_are_shortened_longest_first_until_the_card_fits() -> None:
    arguments = {f"k{i:02d}": "y" * (400 + i) for i in range(30)}
    layout = card(approval(arguments))
    text = shown(layout.message)
    assert all(f"{key}: " in text for key in arguments)
    assert 'k00: "' + "y" * 400 + '"' in text  # the shortest ones stay whole
    assert "(429 chars; full value in the attached file)" in text  # the longest one does not
    assert layout.arguments_file is not None
    assert json.loads(layout.arguments_file) == arguments


def test_more_keys_than_a_card_can_hold_are_counted_not_dropped() -> None:
    arguments = {f"column_name_{i:04d}": i for i in range(2000)}
    layout = card(approval(arguments))
    text = shown(layout.message)
    listed = re.findall(r"column_name_\d{4}: ", text)
    match = re.search(r"…and (\d+) more arguments: all of them are in the attached file", text)
    assert match is not None
    assert len(listed) + int(match.group(1)) == 2000
    assert layout.arguments_file is not None
    assert json.loads(layout.arguments_file) == arguments


def test_a_huge_key_is_shortened_and_sent_in_full_in_the_file() -> None:
    arguments = {"k" * 5000: 1, "small": 2}
    layout = card(approval(arguments))
    assert "(5,000-character key)" in shown(layout.message)
    assert layout.arguments_file is not None


@pytest.mark.parametrize("seed", range(20))
def test_any_mix_of_arguments_makes_a_valid_card_that_accounts_for_every_key(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "ab<>&`*_~\n \u200b\u202eé😀{}[]\"'"
    arguments: dict[str, Any] = {}
    for i in range(rng.randint(0, 120)):
        value_size = rng.choice([0, 5, 80, 600, 2600, 9000])
        value: Any = "".join(rng.choice(alphabet) for _ in range(value_size))
        if rng.random() < 0.2:
            value = {"nested": [value, i, None]}
        arguments[f"key{i}" + rng.choice(["", "<&>", "`x`", " spaced"])] = value
    reason = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 50, 4000])))
    layout = card(approval(arguments, reason=reason))
    decided = decided_card(approval(arguments, reason=reason, status=ApprovalStatus.REJECTED), now=T0)
    assert_valid(decided)
    for message in (layout.message, decided):
        text = shown(message)
        # Each value is one line of JSON, so each listed argument is one line that starts with its key.
        listed = {int(m.group(1)) for m in re.finditer(r'^"?key(\d+)', text, re.M)}
        more = re.search(r"…and (\d+) more arguments: all of them are in the attached file", text)
        left_out = int(more.group(1)) if more else 0
        in_order = [int(re.findall(r"\d+", key)[0]) for key in sorted(arguments)]  # cards list keys sorted
        assert listed == set(in_order[: len(arguments) - left_out])
    if left_out or any(len(json.dumps(v)) > 2500 for v in arguments.values()):
        assert layout.arguments_file is not None
    if layout.arguments_file is not None:
        assert json.loads(layout.arguments_file) == arguments


# ----- after the decision -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", FINAL)
def test_a_decided_card_has_no_buttons_and_keeps_the_facts(status: ApprovalStatus) -> None:
    decided = approval(status=status, decided_by=("U0BOB", "U0CAROL"), decided_at=T0 + 120)
    message = decided_card(decided, now=T0 + 200)
    assert_valid(message)
    assert actions(message) == []
    text = shown(message)
    assert "`kill_query`" in text
    assert 'query_id: "20231125_0001"' in text


def test_a_decided_card_says_who_approved_when_and_the_outcome() -> None:
    done = approval(
        status=ApprovalStatus.SUCCEEDED,
        decided_by=("U0BOB", "U0CAROL"),
        decided_at=T0 + 120,
        started_at=T0 + 121,
        finished_at=T0 + 125,
        outcome_detail="Killed query 20231125_0001.",
    )
    message = decided_card(done, now=T0 + 200)
    text = shown(message)
    assert f"Approved by <@U0BOB> and <@U0CAROL> at <!date^{int(T0 + 120)}^{{time}}" in text
    assert f"succeeded at <!date^{int(T0 + 125)}^" in text
    assert "*Details:* Killed query 20231125_0001." in text
    assert message.text.startswith("Approved, succeeded: kill_query on presto")


def test_a_rejected_card_shows_the_reason_escaped() -> None:
    rejected = approval(
        status=ApprovalStatus.REJECTED,
        decided_by=("U0CAROL",),
        decided_at=T0 + 60,
        reject_reason="Not <!here>",
    )
    text = shown(decided_card(rejected, now=T0 + 70))
    assert f"Rejected by <@U0CAROL> at <!date^{int(T0 + 60)}^" in text
    assert "*Reason for rejecting:* Not &lt;!here&gt;" in text


def test_an_unknown_outcome_tells_people_it_was_not_re_run() -> None:
    lost = approval(
        status=ApprovalStatus.OUTCOME_UNKNOWN, decided_by=("U0BOB",), decided_at=T0, finished_at=T0 + 90
    )
    text = shown(decided_card(lost, now=T0 + 100))
    assert "outcome is unknown" in text
    assert "will not be re-run on its own" in text


def test_a_pending_card_past_its_expiry_shows_expired_without_buttons() -> None:
    layout = card(approval(), now=T0 + 3600)
    assert actions(layout.message) == []
    assert "Expired at" in shown(layout.message)
    assert layout.message.text.startswith("Expired:")


def test_the_decided_card_shortens_exactly_the_values_the_posted_card_did() -> None:
    arguments = {f"k{i:02d}": "z" * (300 + 7 * i) for i in range(30)}
    posted = card(approval(arguments))
    decided = decided_card(
        approval(
            arguments,
            status=ApprovalStatus.REJECTED,
            decided_by=("U0CAROL",),
            decided_at=T0,
            reject_reason="r" * 1000,
        ),
        now=T0,
    )
    assert_valid(decided)

    def argument_lines(message: Message) -> list[str]:
        return [line for line in shown(message).splitlines() if re.match(r"k\d\d: ", line)]

    assert argument_lines(decided) == argument_lines(posted.message)


def test_decided_card_refuses_a_request_that_is_still_open() -> None:
    with pytest.raises(ValueError, match="approval_card"):
        decided_card(approval(), now=T0)


# ----- the reject modal -------------------------------------------------------------------------------------


def test_the_reject_modal_asks_for_a_required_reason_and_carries_only_the_id() -> None:
    modal = reject_modal(ID)
    View(**modal).validate_json()
    assert modal["type"] == "modal"
    assert (modal["callback_id"], modal["private_metadata"]) == (REJECT_MODAL_CALLBACK_ID, ID)
    [block] = modal["blocks"]
    assert (block["type"], block["block_id"], block["optional"]) == ("input", "reason", False)
    element = block["element"]
    assert (element["type"], element["action_id"]) == ("plain_text_input", "reason_input")
    assert (element["multiline"], element["max_length"]) == (True, 1000)


def test_the_reject_modal_refuses_anything_but_an_approval_id() -> None:
    with pytest.raises(ValueError, match="ids only"):
        reject_modal("a1; drop table")


def test_the_card_names_the_tool_output_the_proposal_followed() -> None:
    text = json.dumps(card(approval(read_before="presto.query_history, spark.failed_stages")).message.blocks)
    assert "Proposed after reading tool output (untrusted data)" in text
    assert "`presto.query_history`" in text
    assert "`spark.failed_stages`" in text
    assert "Proposed after reading" not in json.dumps(card(approval()).message.blocks)


@pytest.mark.parametrize(
    "status", [ApprovalStatus.SUCCEEDED, ApprovalStatus.FAILED, ApprovalStatus.OUTCOME_UNKNOWN]
)
def test_a_private_servers_outcome_is_never_drawn_on_a_card(status: ApprovalStatus) -> None:
    done = approval(
        status=status, decided_by=("U0BOB",), decided_at=T0, finished_at=T0, outcome_detail="rows-7f3a"
    )
    shown = json.dumps(decided_card(done, now=T0, private=True).blocks)
    assert "rows-7f3a" not in shown
    assert "sent privately to <@U0ALICE>" in shown
    assert "rows-7f3a" in json.dumps(decided_card(done, now=T0).blocks)  # a public server's is shown


def test_text_from_the_model_an_approver_or_a_server_is_made_safe_on_the_card() -> None:
    hostile = "<!channel> <@U0MALLORY> <https://evil.example|https://good.example> AKIAIOSFODNN7EXAMPLE"
    for done in (
        approval(reason=hostile),
        approval(status=ApprovalStatus.REJECTED, decided_by=("U0BOB",), decided_at=T0, reject_reason=hostile),
        approval(status=ApprovalStatus.FAILED, decided_by=("U0BOB",), decided_at=T0, outcome_detail=hostile),
    ):
        card = (
            decided_card(done, now=T0)
            if done.status != ApprovalStatus.PENDING
            else approval_card(done, now=T0).message
        )
        shown = json.dumps(card.blocks)
        for sequence in ("<!channel>", "<@U0MALLORY>", "<https://evil.example|", "AKIAIOSFODNN7EXAMPLE"):
            assert sequence not in shown
        assert "evil.example" in shown  # shown as what it is
