"""The `chatops` command line: every subcommand with a description and the settings it reads (issue 21
item 5), so `chatops <command> --help` is enough to run it. The handlers live in bot.cli."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

__all__ = ["SETTINGS", "build_parser"]

Handler = Callable[[argparse.Namespace], int]

_CREDENTIALS = (
    "REGISTRY_URL, OAUTH_ISSUER, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET (or OAUTH_CLIENT_PRIVATE_KEY), "
    "CHATOPS_SECRET_KEY, REDIS_URL"
)
# What each command reads (SPEC §3; the README has them all). Shown under "settings" in --help.
SETTINGS: dict[str, str] = {
    "serve": (
        "required: SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN with --socket-mode), "
        f"{_CREDENTIALS}"
        "; optional: PORT, PUBLIC_URL, SLACK_API_URL, APPROVALS_CHANNEL, APPROVAL_TTL_SECONDS, "
        "REGISTRY_TTL_SECONDS, REGISTRY_STALE_MAX_SECONDS, OAUTH_SCOPES, OAUTH_GROUPS_CLAIM, "
        "OAUTH_EMAIL_CLAIM, OAUTH_MATCH_EMAIL, LOG_LEVEL"
    ),
    "worker": (
        f"required: SLACK_BOT_TOKEN, ANTHROPIC_API_KEY, {_CREDENTIALS}; optional: ANTHROPIC_BASE_URL, "
        "CHATOPS_MODEL, SLACK_API_URL, WORKFLOWS_DIR, CHATOPS_TURN_CONCURRENCY, CHATOPS_MAX_STEPS, "
        "CHATOPS_MAX_TURN_SECONDS, CHATOPS_TURN_LEASE_SECONDS, LOG_LEVEL"
    ),
    "demo": (
        "none required; ANTHROPIC_API_KEY (optional) uses the real model instead of the script; "
        "CHATOPS_DEMO_WAIT_SECONDS (default 30) bounds each step"
    ),
    "registry": "required: REGISTRY_URL; optional: OAUTH_GROUPS_CLAIM, CHATOPS_HEADER_* for remote headers",
    "doctor": "every setting of serve and worker; a check whose setting is missing says `skipped: needs X`",
    "workflows": "optional: WORKFLOWS_DIR (default ./workflows)",
    "keygen": "none",
    "audit": "required: REDIS_URL",
    "stats": "required: REDIS_URL",
    "manifest": "optional: PUBLIC_URL (default http://localhost:$PORT), PORT",
    "approvals": "required: REDIS_URL",
}
_DEV = "with --dev: REDIS_URL unset starts (or finds, via ./.chatops-dev-redis) a shared embedded Redis"


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    summary: str,
    description: str,
    settings: str | None = None,
) -> argparse.ArgumentParser:
    command = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"settings (environment or ./.env): {settings or SETTINGS[name]}",
    )
    command.set_defaults(func=handler)
    return command


# Over 60 lines on purpose: the whole command line on one screen, one subcommand after another, in the order
# `chatops --help` lists them.
def build_parser(
    handlers: Mapping[str, Handler],
    since: Callable[[str], float],
    month: Callable[[str], str],
    more: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] | None = None,
) -> argparse.ArgumentParser:
    """`more` adds commands registered by their own modules (`chatops approvals`)."""
    parser = argparse.ArgumentParser(prog="chatops", description="A Slack chat-ops agent over MCP.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = _add(
        sub,
        "serve",
        handlers["serve"],
        "run the web process (Slack endpoint, OAuth, health, metrics)",
        "The `web` process: receives Slack's requests (HTTP, or Socket Mode), the OAuth callback, /healthz, "
        "/readyz and /metrics. Checks every setting, then Redis and Slack, before it listens.",
        f"{SETTINGS['serve']}; {_DEV}",
    )
    serve.add_argument("--socket-mode", action="store_true", help="receive Slack traffic over Socket Mode")
    serve.add_argument("--dev", action="store_true", help="allow embedded Redis and an ephemeral secret key")
    serve.add_argument("--host", default="0.0.0.0", help="interface to bind (default all)")  # noqa: S104

    worker = _add(
        sub,
        "worker",
        handlers["worker"],
        "run RQ workers for agent turns, approved actions and workflows",
        "The `worker` process: agent turns (a turn pool), approved actions and workflows (RQ's forking "
        "worker) and the expiry and crash sweeps. Checks every setting, then Redis and Slack, before it "
        "works.",
        f"{SETTINGS['worker']}; {_DEV}",
    )
    worker.add_argument(
        "--processes", type=int, default=1, help="forking workers and turn pools on this machine (one each)"
    )
    worker.add_argument(
        "--turns", type=int, default=None, help="turns each pool runs at once (CHATOPS_TURN_CONCURRENCY)"
    )
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument(
        "--simple", action="store_true", help="one in-process worker for every queue (no fork)"
    )
    worker.add_argument("--dev", action="store_true", help="allow embedded Redis and an ephemeral secret key")

    demo = _add(
        sub,
        "demo",
        handlers["demo"],
        "play an incident end to end in a local world (no credentials needed)",
        "Starts a local world (identity provider, registry, MCP servers, a fake Slack, a scripted model), an "
        "embedded Redis and the real serve and worker processes, and plays an incident. SIGINT or SIGTERM "
        "stops all of it.",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="leave everything running and print the environment that points at it",
    )

    registry = _add(
        sub,
        "registry",
        handlers["registry"],
        "list registry servers, or what one person would get",
        "Reads the MCP registry as the bot does: every usable server, what was skipped and why; with --as, "
        "what one person (an email, or groups) may use.",
    )
    registry.add_argument("--as", dest="as_who", help="an email, or comma-separated groups")
    registry.add_argument(
        "--channel", default=None, help="a Slack channel id, for channel-restricted servers"
    )

    doctor = _add(
        sub,
        "doctor",
        handlers["doctor"],
        "check every setting against the live services",
        "One line per check (ok, warn, BAD, skip): settings, Redis, workers listening, Slack, registry, "
        "identity provider, model, workflows. Exit 1 when anything is BAD.",
    )
    doctor.add_argument("--json", action="store_true", help="one JSON object, for monitoring")

    workflows = _add(
        sub,
        "workflows",
        handlers["workflows"],
        "list and validate the canned workflow files",
        "Loads every workflow file and says which are valid and what is wrong with the others (exit 1).",
    )
    workflows.add_argument("--dir", default=None, help="folder to check (default WORKFLOWS_DIR)")

    _add(
        sub,
        "keygen",
        handlers["keygen"],
        "print a new key for CHATOPS_SECRET_KEY",
        "Prints a new Fernet key. To rotate, put it first in CHATOPS_SECRET_KEY and keep the old ones "
        "after it.",
    )
    _audit(sub, handlers["audit"], since)
    if more is not None:
        more(sub)

    stats = _add(
        sub,
        "stats",
        handlers["stats"],
        "invocations, active users and hours saved per month",
        "Tool invocations, active users and hours saved per month, server and tool, from the audit trail.",
    )
    stats.add_argument(
        "--month", type=month, action="append", help="YYYY-MM, repeatable (default: this month and last)"
    )
    stats.add_argument(
        "--json", action="store_true", help="one JSON document instead of the tables, for dashboards"
    )

    manifest = _add(
        sub,
        "manifest",
        handlers["manifest"],
        "print the Slack app manifest for this deployment (PUBLIC_URL)",
        "Prints a Slack app manifest to paste at api.slack.com (Create New App, From a manifest); its "
        "request URLs are under PUBLIC_URL.",
    )
    manifest.add_argument("--socket-mode", action="store_true", help="for Socket Mode: no request URLs")
    manifest.add_argument("--format", choices=["json", "yaml"], default="json", help="output format")
    manifest.add_argument("--command", dest="slash_command", default="/oncall", help="slash command name")
    manifest.add_argument("--name", default="chatops", help="app name shown in Slack (at most 35 characters)")
    return parser


def _audit(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], handler: Handler, since: Callable[[str], float]
) -> None:
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--since", type=since, help="an ISO date/time (UTC unless given) or an age: 7d, 12h")
    filters.add_argument("--user", help="Slack user id or identity sub (comma-separated for several)")
    filters.add_argument("--server", help="registry name or short name, e.g. presto (comma-separated)")
    filters.add_argument("--outcome", help="e.g. failed,denied (comma-separated)")
    filters.add_argument("--kind", help="e.g. tool_call,approval_decision (comma-separated)")
    audit = _add(
        sub,
        "audit",
        handler,
        "export or follow the audit trail as JSON lines (for a SIEM)",
        "The audit trail (SPEC §9) as one JSON object per line: `export` prints and exits, `tail` follows.",
    )
    actions = audit.add_subparsers(dest="action", required=True)
    epilog = f"settings (environment or ./.env): {SETTINGS['audit']}"
    actions.add_parser(
        "export",
        parents=[filters],
        help="print matching records and exit",
        epilog=epilog,
        description="Print every stored audit record that matches the filters, one JSON object per line.",
    )
    actions.add_parser(
        "tail",
        parents=[filters],
        help="follow new records until interrupted",
        epilog=epilog,
        description="Follow the audit trail: each new matching record as one JSON line, flushed at once "
        "(with --since, first what is stored since then). Quiet while nothing happens; resumes after a "
        "Redis restart.",
    )
