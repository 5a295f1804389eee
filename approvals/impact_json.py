"""`chatops stats --json`: the same figures as the table (approvals.impact), as one JSON document for the
dashboards and scripts of the platform team that runs this, so nobody has to parse a text table.

Shape (numbers as numbers, hours to two decimals like the table; months oldest first):
    {"months": [{"month", "invocations", "active_users", "hours_saved", "calibrated_hours",
                 "feedback": {"up", "down"},
                 "servers": [{"server", "invocations", "active_users", "hours_saved"}],
                 "tools": [{"server", "tool", "invocations", "active_users", "hours_saved",
                            "estimate_minutes", "rated", "helpful_rate"}],
                 "model_usage": {"turns", "input", "cache_write", "cache_read", "output", "usd"},
                 "model_usage_by_server": [{"server", ...model_usage}],
                 "unhelpful_reasons": [{"given", "about", "reason"}]}],
     "feedback_stored": {"up", "down"}}
A tool's `helpful_rate` is null while no answer or run that used it has been rated. Reasons are the table's:
no author, flattened, control characters gone, cut (approvals.feedback_reasons).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from approvals.impact import MonthStats, Row, Stats
from approvals.model_bill import Bill

__all__ = ["render_json", "stats_document"]


def render_json(stats: Stats) -> str:
    return json.dumps(stats_document(stats), indent=2, ensure_ascii=False) + "\n"


def stats_document(stats: Stats) -> dict[str, Any]:
    return {
        "months": [_month(stats, m) for m in stats.months],
        "feedback_stored": {"up": stats.feedback_up, "down": stats.feedback_down},
    }


def _month(stats: Stats, m: MonthStats) -> dict[str, Any]:
    ratings = {(s, t): r for (month, s, t), r in stats.calibration.tools.items() if month == m.month}
    tools = []
    for (server, tool), row in sorted(m.tools.items()):
        rating = ratings.get((server, tool))
        rate = rating.helpful_rate if rating is not None else None
        tools.append(
            {
                "server": server,
                "tool": tool,
                **_row(row),
                "estimate_minutes": rating.estimate_minutes if rating is not None else None,
                "rated": rating.rated if rating is not None else 0,
                "helpful_rate": round(rate, 4) if rate is not None else None,
            }
        )
    return {
        "month": m.month,
        **_row(m.total),
        "calibrated_hours": round(stats.calibration.hours.get(m.month, 0.0), 2),
        "feedback": {"up": m.feedback_up, "down": m.feedback_down},
        "servers": [{"server": s, **_row(r)} for s, r in sorted(m.servers.items())],
        "tools": tools,
        "model_usage": _bill(m.bill),
        "model_usage_by_server": [{"server": s, **_bill(b)} for s, b in sorted(m.bill_servers.items())],
        "unhelpful_reasons": [
            {
                "given": datetime.fromtimestamp(r.at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "about": list(r.about),
                "reason": r.text,
            }
            for r in stats.reasons.get(m.month, [])
        ],
    }


def _row(row: Row) -> dict[str, Any]:
    return {
        "invocations": row.invocations,
        "active_users": row.active_users,
        "hours_saved": round(row.hours_saved, 2),
    }


def _bill(bill: Bill) -> dict[str, Any]:
    u = bill.usage
    return {
        "turns": bill.turns,
        "input": u.input,
        "cache_write": u.cache_write,
        "cache_read": u.cache_read,
        "output": u.output,
        "usd": round(bill.dollars, 6),
    }
