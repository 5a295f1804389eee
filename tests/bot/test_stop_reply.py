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
