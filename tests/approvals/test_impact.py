"""Impact statistics (SPEC §9): exact numbers per month, server and tool from a known set of audit records,
feedback placed in the month of its turn, and the table `chatops stats` prints."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from approvals.audit import Audit, AuditRecord
from approvals.feedback import Feedback
from approvals.impact import WORKFLOWS_SERVER, Stats, check_month, default_months, monthly_stats, render_table
from bot.cli import main

PRESTO, SPARK = "io.example/presto", "io.example/spark"


def months_now() -> tuple[str, str]:
    # Stream ids are append times, so the records' own times must lie near now: use this month and the last.
    previous, current = default_months(time.time())
    return previous, current


def at(month: str, day: int, hour: int = 12) -> float:
    year, number = (int(p) for p in month.split("-"))
    return datetime(year, number, day, hour, tzinfo=UTC).timestamp()


def rec(kind: str, outcome: str, user: str, when: float, **extra: Any) -> AuditRecord:
    return AuditRecord(kind=kind, outcome=outcome, user=user, time=when, **extra)  # type: ignore[arg-type]


def presto_call(when: float, tool: str, turn: str, minutes: float = 0) -> AuditRecord:
    """Alice's successful call of a presto tool in turn `turn`."""
    return rec(
        "tool_call",
        "succeeded",
        "U0ALICE",
        when,
        server=PRESTO,
        tool=tool,
        minutes_saved=minutes,
        request_id=turn,
    )


def known_set_at(redis_url: str, feedback: dict[str, dict[str, str]] | None = None) -> tuple[str, str]:
    """`write_known_set` from a synchronous test (one that runs the CLI), with feedback per turn."""

    async def write() -> tuple[str, str]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            months = await write_known_set(client)
            for turn, votes in (feedback or {}).items():
                for user, vote in votes.items():
                    await client.hset(f"chatops:feedback:{turn}", user, vote)
            return months
        finally:
            await client.aclose()

    return asyncio.run(write())


async def write_known_set(redis: aioredis.Redis) -> tuple[str, str]:
    previous, current = months_now()
    audit = Audit(redis)
    records = [
        # previous month: alice twice on presto (one failed), bob once on spark
        rec(
            "tool_call",
            "succeeded",
            "U0ALICE",
            at(previous, 3),
            server=PRESTO,
            tool="query_history",
            minutes_saved=5,
            request_id="t-prev-1",
        ),
        rec("tool_call", "failed", "U0ALICE", at(previous, 4), server=PRESTO, tool="query_history"),
        rec(
            "tool_call",
            "succeeded",
            "U0BOB",
            at(previous, 5),
            server=SPARK,
            tool="app_status",
            minutes_saved=10,
        ),
        # current month: carol kills a query after approval, a workflow run, a lost call, noise
        rec("approval_requested", "pending", "U0CAROL", at(current, 1), server=PRESTO, tool="kill_query"),
        rec(
            "approval_decision",
            "approved",
            "U0DAVE",
            at(current, 1),
            server=PRESTO,
            tool="kill_query",
            detail="approve (requested by U0CAROL): approved",
        ),
        rec(
            "tool_call",
            "succeeded",
            "U0CAROL",
            at(current, 1, 13),
            server=PRESTO,
            tool="kill_query",
            minutes_saved=15,
            request_id="t-cur-1",
        ),
        rec(
            "workflow_run",
            "succeeded",
            "U0ALICE",
            at(current, 2),
            tool="restart-failed-dag",
            minutes_saved=30,
        ),
        rec("tool_call", "outcome_unknown", "U0ALICE", at(current, 2, 14), server=SPARK, tool="kill_app"),
        rec("tool_call", "denied", "U0ERIN", at(current, 2, 15), server=SPARK, tool="kill_app"),
        rec("account_link", "succeeded", "U0ERIN", at(current, 1)),
        # two months ago: outside the default window
        rec(
            "tool_call",
            "succeeded",
            "U0ERIN",
            at(previous, 1) - 40 * 86400,
            server=PRESTO,
            tool="query_history",
            minutes_saved=5,
        ),
    ]
    for record in records:
        await audit.record(record)
    return previous, current


async def test_monthly_stats_are_exact_per_month_server_and_tool(aredis: aioredis.Redis) -> None:
    previous, current = await write_known_set(aredis)
    stats = await monthly_stats(aredis, months=[current, previous])
    assert [m.month for m in stats.months] == [previous, current]

    prev = stats.month(previous)
    assert (prev.total.invocations, prev.total.active_users, prev.total.minutes_saved) == (3, 2, 15)
    assert prev.total.hours_saved == 0.25
    assert (prev.servers[PRESTO].invocations, prev.servers[PRESTO].active_users) == (2, 1)
    assert prev.servers[PRESTO].minutes_saved == 5
    assert (prev.servers[SPARK].invocations, prev.servers[SPARK].minutes_saved) == (1, 10)
    assert prev.tools[(PRESTO, "query_history")].invocations == 2

    cur = stats.month(current)
    # kill_query, the workflow run and the lost call ran; the denied call did not, but Erin asked for it, so
    # she is active. Dave only approved someone else's request: a decision is not a request.
    assert cur.total.invocations == 3
    assert cur.total.users == {"U0CAROL", "U0ALICE", "U0ERIN"}
    assert cur.total.minutes_saved == 45
    assert set(cur.servers) == {PRESTO, SPARK, WORKFLOWS_SERVER}
    assert (cur.servers[PRESTO].invocations, cur.servers[PRESTO].minutes_saved) == (1, 15)
    assert (cur.servers[SPARK].invocations, cur.servers[SPARK].active_users) == (1, 2)
    assert cur.tools[(WORKFLOWS_SERVER, "restart-failed-dag")].minutes_saved == 30
    assert cur.tools[(SPARK, "kill_app")].invocations == 1


