"""One escaping path to Slack (issue 14 item 8): untrusted text can neither ping, broadcast, disguise a link
nor show a secret, whichever way it reaches the poster."""

from __future__ import annotations

import json

import pytest

from bot.slack_text import Mrkdwn, code, defuse, file_text, link, ours, untrusted

HOSTILE = "<!channel> <@U0ALICE> <https://evil.example|https://good.example> AKIAIOSFODNN7EXAMPLE"
CONTROL = ("<!channel>", "<@U0ALICE>", "<https://evil.example|", "AKIAIOSFODNN7EXAMPLE")


def controls(blob: str) -> list[str]:
    return [sequence for sequence in CONTROL if sequence in blob]


@pytest.mark.parametrize("markdown", [True, False])
def test_untrusted_text_keeps_no_control_sequence(markdown: bool) -> None:
    safe = untrusted(HOSTILE, markdown=markdown)
    assert isinstance(safe, Mrkdwn)
    assert controls(safe) == []
    assert "evil.example" in safe  # shown as text, not hidden
    assert untrusted(safe) is safe  # made safe once: never escaped twice


def test_our_wording_keeps_its_mentions_and_links_and_escapes_every_value() -> None:
    said = ours(
        "{call} ran for <@{user}>: {detail}. {connect}",
        call=code("presto.`kill`"),
        user="U0BOB",
        detail=HOSTILE,
        connect=link("https://chatops.example.com/oauth/start/x?a=1&b=2", "Connect <again>"),
    )
    assert said.startswith("`presto.'kill'` ran for <@U0BOB>: ")
    assert "<https://chatops.example.com/oauth/start/x?a=1&amp;b=2|Connect &lt;again&gt;>" in said
    assert controls(said) == []
    with pytest.raises(ValueError, match="plain http"):
        link("https://x.example/|<!channel>", "Connect")


def test_the_posters_last_guard_defuses_broadcasts_and_disguised_links_in_any_text() -> None:
    payload = {
        "text": "<!here> hi",
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "<!subteam^S1|@oncall> <https://evil.example|good.example>",
                },
            },
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "<https://a.example|Connect your account>"}],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": "at <!date^1764079320^{time}|02:02 UTC>"}},
        ],
    }
    guarded = json.dumps(defuse(payload))
    assert "<!here>" not in guarded
    assert "<!subteam" not in guarded
    assert "<https://evil.example|" not in guarded
    assert "good.example (<https://evil.example>)" in guarded  # the real destination is shown
    assert "<https://a.example|Connect your account>" in guarded  # our own link labels stay links
    assert "<!date^1764079320^{time}|02:02 UTC>" in guarded  # time stamps are not broadcasts


def test_file_content_keeps_no_control_sequence_and_no_secret_but_stays_readable() -> None:
    content = file_text(f"SELECT * FROM t WHERE a < b\n{HOSTILE}")
    assert controls(content) == []
    assert "a < b" in content
    assert "evil.example" in content
    assert file_text("x AKIAIOSFODNN7EXAMPLE", redact=False).endswith("AKIAIOSFODNN7EXAMPLE")
