"""`chatops approvals`: the requests waiting for a decision, for operators (SPEC §7, issue 18).

Oldest first, each with its age, quorum progress, when it expires and where its cards are (the thread, how
many approvers have it by DM, which channels), so an operator can see what is stuck and nudge the right
people. `--json` prints one object per line instead of the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

if TYPE_CHECKING:  # the command imports the store only when it runs (the CLI starts fast)
    from approvals.store import Approval
    from bot.settings import Settings

__all__ = ["add_approvals_command", "approval_rows", "list_pending", "render"]


def add_approvals_command(
    sub: Any, settings: Callable[[], Settings], redis_failed: Callable[[Exception], int]
) -> None:
    """Register `chatops approvals` on the CLI's subparsers (bot.cli)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(list_pending(str(settings().redis_url), as_json=args.json))
        except RedisError as exc:
            return redis_failed(exc)

    command = sub.add_parser(
        "approvals",
        help="pending approval requests: age, quorum, where the cards are",
        description="The approval requests waiting for a decision, oldest first: age, quorum progress, "
        "when each expires and where its cards are, to see what is stuck and whom to nudge.",
        epilog="settings (environment or ./.env): required: REDIS_URL",
    )
    command.add_argument("--json", action="store_true", help="one JSON object per line")
    command.set_defaults(func=run)


_READ_ONLY_KEY = b"r" * 32  # this command only reads records: nothing is sealed or verified with it


async def list_pending(redis_url: str, *, as_json: bool) -> int:
    import redis.asyncio as aioredis

    from approvals.store import ApprovalStore

    client = aioredis.Redis.from_url(redis_url)
    try:
        pending = await ApprovalStore(client, seal_key=_READ_ONLY_KEY).pending_for_groups(None)
    finally:
        await client.aclose()
    rows = approval_rows(pending, now=time.time())
    if as_json:
        sys.stdout.writelines(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)
    else:
        sys.stdout.write(render(rows))
    return 0


def approval_rows(approvals: Iterable[Approval], *, now: float) -> list[dict[str, Any]]:
    out = []
    for a in approvals:
        dms = sum(1 for c in a.cards if c.channel.startswith("D"))
        channels = sorted({c.channel for c in a.cards if not c.channel.startswith("D")} - {a.channel})
        out.append(
            {
                "id": a.id,
                "age_seconds": round(now - a.created_at),
                "expires_in_seconds": round(a.expires_at - now),
                "server": a.server,
                "tool": f"{a.short_name}.{a.tool}",
                "requester": a.requester,
                "requester_email": a.requester_email,
                "approvals": a.count,
                "quorum": a.quorum,
                "approver_groups": list(a.approver_groups),
                "thread": {"channel": a.channel, "thread_ts": a.thread_ts},
                "dms": dms,
                "channels": channels,
            }
        )
    return out


def render(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No approval requests are pending.\n"
    head = ("ID", "AGE", "EXPIRES IN", "TOOL", "REQUESTER", "APPROVALS", "CARDS")
    table = [head] + [
        (
            r["id"],
            _duration(r["age_seconds"]),
            _duration(r["expires_in_seconds"]),
            r["tool"],
            r["requester_email"] or r["requester"],
            f"{r['approvals']}/{r['quorum']} ({' or '.join(r['approver_groups'])})",
            ", ".join([f"thread in {r['thread']['channel']}", f"{r['dms']} DM(s)", *r["channels"]]),
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head) - 1)]
    lines = [
        "  ".join([*(str(v).ljust(w) for v, w in zip(row, widths, strict=False)), str(row[-1])])
        for row in table
    ]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
