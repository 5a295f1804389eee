"""Text bound for Slack, in two kinds kept apart by type: our own wording, and everything else.

Whatever a tool, a server's error, a workflow step, the registry, a person or the model wrote is untrusted.
It reaches Slack only through `untrusted`: secrets redacted (agent.redaction), then `&`, `<` and `>` escaped
(bot.mrkdwn), so it can neither ping anyone, broadcast, nor disguise a link. Our own wording is built with
`ours`, which makes every value safe the same way unless it already is `Mrkdwn`.

The poster takes `Mrkdwn` only, so a new posting path cannot forget this: mypy refuses a plain `str`, and a
plain `str` that reaches the poster anyway is treated as untrusted. Two last guards sit in the poster for
what builders assemble as JSON (blocks, views): `defuse` turns broadcasts and links whose label is another
address into plain text, and `file_text` keeps control sequences and secrets out of uploaded files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from agent.redaction import redact_secrets
from bot.mrkdwn import escape, safe_mrkdwn

__all__ = ["Mrkdwn", "code", "defuse", "file_text", "join", "link", "ours", "trusted", "untrusted"]

_URL = re.compile(r"https?://[^\s<>|]+", re.I)


class Mrkdwn(str):
    """Text that is safe to send to Slack as mrkdwn. Only this module's functions make it."""

    __slots__ = ()


def untrusted(text: str, *, markdown: bool = True) -> Mrkdwn:
    """Text from anyone but us, made safe for Slack: secrets redacted, control characters escaped.

    `markdown=True` (prose: answers, tool output, errors) also turns Markdown into mrkdwn and shows links in
    full; `markdown=False` only escapes (a name or a value inside one of our sentences)."""
    if isinstance(text, Mrkdwn):
        return text  # already made safe once; escaping again would show `&amp;lt;`
    redacted, _ = redact_secrets(text)
    return Mrkdwn(safe_mrkdwn(redacted) if markdown else escape(redacted))


def code(text: str, most: int = 80) -> Mrkdwn:
    """An untrusted name shown as inline code: one line, cut to `most`, no backtick to break out with."""
    flat = " ".join(redact_secrets(text)[0].replace("`", "'").split())
    flat = flat if len(flat) <= most else flat[: most - 1] + "…"
    return Mrkdwn(f"`{escape(flat)}`" if flat else "_(none)_")


def link(url: str, label: str) -> Mrkdwn:
    """A link of ours (a Connect link, a permalink) with a label; anything but a plain http(s) URL is
    refused, so a link can never be built from text that smuggles in a control sequence."""
    if not _URL.fullmatch(url):
        raise ValueError("a link must be a plain http(s) URL")
    return Mrkdwn(f"<{url.replace('&', '&amp;')}|{untrusted(label, markdown=False).replace('|', '/')}>")


def ours(template: str, /, **values: str) -> Mrkdwn:
    """Our own wording (`template`, which may hold mentions and links we made) with untrusted `values`.

    Each value is escaped unless it is already `Mrkdwn`. The template must be a literal of ours: never
    format untrusted text into it before calling this."""
    safe = {name: untrusted(value, markdown=False) for name, value in values.items()}
    return Mrkdwn(template.format(**safe))


def trusted(text: str) -> Mrkdwn:
    """Text a pure builder already made safe (bot.approval_text, the Block Kit builders). Named so that every
    place that vouches for a string can be found and read."""
    return Mrkdwn(text)


def join(parts: Iterable[Mrkdwn], separator: str = "\n") -> Mrkdwn:
    """Safe parts joined with a separator of ours."""
    return Mrkdwn(separator.join(parts))


# ----- the poster's last guards ----------------------------------------------------------------------------

# Broadcasts and group pings; `<!date^…>` (our time stamps) is not one of them.
_BROADCAST = re.compile(r"<(!(?:channel|here|everyone|subteam\^)[^<>]*)>", re.I)
_LINK = re.compile(r"<((?:https?|mailto|ftp|slack)[^<>|\s]*)\|([^<>]*)>", re.I)
_ADDRESS_LIKE = re.compile(r"[a-z][a-z0-9+.-]*:|(?:^|\s)[\w-]+(?:\.[\w-]+)+(?:[/:?#]|\s|$)", re.I)
# In a file, a control sequence is broken with an invisible word joiner: readable, and a copy pasted into a
# message cannot ping or disguise a link. Only `<` that would start one is touched (`a < b` stays).
_FILE_CONTROL = re.compile(r"<(?=[!@#]|[a-z][a-z0-9+.-]*:)", re.I)
_WORD_JOINER = "\u2060"


def defuse(payload: Any) -> Any:
    """`payload` (a Web API call's arguments) with every `text` string guarded: no broadcast, and no link
    whose label looks like an address other than its own. Our builders never write either; this catches
    what a future one might let through."""
    if isinstance(payload, dict):
        return {
            key: _defused(value) if key == "text" and isinstance(value, str) else defuse(value)
            for key, value in payload.items()
        }
    if isinstance(payload, list):
        return [defuse(item) for item in payload]
    return payload


def _defused(text: str) -> str:
    text = _BROADCAST.sub(lambda m: f"&lt;{m.group(1)}&gt;", text)
    return _LINK.sub(_link, text)


def _link(match: re.Match[str]) -> str:
    target, label = match.group(1), match.group(2)
    if label.strip() == target or not _ADDRESS_LIKE.search(label):
        return match.group(0)
    return f"{label} (<{target}>)"  # the real destination is shown next to the label


def file_text(text: str, *, redact: bool = True) -> str:
    """Content for an uploaded file: secrets redacted, control sequences broken, the rest as it was."""
    return _FILE_CONTROL.sub("<" + _WORD_JOINER, redact_secrets(text)[0] if redact else text)
