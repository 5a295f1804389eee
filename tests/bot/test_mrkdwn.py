"""Untrusted text made safe for Slack: no pings, no disguised links, no secrets, chunks that fit."""

import random
import re

import pytest

from bot.mrkdwn import redact_secrets, safe_mrkdwn, split_text

ZWJ = "\u200d"
# The only "<" the renderer may emit starts an explicit http(s) link with no label.
ONLY_PLAIN_LINKS = re.compile(r"<(?!https?://[^|<>\s]+>)")

HOSTILE = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U123>",
    "<@U123|boss>",
    "<!subteam^S0123|@oncall>",
    "<#C123|general>",
    "<https://evil.example|https://good.example>",
    "<mailto:a@b.c|click>",
    "[x](https://evil.example|https://good.example)",
    "&lt;!channel&gt;",
]


# ----- safe_mrkdwn -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", HOSTILE)
def test_control_sequences_never_survive(attack: str) -> None:
    out = safe_mrkdwn(f"hi {attack} there")
    for marker in ("<!", "<@", "<#", "<mailto", "|https://good"):
        assert marker not in out
    assert not ONLY_PLAIN_LINKS.search(out)


def test_disguised_link_is_shown_as_the_text_it_is() -> None:
    out = safe_mrkdwn("<https://evil.example|https://good.example>")
    assert "<https://evil.example|" not in out
    assert out.startswith("&lt;")
    assert out.endswith("&gt;")


@pytest.mark.parametrize("word", ["@here", "@channel", "@everyone", "@HERE", "@Channel"])
def test_plain_broadcast_words_are_defused(word: str) -> None:
    out = safe_mrkdwn(f"ping {word} now")
    assert word not in out
    assert out == f"ping @{ZWJ}{word[1:]} now"


def test_addresses_and_other_handles_are_left_alone() -> None:
    assert safe_mrkdwn("mail ops@here.com or @alice") == "mail ops@here.com or @alice"


def test_markdown_link_becomes_label_and_visible_url() -> None:
    out = safe_mrkdwn("See [the dashboard](https://grafana.example/d/1?a=1&b=2).")
    assert out == "See the dashboard (<https://grafana.example/d/1?a=1&amp;b=2>)."


def test_markdown_link_whose_label_is_its_url_shows_it_once() -> None:
    assert safe_mrkdwn("[https://a.example/x](https://a.example/x)") == "<https://a.example/x>"


def test_label_that_looks_like_another_url_cannot_hide_the_real_one() -> None:
    out = safe_mrkdwn("[https://good.example](https://evil.example)")
    assert out == "https://good.example (<https://evil.example>)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[click](javascript:alert)", "click (javascript:alert)"),
        ("[files](ftp://host/x)", "files (ftp://host/x)"),
        ("[x](mailto:a@b.example)", "x (mailto:a@b.example)"),
    ],
)
def test_links_to_other_schemes_stay_plain_text(text: str, expected: str) -> None:
    assert safe_mrkdwn(text) == expected


def test_bare_urls_are_linked_without_trailing_punctuation() -> None:
    out = safe_mrkdwn("Logs: https://logs.example/q?x=1&y=2. Also (https://b.example/p), done")
    assert out == "Logs: <https://logs.example/q?x=1&amp;y=2>. Also (<https://b.example/p>), done"
    assert safe_mrkdwn("https://a.example/?q=1& more") == "<https://a.example/?q=1>&amp; more"


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __also__", "*bold* and *also*"),
        ("~~gone~~", "~gone~"),
        ("# Title", "*Title*"),
        ("### **Deep** title ###", "*Deep title*"),
        ("- one\n  - two\n* three", "• one\n  • two\n• three"),
        ("snake_case_name stays", "snake_case_name stays"),
        ("2 * 3 * 4", "2 * 3 * 4"),
        ("#channel-name is not a heading", "#channel-name is not a heading"),
    ],
)
def test_common_markdown_becomes_slack_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert safe_mrkdwn(markdown) == mrkdwn


def test_code_is_only_escaped() -> None:
    text = "```\n# not a heading\n- not a bullet\n**x** <b> @here https://x.example\n```\nand `a<b **c**`"
    expected = (
        "```\n# not a heading\n- not a bullet\n**x** &lt;b&gt; @here https://x.example\n```\n"
        "and `a&lt;b **c**`"
    )
    assert safe_mrkdwn(text) == expected


