"""Untrusted text (from the model or from tools) made safe for Slack mrkdwn (pure, no I/O).

Three steps, applied in this order at the edge, exactly once, just before a payload is built:

1. `redact_secrets` — token-like strings become `[redacted]` (ACCEPTANCE 23, 38).
2. `safe_mrkdwn` — `&`, `<`, `>` escaped so no `<!channel>`, `<@U…>`, `<!subteam^…>` or disguised
   `<https://evil|https://good>` survives; common Markdown becomes Slack mrkdwn; links are shown in full.
   It is not idempotent (a second pass turns `&amp;` into `&amp;amp;`), which is why it runs once.
3. `split_text` — pieces that fit Slack's per-block limits, with code fences kept balanced per piece.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agent.redaction import redact_secrets

__all__ = ["escape", "redact_secrets", "safe_mrkdwn", "split_text"]

FENCE = "```"
# ZWJ after the "@" breaks the broadcast keyword for Slack's parser and is invisible to people.
_ZWJ = "\u200d"

# ----- escaping and Markdown -------------------------------------------------------------------------------

# Slack treats ``` as a toggle wherever it appears; an unclosed fence runs to the end of the text.
_CODE = re.compile(r"```.*?```|```.*\Z|`[^`\n]+`", re.S)
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
_BROADCAST = re.compile(r"(?<![\w@])@(here|channel|everyone)\b", re.I)
# URLs are matched on escaped text: stop at an escaped < or >; never include "|", Slack's label separator.
_URL_BODY = r"(?:(?!&lt;|&gt;)[^\s|<>()\[\]{}\"'`\x00])+"
_LINK = re.compile(
    r"\[(?P<label>[^\]\n]+)\]\((?P<target>[^\s()|\x00]+)\)|(?<![\w/])(?P<bare>https?://" + _URL_BODY + ")",
    re.I,
)
_TRAILING_PUNCT = ".,;:!?*_~"
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
_BULLET = re.compile(r"^([ \t]*)[-*][ \t]+", re.M)
_BOLD_STARS = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_BOLD_UNDERSCORES = re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")


def escape(text: str) -> str:
    """Escape the three characters Slack reserves for control sequences (`&` first, so nothing doubles)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def safe_mrkdwn(text: str) -> str:
    """Turn untrusted Markdown-ish text into mrkdwn that can neither ping anyone nor disguise a link.

    Code (``` fences and `inline`) is only escaped. Everywhere else: `**b**`/`__b__` → `*b*`, `~~s~~` → `~s~`,
    `# Heading` → `*Heading*`, `- item` → `• item`, `[label](https://u)` → `label (<https://u>)`, bare
    http(s) URLs → `<url>`; any other scheme stays plain text. Apply exactly once (see module docstring).
    """
    stash: list[str] = []

    def keep(rendered: str) -> str:
        stash.append(rendered)
        return f"\x00{len(stash) - 1}\x00"

    # NUL is the placeholder delimiter; it carries no meaning in a Slack message.
    text = text.replace("\x00", "")
    prose = _CODE.sub(lambda m: keep(escape(m.group(0))), text)
    prose = _LINK.sub(lambda m: _render_link(m, keep), escape(prose))
    prose = _BROADCAST.sub(lambda m: "@" + _ZWJ + m.group(1), prose)
    prose = _HEADING.sub(lambda m: "*" + m.group(1).replace("**", "").replace("__", "") + "*", prose)
    prose = _BULLET.sub(r"\1• ", prose)
    prose = _BOLD_STARS.sub(r"*\1*", prose)
    prose = _BOLD_UNDERSCORES.sub(r"*\1*", prose)
    prose = _STRIKE.sub(r"~\1~", prose)
    # Link labels may hold stashed inline code, so expand until no placeholder is left (depth ≤ 2).
    while _PLACEHOLDER.search(prose):
        prose = _PLACEHOLDER.sub(lambda m: stash[int(m.group(1))], prose)
    return prose


