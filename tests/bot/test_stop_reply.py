"""What a Stop click's clicker is told (bot.stop_listeners.stop_reply): a refusal says who may stop."""

from __future__ import annotations

from bot.stop_listeners import stop_reply
from flows.stop_rights import StopClick


def test_a_refusal_names_the_asker_and_the_servers_whose_approvers_may_stop() -> None:
    assert stop_reply(StopClick("refused"), "U0ALICE") == "Only <@U0ALICE>, who asked, can stop this request."
    assert stop_reply(StopClick("refused", ("presto",)), "U0ALICE") == (
        "Only <@U0ALICE> or an approver for presto can stop this request."
    )
    assert stop_reply(StopClick("refused", ("airflow", "presto", "spark")), "U0ALICE") == (
        "Only <@U0ALICE> or an approver for airflow, presto or spark can stop this request."
    )


def test_a_server_name_cannot_ping_anyone() -> None:
    said = stop_reply(StopClick("refused", ("<!channel>",)), "U0ALICE")
    assert "<!channel>" not in said
    assert "&lt;!channel&gt;" in said


def test_an_allowed_click_is_told_what_happens_next() -> None:
    assert stop_reply(StopClick("stopping", ("presto",)), "U0ALICE").startswith("Stopping:")
    assert stop_reply(StopClick("already"), "U0ALICE").startswith("Someone has already")
    assert stop_reply(StopClick("finished"), "U0ALICE") == "That request has already finished."


def test_an_unlinked_clicker_is_handed_the_connect_link_and_a_linked_one_is_not() -> None:
    url = "https://chatops.example.com/link/start?offer=abc&x=1"
    said = stop_reply(StopClick("refused", ("presto",), linked=False), "U0ALICE", url)
    assert said == (
        "Only <@U0ALICE> or an approver for presto can stop this request. If you approve for presto, "
        "<https://chatops.example.com/link/start?offer=abc&amp;x=1|connect your account> first, then click "
        "Stop again."
    )
    linked = stop_reply(StopClick("refused", ("presto",)), "U0ALICE", url)
    assert linked == "Only <@U0ALICE> or an approver for presto can stop this request."
    # before any tool call only the asker may stop: linking would not help, so no link
    assert "connect" not in stop_reply(StopClick("refused", linked=False), "U0ALICE", url)
