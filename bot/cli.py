"""The `chatops` command: serve, worker, demo, registry, doctor, keygen, audit, approvals, stats, manifest.

Each subcommand reads settings once, for its role, and stops with one line naming a missing or malformed
variable (SPEC §3).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from bot import netguard
from bot.approvals_cli import add_approvals_command
from bot.settings import ConfigError, Role, Settings, load_settings

__all__ = ["main"]


def _settings(role: Role, *, dev: bool = False) -> Settings:
    settings = load_settings()
    if dev:
        return settings.require(Role.DEV)
    return settings.require(role)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bot.identity import whoami
    from bot.logs import setup_logging
    from bot.web import build_web

    role = Role.WEB_SOCKET if args.socket_mode else Role.WEB_HTTP
    settings = _settings(role, dev=args.dev)
    setup_logging(settings.log_level)
    with _dev_redis(settings, args.dev) as settings:
        # Checked here too (the app's lifespan checks again): refused before uvicorn starts, the operator
        # gets one line naming REDIS_URL instead of a startup traceback (SPEC §3).
        _require_safe_redis(settings)
        bot = whoami(settings)
        app = build_web(settings, bot, slack_http=not args.socket_mode)
        if args.socket_mode:
            return asyncio.run(_serve_socket_mode(settings, bot, app))
        uvicorn.run(app, host=args.host, port=settings.port, log_level="warning", access_log=False)
    return 0


def _require_safe_redis(settings: Settings) -> None:
    from bot.redis_check import require_safe_redis
    from bot.redis_clients import sync_client

    connection = sync_client(str(settings.redis_url), socket_connect_timeout=5)
    try:
        require_safe_redis(connection)
    except RedisError as exc:  # the message names host and port, never the URL's password
        raise ConfigError("REDIS_URL", f"Redis did not answer: {type(exc).__name__}: {exc}") from None
    finally:
        connection.close()


async def _serve_socket_mode(settings: Settings, bot: object, app: Any) -> int:
    import uvicorn
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    server = uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=settings.port, log_level="warning"))  # noqa: S104
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    state = app.state.chatops
    app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
    handler = AsyncSocketModeHandler(state["bolt"].app, app_token)
    await handler.connect_async()  # type: ignore[no-untyped-call]
    try:
        await serving
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from bot.identity import whoami
    from bot.logs import setup_logging
    from bot.worker import run_worker

    settings = _settings(Role.WORKER, dev=args.dev)
    setup_logging(settings.log_level)
    with _dev_redis(settings, args.dev) as settings:
        return run_worker(
            settings,
            whoami(settings),
            processes=args.processes,
            burst=args.burst,
            simple=args.simple,
            turns=args.turns,
        )


def _devtools_missing() -> int:
    # The wheel ships the runtime only: the demo's fake world and the embedded Redis live in the checkout.
    print(
        "chatops: the demo and --dev run from a source checkout (git clone, then `make setup`)",
        file=sys.stderr,
    )
    return 2


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from devtools.demo import run_demo
    except ImportError:
        return _devtools_missing()
    return run_demo(keep=args.keep)


def cmd_workflows(args: argparse.Namespace) -> int:
    from agent.workflow import load_workflows

    folder = args.dir or load_settings().workflows_dir
    workflows, errors = load_workflows(folder)
    for name, workflow in sorted(workflows.items()):
        steps = " → ".join(s.call for s in workflow.steps)
        print(f"ok   {name}: {workflow.description} ({workflow.minutes_saved:g} min saved; {steps})")
    for error in errors:
        print(f"BAD  {error}")
    print(f"{len(workflows)} workflow(s) loaded from {folder}, {len(errors)} problem(s)")
    return 1 if errors else 0


def cmd_keygen(_: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from bot.registry_cli import show_registry

    settings = load_settings()
    if settings.registry_url is None:
        raise ConfigError("REGISTRY_URL", "is required")
    return asyncio.run(show_registry(settings, as_who=args.as_who, channel=args.channel))


def cmd_doctor(_: argparse.Namespace) -> int:
    from bot.doctor import run_doctor

    return asyncio.run(run_doctor(load_settings()))


def cmd_audit(args: argparse.Namespace) -> int:
    """`audit export` prints matching records and exits; `audit tail` follows new ones until interrupted.
    One JSON object per line, flushed per line, for a SIEM to ingest."""
    import json

    from approvals.audit_query import AuditFilter, export, tail
    from bot.redis_clients import async_client

    settings = _settings(Role.CLI)

    async def run() -> None:
        client = async_client(str(settings.redis_url))
        try:
            if args.action == "export":
                records = export(
                    client,
                    since=args.since,
                    user=args.user,
                    server=args.server,
                    outcome=args.outcome,
                    kind=args.kind,
                )
            else:
                filters = AuditFilter.of(
                    since=args.since, user=args.user, server=args.server, outcome=args.outcome, kind=args.kind
                )
                records = tail(client, filters=filters, block_ms=5000)
            async for record in records:
                sys.stdout.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
                if args.action == "tail":
                    sys.stdout.flush()  # a follower must see each record as it happens
        finally:
            await client.aclose()

    try:
        asyncio.run(run())
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except RedisError as exc:
        return _redis_failed(exc)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    import time

    from approvals.impact import default_months, monthly_stats, render_table
    from bot.redis_clients import async_client

    settings = _settings(Role.CLI)
    months = args.month or default_months(time.time())

    async def run() -> str:
        client = async_client(str(settings.redis_url))
        try:
            return render_table(await monthly_stats(client, months=months))
        finally:
            await client.aclose()

    try:
        sys.stdout.write(asyncio.run(run()))
    except RedisError as exc:
        return _redis_failed(exc)
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    from bot.manifest import build_manifest, render_manifest

    settings = load_settings()  # only PUBLIC_URL (or PORT) is used; nothing is required
    try:
        manifest = build_manifest(
            public_url=settings.base_url,
            socket_mode=args.socket_mode,
            command=args.slash_command,
            name=args.name,
        )
    except ValueError as exc:
        print(f"chatops: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render_manifest(manifest, args.format))
    if not args.socket_mode and not settings.base_url.startswith("https://"):
        # Slack verifies request URLs over https; say so now rather than at paste time.
        print(
            f"chatops: warning: PUBLIC_URL is {settings.base_url}; Slack needs a public https URL "
            "(set PUBLIC_URL, or use --socket-mode)",
            file=sys.stderr,
        )
    return 0


def _redis_failed(exc: Exception) -> int:
    # One line, like a configuration error; the URL is not repeated (it may hold a password).
    print(f"chatops: Redis (REDIS_URL) failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


def _since(text: str) -> float:
    import time

    from approvals.audit_query import parse_since

    try:
        return parse_since(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _month(text: str) -> str:
    from approvals.impact import check_month

    try:
        return check_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _dev_redis:  # used as a context manager, hence the lower-case name
    """In --dev mode without REDIS_URL, run an embedded Redis for the life of the command."""

    def __init__(self, settings: Settings, dev: bool) -> None:
        self._settings = settings
        self._dev = dev
        self._cm: object = None

    def __enter__(self) -> Settings:
        settings = self._settings
        if self._dev and settings.redis_url is None:
            from devtools.embedded import embedded_redis

            cm = embedded_redis()
            url = cm.__enter__()
            self._cm = cm
            settings = settings.model_copy(update={"redis_url": url})
        if self._dev and not settings.chatops_secret_key:
            from cryptography.fernet import Fernet
            from pydantic import SecretStr

            # Dev only: an ephemeral key, so links do not survive a restart.
            settings = settings.model_copy(
                update={"chatops_secret_key": (SecretStr(Fernet.generate_key().decode()),)}
            )
        return settings

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)  # type: ignore[attr-defined]


# Over 60 lines on purpose: one declarative table of every subcommand and flag, read top to bottom like the
# `--help` it produces; split up, the CLI would be spread over helpers that each declare three lines.
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatops", description="A Slack chat-ops agent over MCP.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web process (Slack endpoint, OAuth, health, metrics)")
    serve.add_argument("--socket-mode", action="store_true", help="receive Slack traffic over Socket Mode")
    serve.add_argument("--dev", action="store_true", help="allow embedded Redis and an ephemeral secret key")
    serve.add_argument("--host", default="0.0.0.0", help="interface to bind (default all)")  # noqa: S104
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run RQ workers for agent turns, approved actions and workflows")
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
    worker.set_defaults(func=cmd_worker)

    demo = sub.add_parser("demo", help="play an incident end to end in a local world (no credentials needed)")
    demo.add_argument("--keep", action="store_true", help="leave everything running afterwards")
    demo.set_defaults(func=cmd_demo)

    registry = sub.add_parser("registry", help="list registry servers, or what one person would get")
    registry.add_argument("--as", dest="as_who", help="an email, or comma-separated groups")
    registry.add_argument(
        "--channel", default=None, help="a Slack channel id, for channel-restricted servers"
    )
    registry.set_defaults(func=cmd_registry)

    doctor = sub.add_parser("doctor", help="check every setting against the live services")
    doctor.set_defaults(func=cmd_doctor)

    workflows = sub.add_parser("workflows", help="list and validate the canned workflow files")
    workflows.add_argument("--dir", default=None, help="folder to check (default WORKFLOWS_DIR)")
    workflows.set_defaults(func=cmd_workflows)

    keygen = sub.add_parser("keygen", help="print a new key for CHATOPS_SECRET_KEY")
    keygen.set_defaults(func=cmd_keygen)

    audit = sub.add_parser("audit", help="export or follow the audit trail as JSON lines (for a SIEM)")
    audit.add_argument("action", choices=["export", "tail"], help="export: print and exit; tail: follow")
    audit.add_argument("--since", type=_since, help="an ISO date/time (UTC unless given) or an age: 7d, 12h")
    audit.add_argument("--user", help="Slack user id or identity sub (comma-separated for several)")
    audit.add_argument("--server", help="registry name or short name, e.g. presto (comma-separated)")
    audit.add_argument("--outcome", help="e.g. failed,denied (comma-separated)")
    audit.add_argument("--kind", help="e.g. tool_call,approval_decision (comma-separated)")
    audit.set_defaults(func=cmd_audit)

    add_approvals_command(sub, lambda: _settings(Role.CLI), _redis_failed)

    stats = sub.add_parser("stats", help="invocations, active users and hours saved per month")
    stats.add_argument(
        "--month", type=_month, action="append", help="YYYY-MM, repeatable (default: this month and last)"
    )
    stats.set_defaults(func=cmd_stats)

    manifest = sub.add_parser(
        "manifest", help="print the Slack app manifest for this deployment (PUBLIC_URL)"
    )
    manifest.add_argument("--socket-mode", action="store_true", help="for Socket Mode: no request URLs")
    manifest.add_argument("--format", choices=["json", "yaml"], default="json", help="output format")
    manifest.add_argument("--command", dest="slash_command", default="/oncall", help="slash command name")
    manifest.add_argument("--name", default="chatops", help="app name shown in Slack (at most 35 characters)")
    manifest.set_defaults(func=cmd_manifest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    netguard.install_if_requested()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"chatops: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
