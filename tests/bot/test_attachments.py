"""Where attached files may come from (bot.attachments.file_origins): Slack's own hosts only."""

from __future__ import annotations

from bot.attachments import _origin, file_origins


def test_only_slacks_file_host_and_the_configured_api_origin_are_allowed() -> None:
    origins = file_origins("https://slack.com/api/")
    assert _origin("https://files.slack.com/files-pri/T1-F1/download/x.log") in origins
    assert _origin("https://slack.com/files/x") in origins
    for foreign in (
        "http://files.slack.com/files-pri/T1-F1/x.log",  # not over TLS
        "https://files.slack.com.evil.example/x.log",
        "https://files.slack.com:8443/x.log",
        "http://169.254.169.254/latest/meta-data/",
        "https://internal.example/files/x.log",
        "file:///etc/passwd",
    ):
        assert _origin(foreign) not in origins, foreign


def test_a_fake_slack_on_loopback_allows_its_own_origin_only() -> None:
    origins = file_origins("http://127.0.0.1:4321/api/")
    assert _origin("http://127.0.0.1:4321/files/F1/x.log") in origins
    assert _origin("http://127.0.0.1:4322/files/F1/x.log") not in origins
    assert _origin("https://files.slack.com/files-pri/T1-F1/x.log") not in origins
