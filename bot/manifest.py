"""The Slack app manifest `chatops manifest` prints (SPEC §7): one paste sets up everything the bot uses.

Scopes are derived, not listed by hand: each bot event and each Web API method the code calls maps to the
scopes Slack requires for it (`BOT_EVENTS`, `WEB_API_METHODS`), and the manifest asks for exactly their
union plus `commands`. tests/bot/test_manifest.py scans the source for listeners and Web API calls, so a new
one without an entry here fails the test instead of failing in a workspace.

In Socket Mode Slack delivers everything over the socket, so no request URL is given (Slack rejects a
manifest that enables Socket Mode and also names request URLs it cannot verify).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import yaml

__all__ = [
    "BOLT_EVENTS",
    "BOT_EVENTS",
    "SDK_HELPERS",
    "WEB_API_METHODS",
    "bot_scopes",
    "build_manifest",
    "render_manifest",
]

# bot.oncall_listeners.SHORTCUT_CALLBACK_ID, spelled out: importing the listeners would load the whole stack
# (seconds) just to print a manifest. tests/bot/test_manifest.py checks the two agree.
SHORTCUT_CALLBACK_ID = "oncall_run"
EVENTS_PATH = "/slack/events"  # bot.web mounts Bolt here: events, interactivity and commands alike
_HISTORY = ("channels:history", "groups:history", "im:history", "mpim:history")

# Manifest bot event -> scopes Slack requires to subscribe to it.
BOT_EVENTS: dict[str, tuple[str, ...]] = {
    "app_mention": ("app_mentions:read",),
    "message.channels": ("channels:history",),
    "message.groups": ("groups:history",),
    "message.im": ("im:history",),
    "message.mpim": ("mpim:history",),
    "app_home_opened": (),
    # The AI app's split view (bot.assistant): a thread opened, its channel context changed.
    "assistant_thread_started": ("assistant:write",),
    "assistant_thread_context_changed": ("assistant:write",),
}

# Bolt's event type (what `app.event(...)` and the ingress middleware see) -> manifest subscriptions.
# One Bolt "message" listener receives all four conversation kinds.
BOLT_EVENTS: dict[str, tuple[str, ...]] = {
    "app_mention": ("app_mention",),
    "message": ("message.channels", "message.groups", "message.im", "message.mpim"),
    "app_home_opened": ("app_home_opened",),
    "assistant_thread_started": ("assistant_thread_started",),
    "assistant_thread_context_changed": ("assistant_thread_context_changed",),
}

# Web API method the bot calls -> bot scopes it needs (Slack's method reference).
WEB_API_METHODS: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "chat.getPermalink": (),
    # Streamed answers (bot.streams): the same scope as posting.
    "chat.startStream": ("chat:write",),
    "chat.appendStream": ("chat:write",),
    "chat.stopStream": ("chat:write",),
    # Assistant threads (bot.assistant): suggested prompts, the status line while working, the title.
    "assistant.threads.setStatus": ("assistant:write",),
    "assistant.threads.setSuggestedPrompts": ("assistant:write",),
    "assistant.threads.setTitle": ("assistant:write",),
    "reactions.add": ("reactions:write",),
    "reactions.remove": ("reactions:write",),
    "conversations.replies": _HISTORY,
    "conversations.history": _HISTORY,
    "files.upload": ("files:write",),  # the name bot.poster reports upload failures under
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
    "views.open": (),
    "views.publish": (),
    # bot.slack_people: account linking compares the signed-in email with the Slack profile's (SPEC §5).
    "users.info": ("users:read", "users:read.email"),
}

# Not a Web API method: bot.attachments downloads the files people attach (url_private_download, with the
# bot token), which needs this scope.
FILE_DOWNLOAD_SCOPES: tuple[str, ...] = ("files:read",)

# slack_sdk helpers that call several methods under one Python name.
SDK_HELPERS: dict[str, tuple[str, ...]] = {
    "files_upload_v2": ("files.getUploadURLExternal", "files.completeUploadExternal"),
}

_COMMAND = re.compile(r"/[^\s/]{1,31}")  # Slack: a leading slash, no spaces, 32 characters in all
_DISPLAY_NAME_UNSAFE = re.compile(r"[^\w\-.]+")


def bot_scopes(*, slash_command: bool = True) -> list[str]:
    """Exactly the scopes the subscribed events and called methods need, sorted."""
    needed = {s for scopes in BOT_EVENTS.values() for s in scopes}
    needed |= {s for scopes in WEB_API_METHODS.values() for s in scopes}
    needed |= set(FILE_DOWNLOAD_SCOPES)
    if slash_command:
        needed.add("commands")
    return sorted(needed)


def build_manifest(
    *, public_url: str, socket_mode: bool, command: str = "/oncall", name: str = "chatops"
) -> dict[str, Any]:
    """The app manifest for this deployment; request URLs point at `public_url` unless in Socket Mode."""
    if not _COMMAND.fullmatch(command):
        raise ValueError(f"{command!r} is not a slash command: a leading /, no spaces, at most 32 characters")
    if not name.strip() or len(name) > 35:
        raise ValueError("the app name must be 1 to 35 characters")
    url = public_url.rstrip("/") + EVENTS_PATH
    slash: dict[str, Any] = {
        "command": command,
        "description": "Run canned on-call workflows",
        "usage_hint": "help | list | run <workflow> [key=value ...] | status [run-id]",
        "should_escape": False,
    }
    events: dict[str, Any] = {"bot_events": list(BOT_EVENTS)}
    interactivity: dict[str, Any] = {"is_enabled": True}
    if not socket_mode:
        slash["url"] = url
        events["request_url"] = url
        interactivity["request_url"] = url
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": name,
            "description": "Ask about your systems in Slack; sensitive actions wait for approval.",
            "background_color": "#1d3557",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": True,
                "messages_tab_enabled": True,  # DMs to the bot are requests (SPEC §7)
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": _display_name(name), "always_online": True},
            # The split-view AI app entry point: its threads are DMs with the bot, answered like any DM.
            "assistant_view": {
                "assistant_description": "Ask about your systems; sensitive actions wait for approval.",
            },
            "slash_commands": [slash],
            "shortcuts": [
                {
                    # Slash commands do not work in threads; this offers the same workflows there.
                    "name": "Run on-call workflow",
                    "type": "message",
                    "callback_id": SHORTCUT_CALLBACK_ID,
                    "description": "Run a canned on-call workflow from this thread",
                }
            ],
        },
        "oauth_config": {"scopes": {"bot": bot_scopes()}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,  # the bot token is read once from SLACK_BOT_TOKEN
        },
    }


def render_manifest(manifest: dict[str, Any], fmt: Literal["json", "yaml"] = "json") -> str:
    if fmt == "yaml":
        # Slack's editor shows keys in the order given; keep the manifest's reading order.
        return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def _display_name(name: str) -> str:
    # The bot user's name allows only letters, digits, "-", "_" and "."; the app name allows more.
    return _DISPLAY_NAME_UNSAFE.sub("-", name.strip().lower()).strip("-")[:80] or "chatops"
