"""The `chatops` command: serve, worker, demo, registry, doctor, keygen, audit, approvals, stats, manifest.

Each subcommand reads settings once, for its role, and stops with one line naming a missing or malformed
variable (SPEC §3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from redis.exceptions import RedisError

from bot import netguard
from bot.approvals_cli import add_approvals_command
from bot.settings import ConfigError, Role, Settings, load_settings
from bot.stopping import Stopped, die_by, raise_if_requested, stop_on_signals

__all__ = ["main", "run"]

DEV_SECRET_KEY = "chatops:dev:secret-key"

log = logging.getLogger("bot.cli")


def _settings(role: Role, *, dev: bool = False) -> Settings:
    return load_settings(Role.DEV if dev else role)  # every problem at once (ConfigErrors)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bot.logs import setup_logging
    from bot.preflight import preflight
    from bot.web import build_web

    role = Role.WEB_SOCKET if args.socket_mode else Role.WEB_HTTP
    settings = _settings(role, dev=args.dev)
    setup_logging(settings.log_level)
    with _dev_redis(settings, args.dev) as settings:
        # Redis then Slack, as doctor checks them: refused before uvicorn starts, the operator gets one line
        # naming the variable instead of a startup traceback (SPEC §3). The app's lifespan checks Redis
        # again and logs its warnings, once.
        bot = preflight(settings)
        app = build_web(settings, bot, slack_http=not args.socket_mode)
        if args.socket_mode:
            return asyncio.run(_serve_socket_mode(settings, bot, app))
        sock = _listen(args.host, settings.port)
        raise_if_requested()  # from here uvicorn owns the signals
        log.info("listening on http://%s:%d (PUBLIC_URL %s)", args.host, settings.port, settings.base_url)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        server.run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn: a busy port is one line naming PORT, not uvicorn's errno 98."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError("PORT", f"{host}:{port} cannot be used ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


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
    from bot.logs import setup_logging
    from bot.preflight import preflight
    from bot.worker import run_worker

    settings = _settings(Role.WORKER, dev=args.dev)
    setup_logging(settings.log_level)
    with _dev_redis(settings, args.dev) as settings:
        bot = preflight(settings, model=True)  # as serve and doctor: one line, exit 2
        raise_if_requested()  # from here RQ owns the signals (warm shutdown)
        return run_worker(
            settings,
            bot,
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


def cmd_doctor(args: argparse.Namespace) -> int:
    from bot.doctor import run_doctor

    return asyncio.run(run_doctor(load_settings(), as_json=args.json))


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
    from approvals.impact_json import render_json
    from bot.redis_clients import async_client

    settings = _settings(Role.CLI)
    months = args.month or default_months(time.time())
    render = render_json if args.json else render_table

    async def run() -> str:
        client = async_client(str(settings.redis_url))
        try:
            return render(await monthly_stats(client, months=months))
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


@contextlib.contextmanager
def _dev_redis(settings: Settings, dev: bool) -> Iterator[Settings]:
    """In --dev mode without REDIS_URL, the embedded Redis this folder's --dev processes share (started by
    the first, for as long as it runs); without CHATOPS_SECRET_KEY, one ephemeral key they share too."""
    if not dev:
        yield settings
        return
    with contextlib.ExitStack() as stack:
        if settings.redis_url is None:
            from devtools.embedded import shared_embedded_redis

            shared = stack.enter_context(shared_embedded_redis(Path.cwd()))
            print(f"chatops: {shared.describe()}", file=sys.stderr, flush=True)
            settings = settings.model_copy(update={"redis_url": shared.url})
        if not settings.chatops_secret_key:
            settings = settings.model_copy(update={"chatops_secret_key": (_dev_secret_key(settings),)})
        yield settings


def _dev_secret_key(settings: Settings) -> SecretStr:
    """Dev only: an ephemeral key kept in the dev Redis (the first process makes it), so every --dev
    process reads what another sealed; links do not survive the Redis."""
    from cryptography.fernet import Fernet

    from bot.preflight import check_redis
    from bot.redis_clients import sync_client

    check_redis(settings)  # one line naming REDIS_URL if it does not answer
    with sync_client(str(settings.redis_url)) as client:
        client.set(DEV_SECRET_KEY, Fernet.generate_key(), nx=True)
        key = client.get(DEV_SECRET_KEY)
    return SecretStr(key.decode() if isinstance(key, bytes) else str(key))


# Over 60 lines on purpose: one declarative table of every subcommand and flag, read top to bottom like the
# `--help` it produces; split up, the CLI would be spread over helpers that each declare three lines.
def build_parser() -> argparse.ArgumentParser:
    from bot.cli_parser import build_parser as parser

    handlers = {
        "serve": cmd_serve,
        "worker": cmd_worker,
        "demo": cmd_demo,
        "registry": cmd_registry,
        "doctor": cmd_doctor,
        "workflows": cmd_workflows,
        "keygen": cmd_keygen,
        "audit": cmd_audit,
        "stats": cmd_stats,
        "manifest": cmd_manifest,
    }
    return parser(
        handlers,
        since=_since,
        month=_month,
        more=lambda sub: add_approvals_command(sub, lambda: _settings(Role.CLI), _redis_failed),
    )


def main(argv: Sequence[str] | None = None) -> int:
    netguard.install_if_requested()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():  # one line per variable (ConfigErrors)
            print(f"chatops: configuration error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def run() -> None:
    """The console script: stop signals unwind everything the command started, then end the process by
    that signal (bot.stopping)."""
    stop_on_signals()
    try:
        code = main()
    except Stopped as stop:
        sys.stdout.flush()
        die_by(stop.signum)
        code = 128 + stop.signum  # not reached: the signal ends the process
    sys.exit(code)


if __name__ == "__main__":
    run()
