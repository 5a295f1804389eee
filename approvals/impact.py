"""Impact statistics from the audit stream (SPEC §9): invocations, active users and hours saved per month,
overall, per server and per tool, plus 👍/👎 feedback; and the text table `chatops stats` prints.

- An invocation is a tool call that ran (succeeded, failed or outcome_unknown) or a finished workflow run.
- An active user asked for something: a tool call, a workflow run or an approval request under their name.
  Questions answered without any tool leave no audit record and are not counted.
- Hours saved are the recorded `minutes_saved` (set on successful calls and runs) divided by 60.
- Months are calendar months in UTC, by each record's `time`.
- Feedback (`chatops:feedback:{id}`, field = user, value = up|down; the id a turn's or a workflow run's)
  counts in the month the turn was asked: from the turn's record while it is kept, else from the audit
  records of that turn or run (approvals.calibration.feedback_id).
- The latest 👎 reasons per month (approvals.feedback_reasons) are for the operators who run this command;
  App Home never shows them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from approvals.audit import AUDIT_STREAM, AuditRecord
from approvals.calibration import WORKFLOWS_SERVER, Calibration, Verdict, feedback_id, verdict
from approvals.feedback import tally
from approvals.feedback_reasons import REASONS_PER_MONTH, Reason, latest_reasons, reason_rows
from approvals.model_bill import BILL_HEADER, Bill, add_bill, bill_lines

__all__ = [
    "WORKFLOWS_SERVER",
    "MonthStats",
    "Row",
    "Stats",
    "default_months",
    "monthly_stats",
    "render_table",
]

RAN = frozenset({"succeeded", "failed", "outcome_unknown"})
REQUEST_KINDS = frozenset({"tool_call", "workflow_run", "approval_requested"})
PAGE = 1000
SKEW_MS = 5 * 60 * 1000  # see approvals.audit_query: stream ids only narrow the range
CLICK_PREFIXES = ("approve (", "reject (")  # approvals.service._audit_click: "{action} (requested by …"
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


@dataclass
class Row:
    invocations: int = 0
    users: set[str] = field(default_factory=set)
    minutes_saved: float = 0.0

    @property
    def active_users(self) -> int:
        return len(self.users)

    @property
    def hours_saved(self) -> float:
        return self.minutes_saved / 60.0


@dataclass
class MonthStats:
    month: str
    total: Row = field(default_factory=Row)
    servers: dict[str, Row] = field(default_factory=dict)
    tools: dict[tuple[str, str], Row] = field(default_factory=dict)
    feedback_up: int = 0
    feedback_down: int = 0
    bill: Bill = field(default_factory=Bill)  # the model's usage (approvals.model_bill)
    bill_servers: dict[str, Bill] = field(default_factory=dict)


@dataclass
class Stats:
    months: list[MonthStats]
    feedback_up: int = 0  # all feedback stored, including turns outside these months
    feedback_down: int = 0
    calibration: Calibration = field(default_factory=Calibration)
    reasons: dict[str, list[Reason]] = field(default_factory=dict)  # month -> its latest 👎 reasons

    def month(self, month: str) -> MonthStats:
        return next(m for m in self.months if m.month == month)


def month_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m")


def default_months(now: float) -> list[str]:
    """The previous month and the current one, oldest first."""
    today = datetime.fromtimestamp(now, tz=UTC)
    previous = (today.year - 1, 12) if today.month == 1 else (today.year, today.month - 1)
    return [f"{previous[0]:04d}-{previous[1]:02d}", today.strftime("%Y-%m")]


def check_month(text: str) -> str:
    if not _MONTH.match(text):
        raise ValueError(f"{text!r} is not a month; write it as YYYY-MM, e.g. 2026-11")
    return text


def _month_start_ms(month: str, *, next_month: bool = False) -> int:
    year, number = (int(p) for p in month.split("-"))
    if next_month:
        year, number = (year + 1, 1) if number == 12 else (year, number + 1)
    return int(datetime(year, number, 1, tzinfo=UTC).timestamp() * 1000)


def _count(row: Row, user: str, invocation: bool, minutes: float) -> None:
    if user:
        row.users.add(user)
    row.invocations += int(invocation)
    row.minutes_saved += minutes


def add_record(
    stats: Mapping[str, MonthStats], record: Mapping[str, Any], calibration: Calibration | None = None
) -> None:
    """Count one audit record into its month, if that month is being counted."""
    kind, outcome = record.get("kind"), record.get("outcome")
    month = stats.get(month_of(float(record.get("time") or 0)))
    if month is not None:
        add_bill(month.bill, month.bill_servers, record)
    if month is None or kind not in REQUEST_KINDS:
        return
    invocation = (kind == "tool_call" and outcome in RAN) or kind == "workflow_run"
    minutes = float(record.get("minutes_saved") or 0.0) if kind != "approval_requested" else 0.0
    user = str(record.get("user") or "")
    server = WORKFLOWS_SERVER if kind == "workflow_run" else str(record.get("server") or "")
    tool = str(record.get("tool") or "")
    _count(month.total, user, invocation, minutes)
    if kind == "approval_requested":
        return  # the request is activity; the tool call itself is counted when (if) it runs
    _count(month.servers.setdefault(server, Row()), user, invocation, minutes)
    _count(month.tools.setdefault((server, tool), Row()), user, invocation, minutes)
    if calibration is not None and invocation:
        calibration.add(month.month, server, tool, feedback_id(record), minutes)


async def monthly_stats(redis: aioredis.Redis, *, months: Iterable[str]) -> Stats:
    wanted = sorted({check_month(m) for m in months})
    by_month = {m: MonthStats(m) for m in wanted}
    calibration = Calibration()
    turn_times: dict[str, float] = {}  # request id -> earliest record time, to place feedback in a month
    # Stream ids (Redis' append time) narrow the read to the months asked for, with a margin for skew.
    start = f"{max(0, _month_start_ms(wanted[0]) - SKEW_MS)}-0" if wanted else "+"
    end = f"{_month_start_ms(wanted[-1], next_month=True) + SKEW_MS}-0" if wanted else "-"
    while wanted:
        # The client's stubs type stream replies loosely; entries are (id, {field: value}).
        rows: Any = await redis.xrange(AUDIT_STREAM, min=start, max=end, count=PAGE)
        for _, fields in rows or []:
            try:
                record = json.loads(fields.get(b"record", fields.get("record")))
            except (TypeError, ValueError):
                continue  # not a record; audit_query reports these, stats just skip them
            if not isinstance(record, dict):
                continue
            add_record(by_month, record, calibration)
            request_id, ts = feedback_id(record), float(record.get("time") or 0)
            if request_id and ts and ts < turn_times.get(request_id, float("inf")):
                turn_times[request_id] = ts
        if len(rows or []) < PAGE:
            break
        start = "(" + str_if_bytes(rows[-1][0])
    stats = Stats([by_month[m] for m in wanted], calibration=calibration)
    calibration.settle(await _add_feedback(redis, stats, by_month, turn_times))
    stats.reasons = await latest_reasons(redis, wanted, turn_times, calibration.calls)
    return stats


async def _add_feedback(
    redis: aioredis.Redis, stats: Stats, by_month: Mapping[str, MonthStats], turn_times: Mapping[str, float]
) -> dict[str, Verdict]:
    """Count the votes into their months; each rated turn's verdict (approvals.calibration)."""
    verdicts: dict[str, Verdict] = {}
    keys = [str_if_bytes(k) async for k in redis.scan_iter(match="chatops:feedback:*", count=PAGE)]
    for offset in range(0, len(keys), PAGE):
        chunk = keys[offset : offset + PAGE]
        async with redis.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hvals(key)
                pipe.hget("chatops:turn:" + key.removeprefix("chatops:feedback:"), "created_at")
            answers = await pipe.execute()
        for key, votes, created in zip(chunk, answers[::2], answers[1::2], strict=True):
            turn_id = key.removeprefix("chatops:feedback:")
            up, down = tally(votes)
            verdicts[turn_id] = verdict(up, down)
            stats.feedback_up, stats.feedback_down = stats.feedback_up + up, stats.feedback_down + down
            when = float(str_if_bytes(created)) if created else turn_times.get(turn_id)
            month = by_month.get(month_of(when)) if when else None
            if month is not None:
                month.feedback_up += up
                month.feedback_down += down
    return verdicts


