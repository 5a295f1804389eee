"""`chatops manifest`: a Slack app manifest that validates against Slack's schema and asks for exactly what
the code uses. The code's listeners and Web API calls are read from the source itself (ast), so a new
listener, event or method without a manifest entry fails here rather than in a workspace."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock (types-jsonschema)
import pytest
import yaml

from bot import manifest as manifest_module
from bot.manifest import (
    BOLT_EVENTS,
    BOT_EVENTS,
    FILE_DOWNLOAD_SCOPES,
    SDK_HELPERS,
    WEB_API_METHODS,
    build_manifest,
    render_manifest,
)
from bot.oncall_listeners import SHORTCUT_CALLBACK_ID

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "fixtures" / "data" / "slack-manifest-schema.json").read_text())
FIRST_PARTY = ("bot", "agent", "approvals", "mcp_clients", "registry_cache")
PUBLIC = "https://chatops.example.com"
LISTENER_KINDS = {"event", "action", "view", "shortcut", "command", "options", "message"}
# Web API method families: a string or a slack_sdk method name starting with one of these names a call.
FAMILIES = frozenset(
    {"admin", "apps", "assistant", "auth", "bookmarks", "bots", "calls", "canvases", "chat", "conversations"}
    | {"dialog", "dnd", "emoji", "files", "functions", "pins", "reactions", "reminders", "search", "stars"}
    | {"team", "usergroups", "users", "views", "workflows"}
)
METHOD = re.compile(rf"(?:{'|'.join(sorted(FAMILIES))})(?:\.[A-Za-z0-9]+)+")


# ----- reading the source ----------------------------------------------------------------------------------


def _modules(*packages: str) -> Iterator[tuple[str, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield dotted, ast.parse(path.read_text(), filename=str(path))


def registrations() -> dict[str, list[Any]]:
    """Every `app.<kind>(first_argument, ...)` in bot/, the argument evaluated in its module's namespace."""
    found: dict[str, list[Any]] = {kind: [] for kind in LISTENER_KINDS}
    for dotted, tree in _modules("bot"):
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            target = node.func.value
            if node.func.attr in LISTENER_KINDS and isinstance(target, ast.Name) and target.id == "app":
                namespace = vars(importlib.import_module(dotted))
                expression = ast.Expression(node.args[0])
                found[node.func.attr].append(eval(compile(expression, dotted, "eval"), namespace))
    return found


def ingress_events() -> set[str]:
    """Event types the ingress middleware takes before any listener (`event.get("type") in (...)`)."""
    tree = dict(_modules("bot"))["bot.ingress"]
    found: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Compare)
            and "get" in ast.unparse(node.left)
            and "type" in ast.unparse(node.left)
        ):
            for comparator in node.comparators:
                if isinstance(comparator, ast.Tuple):
                    found |= {
                        e.value
                        for e in comparator.elts
                        if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    }
    return found


def assistant_events() -> set[str]:
    """Assistant thread events Bolt's Assistant middleware routes (`assistant.thread_started(...)`)."""
    found: set[str] = set()
    for _, tree in _modules("bot"):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("thread_started", "thread_context_changed")
            ):
                found.add(f"assistant_{node.func.attr}")
    return found


def web_api_methods() -> set[str]:
    """Slack methods named in code (poster.call("chat.update"), client.views_open(...)), docstrings aside."""
    found: set[str] = set()
    for _, tree in _modules(*FIRST_PARTY):
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if METHOD.fullmatch(node.value):
                    found.add(node.value)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name, receiver = node.func.attr, ast.unparse(node.func.value)
                if receiver.endswith("client") and name.split("_", 1)[0] in FAMILIES:
                    found.update(SDK_HELPERS.get(name, (name.replace("_", "."),)))
    return found


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


