"""`chatops demo --keep`: leave the world running, and print what points other commands at it (issue 21
item 3)."""

from __future__ import annotations

import shlex
import signal
from typing import Any

from fixtures.world import ANTHROPIC_KEY

__all__ = ["KEPT_SETTINGS", "environment_block", "keep_running"]


def keep_running(env: dict[str, Any]) -> None:
    print("\nEverything keeps running; Ctrl-C (or `kill` of this process) stops all of it.")
    print("Paste this in another shell to point `chatops doctor`, `audit`, `stats`, `registry` or a second")
    print("`chatops worker` at this world (the credentials are the fake world's own):\n")
    for line in environment_block(env):
        print(line)
    print(flush=True)
    while True:
        signal.pause()  # until SIGINT or SIGTERM (bot.stopping turns it into Stopped; the cleanup runs)


def environment_block(env: dict[str, Any]) -> list[str]:
    """`export` lines for every setting that points at the demo's world, secrets of the fake world included;
    a real ANTHROPIC_API_KEY is never printed."""
    lines = []
    for key in KEPT_SETTINGS:
        value = env.get(key)
        if not value:
            continue
        if key == "ANTHROPIC_API_KEY" and value != ANTHROPIC_KEY:
            lines.append("# ANTHROPIC_API_KEY: your own key, as you gave it to the demo")
            continue
        lines.append(f"export {key}={shlex.quote(str(value))}")
    return lines


KEPT_SETTINGS = (
    "REDIS_URL",
    "PUBLIC_URL",
    "SLACK_API_URL",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "REGISTRY_URL",
    "OAUTH_ISSUER",
    "OAUTH_CLIENT_ID",
    "OAUTH_CLIENT_SECRET",
    "CHATOPS_SECRET_KEY",
    "CHATOPS_NETGUARD",
)