async def test_feedback_counts_in_the_month_of_its_turn(aredis: aioredis.Redis) -> None:
    previous, current = await write_known_set(aredis)
    # A turn still stored: its created_at decides. Another only known from its audit records.
    await aredis.hset("chatops:turn:t-cur-2", mapping={"id": "t-cur-2", "created_at": str(at(current, 3))})
    await aredis.hset("chatops:feedback:t-cur-2", mapping={"U0ALICE": "up", "U0BOB": "up", "U0CAROL": "down"})
    await aredis.hset("chatops:feedback:t-prev-1", mapping={"U0ALICE": "down"})
    await aredis.hset("chatops:feedback:t-cur-1", mapping={"U0CAROL": "up"})
    await aredis.hset("chatops:feedback:t-unknown", mapping={"U0ERIN": "up"})  # nothing says when
    stats = await monthly_stats(aredis, months=[previous, current])
    assert (stats.month(previous).feedback_up, stats.month(previous).feedback_down) == (0, 1)
    assert (stats.month(current).feedback_up, stats.month(current).feedback_down) == (3, 1)
    assert (stats.feedback_up, stats.feedback_down) == (4, 2)


async def test_a_month_without_records_is_all_zero(aredis: aioredis.Redis) -> None:
    await write_known_set(aredis)
    stats = await monthly_stats(aredis, months=["2001-01"])
    (month,) = stats.months
    assert (month.total.invocations, month.total.active_users, month.total.minutes_saved) == (0, 0, 0)
    assert month.servers == {}


def cells(table: str, section: str, first: str) -> list[list[str]]:
    """Rows of one section of the rendered table whose first cell is `first`, split on 2+ spaces."""
    lines = table.split(section, 1)[1].split("\n\n", 1)[0].splitlines()
    return [[c for c in line.split("  ") if c.strip()] for line in lines if line.startswith(first)]