# ----- the manifest ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("socket_mode", [False, True])
def test_the_manifest_validates_against_slacks_schema_in_both_modes(socket_mode: bool) -> None:
    manifest = build_manifest(public_url=PUBLIC, socket_mode=socket_mode)
    jsonschema.validate(manifest, SCHEMA)
    assert manifest["settings"]["socket_mode_enabled"] is socket_mode
    assert manifest["features"]["app_home"] == {
        "home_tab_enabled": True,
        "messages_tab_enabled": True,
        "messages_tab_read_only_enabled": False,
    }
    assert manifest["features"]["bot_user"]["always_online"] is True
    assert manifest["settings"]["org_deploy_enabled"] is False
    assert manifest["settings"]["token_rotation_enabled"] is False


def test_the_manifest_sets_up_the_ai_app_surface_and_streaming() -> None:
    manifest = build_manifest(public_url=PUBLIC, socket_mode=False)
    assert manifest["features"]["assistant_view"]["assistant_description"]
    assert "chat:write" in manifest["oauth_config"]["scopes"]["bot"]  # chat.startStream and friends
    bad = {**manifest, "features": {**manifest["features"], "assistant_view": {"prompts": []}}}
    with pytest.raises(jsonschema.ValidationError):  # the schema knows the feature's shape
        jsonschema.validate(bad, SCHEMA)