def metrics_from_audit(record: AuditRecord | Mapping[str, Any]) -> list[tuple[str, dict[str, str], float]]:
    """The (metric, labels, value) samples one audit record implies: tool calls, workflow runs, approvals
    and minutes saved are counted exactly where they are audited (`bot.metrics.Metrics.emit` writes them)."""
    r = record.to_json() if isinstance(record, AuditRecord) else record
    kind, outcome = str(r.get("kind") or ""), str(r.get("outcome") or "")
    server, tool = str(r.get("server") or ""), str(r.get("tool") or "")
    seconds = float(r.get("latency_ms") or 0.0) / 1000.0
    minutes = float(r.get("minutes_saved") or 0.0)
    out: list[tuple[str, dict[str, str], float]] = []
    if kind == "tool_call":
        out.append(("chatops_tool_calls_total", {"server": server, "tool": tool, "outcome": outcome}, 1.0))
        if seconds > 0:  # a call reported lost by the sweeper (outcome_unknown) has no latency
            out.append(("chatops_tool_call_seconds", {"server": server, "tool": tool}, seconds))
    elif kind == "workflow_run":
        out.append(("chatops_workflow_runs_total", {"workflow": tool, "outcome": outcome}, 1.0))
        server = WORKFLOWS_SERVER
    elif kind == "approval_requested":
        out.append(("chatops_approvals_total", {"outcome": "requested"}, 1.0))
    elif kind == "approval_expired":
        out.append(("chatops_approvals_total", {"outcome": "expired"}, 1.0))
    elif kind == "approval_withdrawn":
        out.append(("chatops_approvals_total", {"outcome": "withdrawn"}, 1.0))
    elif kind == "approval_decision" and str(r.get("detail") or "").startswith(CLICK_PREFIXES):
        # Only the per-click record counts: a rejection also writes a second, summary decision record.
        if outcome in ("approved", "rejected", "denied"):
            out.append(("chatops_approvals_total", {"outcome": outcome}, 1.0))
        if outcome in ("approved", "rejected") and seconds > 0:
            out.append(("chatops_approval_decision_seconds", {}, seconds))
    if minutes > 0 and kind in ("tool_call", "workflow_run"):
        out.append(("chatops_minutes_saved_total", {"server": server, "tool": tool}, minutes))
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    # Text columns left-aligned, numbers right-aligned, like a dashboard's table.
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = [all(_is_number(r[i]) for r in rows) and bool(rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)
        )

    body = [line(r).rstrip() for r in rows] or ["(none)"]
    return [line(header).rstrip(), "  ".join("-" * w for w in widths), *body]