def _render_link(match: re.Match[str], keep: Callable[[str], str]) -> str:
    bare = match.group("bare")
    if bare is not None:
        url, tail = _trim_url(bare)
        return keep(f"<{url}>") + tail
    label, target = match.group("label"), match.group("target")
    if not re.match(r"https?://", target, re.I) or "&lt;" in target or "&gt;" in target:
        return f"{label} ({target})"  # not linkified: shown as the plain text it is
    if label.strip() == target:
        return keep(f"<{target}>")
    # The real destination is always visible next to the label, so a label cannot impersonate it.
    return f"{label} (" + keep(f"<{target}>") + ")"


def _trim_url(url: str) -> tuple[str, str]:
    """Leave sentence punctuation (and a dangling `&`) outside a bare URL, as people mean it."""
    end = len(url)
    while end > 0:
        if url[:end].endswith("&amp;"):
            end -= len("&amp;")
        elif url[end - 1] in _TRAILING_PUNCT and not url[:end].endswith(("&lt;", "&gt;")):
            end -= 1
        else:
            break
    return url[:end], url[end:]


# ----- splitting -------------------------------------------------------------------------------------------

_REOPEN = FENCE + "\n"
_MARKER_ROOM = len("\n" + FENCE)  # room kept in every chunk for a closing fence


def split_text(text: str, limit: int = 3000) -> list[str]:
    """Split into chunks of at most `limit` characters, at paragraph, line, then word boundaries.

    Separators stay at the end of the chunk before them, so joining the chunks gives back the text, except
    that a chunk ending inside a code fence gets a closing ``` and the next one reopens it: every chunk
    has balanced fences. A cut inside a word happens only when a single word is longer than a chunk.
    """
    if limit < 20:
        raise ValueError("limit must leave room for code fence markers")
    chunks: list[str] = []
    pos, in_fence = 0, False
    while pos < len(text):
        prefix = _REOPEN if in_fence else ""
        budget = limit - len(prefix)
        rest = text[pos:]
        ends_open = _ends_open(rest, in_fence)
        if len(rest) + (_MARKER_ROOM if ends_open else 0) <= budget:
            chunks.append(prefix + rest + (_closing(rest) if ends_open else ""))
            break
        cut = _cut(rest, budget)
        if _ends_open(rest[:cut], in_fence) and cut + _MARKER_ROOM > budget:
            cut = _cut(rest, budget - _MARKER_ROOM)  # only now give up room for the closing fence
        piece = rest[:cut]
        ends_open = _ends_open(piece, in_fence)
        chunks.append(prefix + piece + (_closing(piece) if ends_open else ""))
        in_fence, pos = ends_open, pos + cut
    return chunks


def _ends_open(piece: str, in_fence: bool) -> bool:
    return in_fence != (piece.count(FENCE) % 2 == 1)


def _closing(piece: str) -> str:
    return FENCE if piece.endswith("\n") else "\n" + FENCE


def _cut(rest: str, window: int) -> int:
    """Where to end the next chunk: the latest good boundary that does not leave a uselessly short chunk."""
    for separator, shortest in (("\n\n", window // 2), ("\n", window // 4), (" ", 1)):
        at = rest.rfind(separator, 0, window)
        if at >= 0 and at + len(separator) >= shortest:
            return at + len(separator)
    return _hard_cut(rest, window)


def _hard_cut(rest: str, window: int) -> int:
    """Cut inside a word, but never through a ``` marker, an `&amp;` entity or a `<link>`."""
    cut = window
    moved = True
    while moved and cut > 0:
        moved = False
        for back in (1, 2):
            if rest[cut - back : cut - back + 3] == FENCE and cut - back > 0:
                cut, moved = cut - back, True
                break
    amp = rest.rfind("&", max(0, cut - 4), cut)
    if amp > 0 and ";" not in rest[amp:cut]:
        cut = amp
    opened = rest.rfind("<", 0, cut)
    if opened > 0 and rest.rfind(">", 0, cut) < opened:
        cut = opened
    return cut if cut > 0 else window