async def test_render_table_shows_months_servers_and_tools_aligned(aredis: aioredis.Redis) -> None:
    previous, current = await write_known_set(aredis)
    await aredis.hset("chatops:feedback:t-cur-1", mapping={"U0CAROL": "up"})
    table = render_table(await monthly_stats(aredis, months=[previous, current]))
    assert table.startswith("Impact by month\nMonth  ")
    [row] = cells(table, "Impact by month", current)
    assert [c.strip() for c in row] == [current, "3", "3", "0.75", "1/0"]
    server_rows = {r[1].strip(): [c.strip() for c in r[2:]] for r in cells(table, "By server", previous)}
    assert server_rows == {PRESTO: ["2", "1", "0.08"], SPARK: ["1", "1", "0.17"]}
    tool_rows = cells(table, "By tool", current)
    assert [r[1].strip() for r in tool_rows] == [WORKFLOWS_SERVER, PRESTO, SPARK]
    # Columns line up: every line of a section is as wide as its header or narrower (trailing text trimmed).
    section = table.split("By tool\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(section[1]) >= max(len(line) for line in section[2:] if line)


def test_chatops_stats_json_carries_the_tables_figures(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`chatops stats --json`: what the tables say, as numbers a dashboard can read without parsing text."""
    previous, current = known_set_at(redis_url, feedback={"t-cur-1": {"U0CAROL": "up"}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["stats", "--json", "--month", previous, "--month", current]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [m["month"] for m in doc["months"]] == [previous, current]
    old, new = doc["months"]
    assert (old["invocations"], old["active_users"], old["hours_saved"]) == (3, 2, 0.25)
    assert (new["invocations"], new["active_users"], new["hours_saved"]) == (3, 3, 0.75)
    assert new["feedback"] == {"up": 1, "down": 0}
    assert doc["feedback_stored"] == {"up": 1, "down": 0}
    by_server = {s["server"]: (s["invocations"], s["active_users"], s["hours_saved"]) for s in old["servers"]}
    assert by_server == {PRESTO: (2, 1, 0.08), SPARK: (1, 1, 0.17)}
    assert [t["server"] for t in new["tools"]] == [WORKFLOWS_SERVER, PRESTO, SPARK]
    assert all(t["helpful_rate"] is None or 0 <= t["helpful_rate"] <= 1 for t in new["tools"])
    assert set(new["model_usage"]) == {"turns", "input", "cache_write", "cache_read", "output", "usd"}
    assert new["unhelpful_reasons"] == []


def test_an_empty_stats_table_says_so() -> None:
    table = render_table(Stats([]))
    assert "(none)" in table


def test_months_default_to_this_and_the_previous_one() -> None:
    assert default_months(datetime(2026, 1, 15, tzinfo=UTC).timestamp()) == ["2025-12", "2026-01"]
    assert default_months(datetime(2026, 11, 30, 23, tzinfo=UTC).timestamp()) == ["2026-10", "2026-11"]
    assert check_month("2026-02") == "2026-02"
    for bad in ("2026-13", "2026-2", "Nov 2026"):
        with pytest.raises(ValueError, match="YYYY-MM"):
            check_month(bad)


def test_chatops_stats_prints_the_table(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    previous, current = known_set_at(redis_url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis_url)
    # Both months: the records were appended now, and stream ids bound the read (by design, see impact.py).
    assert main(["stats", "--month", current, "--month", previous]) == 0
    out = capsys.readouterr().out
    [row] = cells(out, "Impact by month", previous)
    assert [c.strip() for c in row] == [previous, "3", "2", "0.25", "0/0"]
    with pytest.raises(SystemExit):
        main(["stats", "--month", "last"])
    assert "YYYY-MM" in capsys.readouterr().err


async def test_feedback_calibrates_hours_saved_and_rates_each_tool_beside_its_estimate(
    aredis: aioredis.Redis,
) -> None:
    _, current = months_now()
    audit = Audit(redis=aredis)
    for turn, tool, minutes in [
        ("t-good", "query_history", 6),
        ("t-good", "slow_queries", 12),
        ("t-bad", "query_history", 6),
        ("t-quiet", "query_history", 6),
    ]:
        await audit.record(presto_call(at(current, 1), tool, turn, minutes))
    await aredis.hset("chatops:feedback:t-good", mapping={"U0ALICE": "up"})
    await aredis.hset("chatops:feedback:t-bad", mapping={"U0ALICE": "down", "U0BOB": "down", "U0CAROL": "up"})

    stats = await monthly_stats(aredis, months=[current])
    assert stats.month(current).total.minutes_saved == 30  # the owners' estimate, as before
    assert stats.calibration.hours[current] == 24 / 60  # the unhelpful turn's 6 minutes do not count
    history = stats.calibration.tools[(current, PRESTO, "query_history")]
    assert (history.estimate_minutes, history.rated, history.helpful) == (6, 2, 1)
    assert history.helpful_rate == 0.5
    assert stats.calibration.tools[(current, PRESTO, "slow_queries")].helpful_rate == 1.0

    table = render_table(stats)
    [row] = cells(table, "Calibrated by feedback", current)
    assert [c.strip() for c in row] == [current, "0.50", "0.40"]
    rated = {r[2].strip(): [c.strip() for c in r[3:]] for r in cells(table, "per tool", current)}
    assert rated == {"query_history": ["6", "50% of 2"], "slow_queries": ["12", "100% of 1"]}


async def test_stats_list_the_latest_thumbs_down_reasons_per_month_with_what_they_were_about(
    aredis: aioredis.Redis,
) -> None:
    _, current = months_now()
    audit = Audit(redis=aredis)
    await audit.record(presto_call(at(current, 1), "slow_queries", "t-1"))
    await audit.record(
        rec(
            "workflow_run",
            "succeeded",
            "U0BOB",
            at(current, 1),
            tool="restart-failed-dag",
            workflow_run_id="w-1",
        )
    )
    await aredis.hset("chatops:turn:t-quiet", "created_at", str(at(current, 1)))  # answered without tools
    given = iter(at(current, 1, hour) for hour in range(1, 20))
    feedback = Feedback(aredis, clock=lambda: next(given))
    said = [
        ("t-1", "U0ALICE", "the oldest: gone from the list once newer ones arrive"),
        ("t-1", "U0BOB", "line one\nline two " + "x" * 400),
        ("w-1", "U0ALICE", "cleared the wrong run"),
        ("t-quiet", "U0ALICE", "no data at all"),
        ("t-quiet", "U0BOB", "made up a number"),
        ("t-1", "U0CAROL", "changed my mind later"),
        ("w-1", "U0BOB", "the newest"),
    ]
    for feedback_id, user, reason in said:
        await feedback.vote(feedback_id, user, "down")
        await feedback.explain(feedback_id, user, reason)
    await feedback.vote("t-1", "U0CAROL", "up")  # the last click counts: her reason no longer stands

    stats = await monthly_stats(aredis, months=[current])
    shown = [(r.text, r.about) for r in stats.reasons[current]]
    long_one = "line one line two " + "x" * 141 + "…"
    assert shown == [
        ("the newest", ("workflow restart-failed-dag",)),
        ("made up a number", ("(no tool calls)",)),
        ("no data at all", ("(no tool calls)",)),
        ("cleared the wrong run", ("workflow restart-failed-dag",)),
        (long_one, ("presto.slow_queries",)),
    ]
    rows = cells(render_table(stats), "Why answers and runs", current)
    assert len(rows) == 5
    assert [c.strip() for c in rows[0]][2:] == ["workflow restart-failed-dag", "the newest"]