def test_an_unclosed_fence_protects_to_the_end() -> None:
    assert safe_mrkdwn("run:\n```\n**x** <!here>") == "run:\n```\n**x** &lt;!here&gt;"


def test_inline_code_inside_a_link_label_is_kept() -> None:
    assert safe_mrkdwn("[`kubectl`](https://k.example)") == "`kubectl` (<https://k.example>)"


def test_escaping_is_applied_once_so_a_second_pass_shows_entities() -> None:
    # Documented contract: safe_mrkdwn runs exactly once at the edge; it is deliberately not idempotent.
    assert safe_mrkdwn("a & b") == "a &amp; b"
    assert safe_mrkdwn(safe_mrkdwn("a & b")) == "a &amp;amp; b"


def test_random_hostile_mixtures_only_ever_yield_plain_links() -> None:
    rng = random.Random(7)
    parts = [
        *HOSTILE,
        "**b**",
        "[l](https://x.example/a)",
        "https://y.example/b|c",
        "`<@U1>`",
        "```",
        "\n",
        " ",
        "&",
    ]
    for _ in range(300):
        out = safe_mrkdwn("".join(rng.choice(parts) for _ in range(rng.randint(1, 25))))
        outside_code = re.sub(r"```.*?(```|\Z)|`[^`\n]+`", "", out, flags=re.S)
        assert not ONLY_PLAIN_LINKS.search(outside_code)
        assert "<" not in out.replace("<http", "")


# ----- redact_secrets --------------------------------------------------------------------------------------

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\nabcd\n-----END RSA PRIVATE KEY-----"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize(
    ("sample", "secret"),
    [
        (f"token is {JWT} ok", JWT),
        ("bot xoxb-123456-7890-abcDEF here", "xoxb-123456-7890-abcDEF"),
        ("user xoxp-1-2-3-abc", "xoxp-1-2-3-abc"),
        ("refresh xoxe.xoxp-1-Abc123", "xoxe.xoxp-1-Abc123"),
        ("app xapp-1-A0123-456-abcdef", "xapp-1-A0123-456-abcdef"),
        ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("session ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("oauth gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_16C7e42F292c6912E7710c838347Ae178B4a"),
        ("pat github_pat_11ABCDEFG0123456789_abcdefghijkl", "github_pat_11ABCDEFG0123456789_abcdefghijkl"),
        ("model key sk-ant-api03-abc_DEF-123", "sk-ant-api03-abc_DEF-123"),
        ("Authorization: Bearer abc.def-123_456", "abc.def-123_456"),
        (f"here:\n{PEM}\nend", "MIIEowIBAAKCAQEA1234"),
        ("db password=hunter2 host=x", "hunter2"),
        ("SLACK_SIGNING_SECRET='s3cr3t-value'", "s3cr3t-value"),
        ("GITHUB_TOKEN=abc123def", "abc123def"),
        ('{"client_secret": "very-secret"}', "very-secret"),
        ("api_token: tok-998877", "tok-998877"),
        ("redis://:p4ssw0rd@cache.internal:6379/0", "p4ssw0rd"),
    ],
)
def test_each_secret_pattern_is_redacted(sample: str, secret: str) -> None:
    redacted, count = redact_secrets(sample)
    assert secret not in redacted
    assert "[redacted]" in redacted
    assert count == 1


def test_assignment_keeps_the_key_so_people_see_what_was_hidden() -> None:
    assert redact_secrets("password=hunter2") == ("password=[redacted]", 1)
    assert redact_secrets("Bearer abcdef123456") == ("Bearer [redacted]", 1)


def test_several_secrets_are_each_counted_once() -> None:
    text = f"a={JWT}\nuse xoxb-1-abc and AKIAIOSFODNN7EXAMPLE"
    redacted, count = redact_secrets(text)
    assert count == 3
    assert redacted == "a=[redacted]\nuse [redacted] and [redacted]"


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens=1024 and temperature=0.2",
        "We use a Bearer token and Bearer authentication.",
        "The token expired; ask for a new secret rotation policy.",
        "The secret: we cache everything.",
        "AKIA keys start with four letters",
        "commit 3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 and uuid 123e4567-e89b-12d3-a456-426614174000",
        "xoxb- tokens are for bots; sk-ant is the prefix",
        "see https://example.com/path?q=1 and user@example.com",
        "Rows: 12,345 in 1.2 s (eyJ is base64 for '{\"')",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_secrets(text) == (text, 0)


