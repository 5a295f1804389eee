"""How `chatops demo` shows what happens: Slack's messages as a person would read them, with timings."""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Callable
from typing import TypeVar

from fixtures.idp import PEOPLE
from fixtures.slack import BOT_USER_ID, FakeSlack, Message

__all__ = [
    "NAMES",
    "WAIT_SECONDS",
    "Clock",
    "DemoFailed",
    "button_url",
    "message_text",
    "say",
    "show_new",
    "wait_until",
]

T = TypeVar("T")
# Each step waits this long at most; a loaded machine (CI, tests running beside it) may need more.
WAIT_SECONDS = float(os.environ.get("CHATOPS_DEMO_WAIT_SECONDS", "30"))
NAMES = {p.slack_user: p.key.capitalize() for p in PEOPLE.values()} | {BOT_USER_ID: "chatops"}


class DemoFailed(Exception):
    pass


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.start:6.2f}s]"


def humanize(text: str) -> str:
    """Show Slack's markup the way the Slack client renders it: names for mentions, local times for dates."""
    text = re.sub(r"<@(U[A-Z0-9]+)>", lambda m: "@" + NAMES.get(m.group(1), m.group(1)), text)
    text = re.sub(r"<!date\^\d+\^[^|>]*\|([^>]*)>", r"\1", text)
    text = re.sub(r"<(https?://[^|>]+)\|([^>]+)>", r"\2", text)
    return html.unescape(text)


def say(clock: Clock, who: str, text: str) -> None:
    lines = humanize(text).strip().splitlines() or [""]
    print(f"{clock.stamp()} {who}: {lines[0]}")
    for line in lines[1:]:
        print(f"{' ' * 10}{' ' * len(who)}  {line}")


def wait_until(what: str, check: Callable[[], T | None], timeout: float = WAIT_SECONDS) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value is not None and value is not False:
            return value
        time.sleep(0.05)
    raise DemoFailed(f"timed out waiting for {what}")


def message_text(message: Message) -> str:
    parts: list[str] = []
    for block in message.blocks or []:
        if block.get("type") in ("section", "header"):
            parts.append(str((block.get("text") or {}).get("text", "")))
        elif block.get("type") == "context":
            parts.append("  " + " ".join(str(e.get("text", "")) for e in block.get("elements", [])))
        elif block.get("type") == "actions":
            labels = [str((e.get("text") or {}).get("text", "")) for e in block.get("elements", [])]
            parts.append("  " + "  ".join(f"[{label}]" for label in labels if label))
    return "\n".join(p for p in parts if p.strip()) or message.text


def button_url(message: Message) -> str | None:
    for block in message.blocks or []:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("url"):
                return str(element["url"])
    return None


def show_new(
    slack: FakeSlack,
    channel: str,
    clock: Clock,
    ts: str,
    shown: set[str],
    *,
    ephemeral_to: str | None = None,
) -> None:
    for message in slack.messages(channel, thread_ts=ts):
        if message.ts not in shown:
            shown.add(message.ts)
            say(clock, NAMES.get(message.user, message.user), message_text(message))
    if ephemeral_to:
        for message in slack.ephemerals(channel, user=ephemeral_to):
            key = f"e:{message.ts}"
            if key not in shown:
                shown.add(key)
                say(clock, f"chatops (only visible to {NAMES.get(ephemeral_to, ephemeral_to)})", message.text)