def _is_number(cell: str) -> bool:
    return bool(re.fullmatch(r"[\d.,/]+", cell))


def _cells(row: Row) -> list[str]:
    return [f"{row.invocations:,}", f"{row.active_users:,}", f"{row.hours_saved:,.2f}"]


def render_table(stats: Stats) -> str:
    numbers = ["Invocations", "Active users", "Hours saved"]
    out = ["Impact by month"]
    out += _table(
        ["Month", *numbers, "Feedback up/down"],
        [[m.month, *_cells(m.total), f"{m.feedback_up}/{m.feedback_down}"] for m in stats.months],
    )
    out += ["", "By server"]
    out += _table(
        ["Month", "Server", *numbers],
        [[m.month, s, *_cells(r)] for m in stats.months for s, r in sorted(m.servers.items())],
    )
    out += ["", "By tool"]
    out += _table(
        ["Month", "Server", "Tool", *numbers],
        [[m.month, s, t, *_cells(r)] for m in stats.months for (s, t), r in sorted(m.tools.items())],
    )
    out += ["", "Model usage by month (tokens as billed; USD from the price table in settings)"]
    out += _table(["Month", *BILL_HEADER], bill_lines([([m.month], m.bill) for m in stats.months]))
    out += ["", "Model usage by server (a turn's usage split evenly over the servers it called)"]
    rows = [([m.month, s], b) for m in stats.months for s, b in sorted(m.bill_servers.items())]
    out += _table(["Month", "Server", *BILL_HEADER], bill_lines(rows))
    up, down = stats.feedback_up, stats.feedback_down
    out += ["", f"Feedback stored (all answers and workflow runs): {up} up, {down} down"]
    return "\n".join([*out, "", *_calibrated(stats)]) + "\n"


def _calibrated(stats: Stats) -> list[str]:
    cal = stats.calibration
    out = ["Calibrated by feedback (minutes count only for turns and workflow runs not marked unhelpful)"]
    out += _table(
        ["Month", "Hours saved (owners' estimate)", "Calibrated hours"],
        [
            [m.month, f"{m.total.hours_saved:,.2f}", f"{cal.hours.get(m.month, 0.0):,.2f}"]
            for m in stats.months
        ],
    )
    out += ["", "Owners' estimate beside observed helpfulness, per tool"]
    rows = []
    for (month, server, tool), rating in sorted(cal.tools.items()):
        rate = rating.helpful_rate
        shown = f"{rate:.0%} of {rating.rated}" if rate is not None else "no ratings"
        rows.append([month, server, tool, f"{rating.estimate_minutes:g}", shown])
    out += _table(["Month", "Server", "Tool", "Estimate (min per call)", "Helpful"], rows)
    out += [
        "",
        f"Why answers and runs were marked unhelpful (the latest {REASONS_PER_MONTH} a month, newest first)",
    ]
    out += _table(["Month", "Given", "About", "Reason"], reason_rows(stats.reasons))
    return out
