"""The approval benchmark's push leg (issue 18): request created -> the card visible in the approver's DM.

"Created" is the approval record's `created_at` (stamped by the work-horse that ran the turn); "visible" is
when the fixture Slack received the `chat.postMessage` that put the card in bob's DM (`Call.time`, its
wall clock, this process), which it stores before answering. Both are wall clock on this host. Target: p50
< 1 s: an approver learns of a request while it is fresh, not when someone happens to look at the thread.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bench.common import Result, summary

__all__ = ["TARGET_MS", "dm_result", "dm_visible_ms"]

TARGET_MS = 1000.0


def dm_visible_ms(world: Any, user: str, approval_id: str, created_at: float) -> float | None:
    """Milliseconds from the request's creation to its card's post in `user`'s DM (None: not yet)."""
    posts = [
        c.time
        for c in world.slack.calls("chat.postMessage")
        if c.args.get("channel") in (user, "D" + user[1:])
        and approval_id in json.dumps(c.args.get("blocks") or "")
        and c.status == 200
    ]
    return (min(posts) - created_at) * 1000 if posts else None


def dm_result(records: list[dict[str, Any]]) -> Result:
    values = [r["dm_ms"] for r in records if not math.isnan(r.get("dm_ms", math.nan))]
    s = summary(values)
    return Result(
        "approval.request created->DM card visible to the approver",
        "p50 ms",
        s["p50"],
        None,
        None,
        f"< {TARGET_MS:.0f} ms",
        bool(values) and s["p50"] < TARGET_MS,
        f"{len(values)} of {len(records)} requests; p99 {s['p99']:.1f} ms, max {s['max']:.1f} ms; "
        "record created_at -> fixture Slack received chat.postMessage to bob's DM",
    )