def test_the_vendored_schema_rejects_what_slack_rejects() -> None:
    good = build_manifest(public_url=PUBLIC, socket_mode=False)
    for broken in (
        {**good, "display_information": {"name": "x" * 36}},
        {
            **good,
            "features": {**good["features"], "slash_commands": [{"command": "oncall", "description": "d"}]},
        },
        {**good, "settings": {**good["settings"], "interactivity": {"request_url": PUBLIC}}},
        {**good, "unknown_section": {}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA)


def test_http_mode_points_every_request_url_at_the_slack_endpoint() -> None:
    manifest = build_manifest(public_url=PUBLIC + "/", socket_mode=False)
    endpoint = PUBLIC + "/slack/events"
    assert manifest["settings"]["event_subscriptions"]["request_url"] == endpoint
    assert manifest["settings"]["interactivity"] == {"is_enabled": True, "request_url": endpoint}
    assert [c["url"] for c in manifest["features"]["slash_commands"]] == [endpoint]


def test_socket_mode_names_no_request_url_at_all() -> None:
    manifest = build_manifest(public_url=PUBLIC, socket_mode=True)
    assert [k for k, _ in _walk(manifest) if k in ("request_url", "url")] == []
    assert manifest["settings"]["interactivity"] == {"is_enabled": True}


def test_every_event_the_bot_receives_is_subscribed_and_no_other() -> None:
    listened = (
        {e for e in registrations()["event"] if isinstance(e, str)} | ingress_events() | assistant_events()
    )
    assert {"app_mention", "message", "app_home_opened"} <= listened  # the scan itself works
    assert {"assistant_thread_started", "assistant_thread_context_changed"} <= listened
    assert listened <= set(BOLT_EVENTS), f"map these Bolt events in bot.manifest.BOLT_EVENTS: {listened}"
    expected = {sub for event in listened for sub in BOLT_EVENTS[event]}
    manifest = build_manifest(public_url=PUBLIC, socket_mode=False)
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == expected
    assert expected <= set(BOT_EVENTS)


def test_every_shortcut_command_and_interactive_listener_is_declared() -> None:
    found = registrations()
    manifest = build_manifest(public_url=PUBLIC, socket_mode=False, command="/ops")
    shortcuts = manifest["features"]["shortcuts"]
    assert {s["callback_id"] for s in shortcuts} == set(found["shortcut"]) == {SHORTCUT_CALLBACK_ID}
    assert manifest_module.SHORTCUT_CALLBACK_ID == SHORTCUT_CALLBACK_ID
    assert {s["type"] for s in shortcuts} == {"message"}  # the handler reads the message it was used on
    assert found["command"], "the scan found no slash command listener"
    for pattern in found["command"]:
        for command in manifest["features"]["slash_commands"]:
            assert pattern == command["command"] or re.match(pattern, command["command"])
    assert found["action"], "buttons need interactivity"
    assert found["view"], "modals need interactivity"
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_the_bot_asks_for_exactly_the_scopes_its_events_methods_and_command_need() -> None:
    methods = web_api_methods()
    assert {"chat.postMessage", "views.open", "views.publish", "auth.test"} <= methods  # the scan works
    unmapped = methods - set(WEB_API_METHODS)
    assert not unmapped, (
        f"add the scopes these Web API methods need to bot.manifest.WEB_API_METHODS: {unmapped}"
    )
    manifest = build_manifest(public_url=PUBLIC, socket_mode=False)
    needed = {s for m in methods for s in WEB_API_METHODS[m]}
    needed |= {s for e in manifest["settings"]["event_subscriptions"]["bot_events"] for s in BOT_EVENTS[e]}
    needed.add("commands")
    needed |= set(FILE_DOWNLOAD_SCOPES)  # attached files (bot.attachments): no Web API method, a download
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed
    # Assistant threads: suggested prompts, the status line, the title (bot.assistant).
    assert {"assistant.threads.setStatus", "assistant.threads.setSuggestedPrompts"} <= methods
    assert "assistant.threads.setTitle" in methods
    assert "assistant:write" in needed
    assert "files:read" in needed
    # Linking confirms the person by their Slack profile's email (SPEC §5): users.info with the email scope.
    assert {"users.info"} <= methods
    assert {"users:read", "users:read.email"} <= needed


def test_bad_names_are_refused_and_the_bot_user_name_is_made_valid() -> None:
    with pytest.raises(ValueError, match="slash command"):
        build_manifest(public_url=PUBLIC, socket_mode=True, command="oncall")
    with pytest.raises(ValueError, match="35"):
        build_manifest(public_url=PUBLIC, socket_mode=True, name="x" * 36)
    manifest = build_manifest(public_url=PUBLIC, socket_mode=True, name="Chat Ops (prod)")
    assert manifest["features"]["bot_user"]["display_name"] == "chat-ops-prod"
    jsonschema.validate(manifest, SCHEMA)


def test_yaml_and_json_renderings_hold_the_same_manifest() -> None:
    manifest = build_manifest(public_url=PUBLIC, socket_mode=False)
    assert json.loads(render_manifest(manifest, "json")) == manifest
    assert yaml.safe_load(render_manifest(manifest, "yaml")) == manifest


# ----- the command -----------------------------------------------------------------------------------------


def _chatops(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PUBLIC_URL", "PORT")}
    # cwd: an empty folder, so no developer's .env is read; nothing but PUBLIC_URL/PORT may matter.
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "manifest", *args],
        env={**clean, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_chatops_manifest_prints_json_with_public_url_filled_in(tmp_path: Path) -> None:
    done = _chatops(tmp_path, PUBLIC_URL=PUBLIC)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    jsonschema.validate(printed, SCHEMA)
    assert printed == build_manifest(public_url=PUBLIC, socket_mode=False)
    assert printed["settings"]["event_subscriptions"]["request_url"] == PUBLIC + "/slack/events"
    assert done.stderr == ""


def test_chatops_manifest_prints_yaml_for_socket_mode(tmp_path: Path) -> None:
    done = _chatops(tmp_path, "--socket-mode", "--format", "yaml", "--command", "/ops", PUBLIC_URL=PUBLIC)
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    jsonschema.validate(printed, SCHEMA)
    assert printed["settings"]["socket_mode_enabled"] is True
    assert printed["features"]["slash_commands"][0]["command"] == "/ops"
    assert "request_url" not in done.stdout


def test_without_public_url_it_uses_localhost_and_warns_that_slack_needs_https(tmp_path: Path) -> None:
    done = _chatops(tmp_path, PORT="4321")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["settings"]["interactivity"]["request_url"] == (
        "http://localhost:4321/slack/events"
    )
    assert "needs a public https URL" in done.stderr
    assert "--socket-mode" in done.stderr
