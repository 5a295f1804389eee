"""What approvers are told: one plain sentence per refusal, and where a request stands."""

from __future__ import annotations

import pytest

from approvals.policy import REFUSALS, is_refusal
from approvals.store import ApprovalStatus, VoteKind
from bot.approval_text import RefusalText, mention, progress_text, refusal_text, slack_time
from tests.approvals.test_policy import AT_1402, T0, approval, result, votes


def test_the_requester_is_told_someone_else_must_approve() -> None:
    assert refusal_text(result("own_request")) == "You asked for this, so someone else has to approve it."


def test_a_non_member_is_told_which_groups_may_approve_and_how_many_are_needed() -> None:
    assert (
        refusal_text(result("not_eligible")) == "Only members of presto-oncall can approve this (2 needed)."
    )
    several = result("not_eligible", approver_groups=("presto-oncall", "sre", "dba"), quorum=1)
    assert refusal_text(several) == "Only members of presto-oncall, sre or dba can approve this (1 needed)."


def test_a_late_click_is_told_who_approved_and_when() -> None:
    decided = result("already_decided", status=ApprovalStatus.APPROVED, decided_by=("U0BOB",), decided_at=T0)
    assert refusal_text(decided) == f"Already approved by <@U0BOB> at {AT_1402}."
    running = result(
        "already_decided", status=ApprovalStatus.RUNNING, decided_by=("U0BOB", "U0CAROL"), decided_at=T0
    )
    assert refusal_text(running) == f"Already approved by <@U0BOB> and <@U0CAROL> at {AT_1402}."


def test_a_click_on_a_rejected_request_is_told_who_rejected_it() -> None:
    rejected = result(
        "already_decided", status=ApprovalStatus.REJECTED, decided_by=("U0CAROL",), decided_at=T0
    )
    assert refusal_text(rejected) == f"Already rejected by <@U0CAROL> at {AT_1402}."


@pytest.mark.parametrize("kind", ["expired", "already_decided"])
def test_a_click_after_expiry_is_told_when_it_expired_and_to_ask_again(kind: VoteKind) -> None:
    expired = result(kind, status=ApprovalStatus.EXPIRED, decided_at=T0 + 5)
    assert refusal_text(expired) == f"This request expired at {AT_1402}; ask again if it is still needed."


def test_a_second_click_by_the_same_approver_is_told_the_count_so_far() -> None:
    text = refusal_text(result("duplicate", 1, approvals=votes("U0BOB")))
    assert text == "You've already approved this; 1 of 2 approvals so far."


def test_an_unlinked_clicker_is_asked_to_connect_first() -> None:
    expected = "Connect your account first so I can check your groups."
    assert refusal_text(None, not_linked=True) == expected
    assert refusal_text(result("not_eligible"), not_linked=True) == expected
    assert RefusalText.NOT_LINKED.value == expected
    with pytest.raises(ValueError, match="result"):
        refusal_text(None)


@pytest.mark.parametrize("kind", ["counted", "approved", "rejected"])
def test_decisions_that_took_effect_are_not_refusals(kind: VoteKind) -> None:
    assert not is_refusal(kind)
    with pytest.raises(ValueError, match="not a refusal"):
        refusal_text(result(kind))


def test_every_refusal_kind_has_a_sentence() -> None:
    for kind in REFUSALS:
        assert is_refusal(kind)
        assert refusal_text(result(kind, status=ApprovalStatus.APPROVED, decided_by=("U0BOB",))).endswith(".")


def test_progress_reads_as_a_count_while_pending() -> None:
    assert progress_text(approval()) == "Waiting for 2 approvals from presto-oncall."
    assert progress_text(approval(quorum=1)) == "Waiting for 1 approval from presto-oncall."
    one = approval(approvals=votes("U0BOB"))
    assert progress_text(one) == "1 of 2 approvals so far (<@U0BOB>); waiting for 1 more from presto-oncall."


@pytest.mark.parametrize(
    ("status", "ending"),
    [
        (ApprovalStatus.APPROVED, "; about to run."),
        (ApprovalStatus.RUNNING, f"; running since {AT_1402}."),
        (ApprovalStatus.SUCCEEDED, f"; succeeded at {AT_1402}."),
        (ApprovalStatus.FAILED, f"; failed at {AT_1402}."),
    ],
)
def test_progress_after_approval_says_who_approved_and_how_the_run_went(
    status: ApprovalStatus, ending: str
) -> None:
    a = approval(status=status, decided_by=("U0BOB", "U0CAROL"), decided_at=T0, started_at=T0, finished_at=T0)
    assert progress_text(a) == f"Approved by <@U0BOB> and <@U0CAROL> at {AT_1402}{ending}"


def test_an_unknown_outcome_says_it_will_not_be_re_run() -> None:
    a = approval(status=ApprovalStatus.OUTCOME_UNKNOWN, decided_by=("U0BOB",), decided_at=T0, finished_at=T0)
    text = progress_text(a)
    assert "outcome is unknown" in text
    assert "will not be re-run" in text


def test_progress_of_closed_requests_without_a_run() -> None:
    rejected = approval(status=ApprovalStatus.REJECTED, decided_by=("U0CAROL",), decided_at=T0)
    assert progress_text(rejected) == f"Rejected by <@U0CAROL> at {AT_1402}."
    expired = approval(status=ApprovalStatus.EXPIRED, approvals=votes("U0BOB"))
    assert progress_text(expired) == f"Expired at {AT_1402} with 1 of 2 approvals; nothing ran."


def test_group_names_and_odd_user_ids_cannot_become_control_sequences() -> None:
    hostile = result("not_eligible", approver_groups=("<!channel>", "a&b"))
    assert refusal_text(hostile) == "Only members of &lt;!channel&gt; or a&amp;b can approve this (2 needed)."
    assert mention("U0BOB") == "<@U0BOB>"
    assert mention("<!here>") == "&lt;!here&gt;"
    assert mention("u0bob") == "u0bob"


def test_slack_time_carries_a_utc_fallback() -> None:
    assert slack_time(T0) == AT_1402
    assert slack_time(T0, "{date_short_pretty} {time}") == (
        f"<!date^{int(T0)}^{{date_short_pretty}} {{time}}|2025-11-25 14:02 UTC>"
    )
