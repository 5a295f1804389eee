"""A paused turn's approvals, as its resumed run takes them (issue 14 items 6 and 9, issue 15): each
decided call's outcome; a private server's outcome marked for the requester alone; a rejected call
remembered so it is not proposed again unasked."""

from __future__ import annotations

import pytest

from agent.deferred import Decided
from agent.transcript import call_digest
from approvals.store import ApprovalStatus
from flows.decisions import decisions
from registry_cache.model import parse_entries
from registry_cache.view import RegistryView
from tests.bot.test_cards import approval
from tests.registry_cache.test_view import entry

RAN = [ApprovalStatus.SUCCEEDED, ApprovalStatus.FAILED, ApprovalStatus.OUTCOME_UNKNOWN]


def registry(private: bool = False) -> RegistryView:
    entries, skipped = parse_entries([entry("io.example/presto", private_data=private)])
    return RegistryView(entries, skipped)


@pytest.mark.parametrize("status", RAN)
def test_a_call_that_ran_is_decided_with_what_its_server_reported(status: ApprovalStatus) -> None:
    done = approval(
        status=status, decided_by=("U0BOB", "U0CAROL"), outcome_detail="KILLED", tool_use_id="toolu_1"
    )
    taken = decisions([done], registry())
    assert taken.outcomes == (
        Decided(
            "toolu_1",
            "io.example/presto",
            "kill_query",
            status.value.lower(),
            "KILLED",
            ("<@U0BOB>", "<@U0CAROL>"),
        ),  # type: ignore[arg-type]
    )
    assert taken.private == frozenset()
    assert taken.rejected == ()


@pytest.mark.parametrize("status", RAN)
def test_a_private_servers_outcome_is_for_the_requester_alone(status: ApprovalStatus) -> None:
    done = approval(status=status, decided_by=("U0BOB",), outcome_detail="rows", tool_use_id="toolu_1")
    assert decisions([done], registry(private=True)).private == {"toolu_1"}


def test_unknown_privacy_counts_as_private_and_decisions_without_a_run_are_never_private() -> None:
    ran = approval(
        status=ApprovalStatus.SUCCEEDED, decided_by=("U0BOB",), outcome_detail="x", tool_use_id="t1"
    )
    assert decisions([ran], None).private == {"t1"}  # no registry copy: cannot be shown to be public
    assert decisions([ran], RegistryView([], [])).private == {"t1"}  # the entry is gone
    rejected = approval(
        status=ApprovalStatus.REJECTED, decided_by=("U0BOB",), reject_reason="not now", tool_use_id="t2"
    )
    expired = approval(status=ApprovalStatus.EXPIRED, outcome_detail="ignored", tool_use_id="t3")
    taken = decisions([rejected, expired], registry(private=True))
    assert taken.private == frozenset()
    assert [(o.status, o.detail, o.decided_by) for o in taken.outcomes] == [
        ("rejected", "not now", ("<@U0BOB>",)),
        ("expired", "", ()),
    ]
    assert taken.rejected == (call_digest(rejected.model_name, rejected.arguments),)


def test_an_approval_still_open_is_not_an_outcome() -> None:
    for status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED, ApprovalStatus.RUNNING):
        assert decisions([approval(status=status, tool_use_id="t1")], registry()).outcomes == ()