# ----- split_text ------------------------------------------------------------------------------------------


def _fences_balanced(chunk: str) -> bool:
    return chunk.count("```") % 2 == 0


def _content(text: str) -> str:
    return re.sub(r"\s|`", "", text)


def test_short_text_is_a_single_chunk() -> None:
    assert split_text("hello", 100) == ["hello"]
    assert split_text("", 100) == []


def test_splits_at_paragraphs_first() -> None:
    text = "a" * 40 + "\n\n" + "b" * 40 + "\nc" + " d" * 5
    assert split_text(text, 60) == ["a" * 40 + "\n\n", "b" * 40 + "\nc" + " d" * 5]


def test_falls_back_to_lines_then_words() -> None:
    lines = "\n".join(["x" * 30] * 3)
    assert split_text(lines, 50) == ["x" * 30 + "\n", "x" * 30 + "\n", "x" * 30]
    words = " ".join(["y" * 9] * 10)
    chunks = split_text(words, 30)
    assert all(len(c) <= 30 for c in chunks)
    assert all(c.endswith(" ") for c in chunks[:-1])
    assert "".join(chunks) == words


def test_a_word_longer_than_the_limit_is_cut_without_losing_characters() -> None:
    chunks = split_text("z" * 95, 30)
    assert all(len(c) <= 30 for c in chunks)
    assert "".join(chunks) == "z" * 95


def test_a_hard_cut_never_splits_an_entity_or_a_link() -> None:
    text = "q" * 27 + "&amp;" + "r" * 40
    chunks = split_text(text, 30)
    assert chunks[0] == "q" * 27
    assert chunks[1].startswith("&amp;")
    link = "<https://example.com/" + "p" * 20 + ">"
    chunks = split_text("s" * 10 + link + "t" * 30, 40)
    assert chunks[0] == "s" * 10
    assert "".join(chunks) == "s" * 10 + link + "t" * 30


def test_a_hard_cut_never_splits_a_fence_marker() -> None:
    chunks = split_text("b" * 28 + "```" + "c" * 40, 30)
    assert chunks[0] == "b" * 28
    assert all(len(c) <= 30 and _fences_balanced(c) for c in chunks)


def test_a_code_fence_is_closed_and_reopened_across_chunks() -> None:
    text = "intro\n```\n" + "line\n" * 12 + "```\nafter"
    chunks = split_text(text, 40)
    assert all(len(c) <= 40 and _fences_balanced(c) for c in chunks)
    assert chunks[0] == "intro\n```\n" + "line\n" * 5 + "```"
    assert chunks[1].startswith("```\nline\n")
    assert _content("".join(chunks)) == _content(text)


def test_an_unclosed_fence_in_the_input_is_closed_in_the_last_chunk() -> None:
    assert split_text("```\ncode", 100) == ["```\ncode\n```"]


def test_rejects_a_limit_too_small_for_fence_markers() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_text("text", 10)


def _random_text(rng: random.Random) -> str:
    pieces: list[str] = []
    for _ in range(rng.randint(1, 60)):
        kind = rng.random()
        if kind < 0.15:
            body = "\n".join(
                " ".join("c" * rng.randint(1, 12) for _ in range(rng.randint(1, 12))) for _ in range(8)
            )
            pieces.append(f"```\n{body}\n```")
        elif kind < 0.2:
            pieces.append("w" * rng.randint(50, 400))  # one long "word"
        else:
            pieces.append(
                " ".join("word"[: rng.randint(1, 4)] * rng.randint(1, 5) for _ in range(rng.randint(1, 80)))
            )
        pieces.append(rng.choice(["\n\n", "\n", " "]))
    return "".join(pieces)


@pytest.mark.parametrize("seed", range(40))
def test_random_texts_split_into_fitting_balanced_chunks_with_all_content(seed: int) -> None:
    rng = random.Random(seed)
    text = _random_text(rng)
    limit = rng.choice([40, 100, 300, 3000])
    chunks = split_text(text, limit)
    assert all(len(c) <= limit for c in chunks)
    assert all(_fences_balanced(c) for c in chunks)
    assert _content("".join(chunks)) == _content(text)


@pytest.mark.parametrize("seed", range(20))
def test_without_fences_the_chunks_join_back_to_the_exact_text(seed: int) -> None:
    rng = random.Random(1000 + seed)
    text = _random_text(rng).replace("```", "")
    assert "".join(split_text(text, rng.choice([25, 80, 500]))) == text
