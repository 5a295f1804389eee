"""Reading the audit stream for a SIEM (SPEC §9): `--since` forms, filters, paging, following new records,
and the `chatops audit` command."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from approvals import audit_query
from approvals.audit import AUDIT_STREAM, Audit, AuditRecord, args_digest, preview
from approvals.audit_query import AuditFilter, export, parse_since, stream_position, tail
from bot.cli import main
from fixtures.redis_proc import RedisProc

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()


def call(user: str, server: str, outcome: str, at: float, **extra: Any) -> AuditRecord:
    arguments = {"state": "RUNNING", "token": "xoxb-123456789012-abcdefghijkl"}
    return AuditRecord(
        kind=extra.pop("kind", "tool_call"),
        outcome=outcome,  # type: ignore[arg-type]
        user=user,
        sub=f"u-{user.lower()}",
        server=server,
        tool="query_history",
        args_sha256=args_digest(arguments),
        args_preview=preview(arguments),
        time=at,
        **extra,
    )


async def collect(records: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r async for r in records]


@pytest.fixture
async def stored(aredis: aioredis.Redis) -> list[str]:
    audit = Audit(aredis)
    return [
        await audit.record(call("U0ALICE", "io.example/presto", "succeeded", NOW - 10 * 86400)),
        await audit.record(call("U0ALICE", "io.example/spark", "failed", NOW - 2 * 86400)),
        await audit.record(call("U0BOB", "io.example/presto", "denied", NOW - 3600)),
        await audit.record(call("U0BOB", "", "succeeded", NOW - 60, kind="account_link")),
    ]


def test_since_accepts_relative_ages_and_iso_dates_and_times() -> None:
    assert parse_since("7d", NOW) == NOW - 7 * 86400
    assert parse_since("12h", NOW) == NOW - 12 * 3600
    assert parse_since("30m", NOW) == NOW - 1800
    assert parse_since(" 90S ", NOW) == NOW - 90
    assert parse_since("2w", NOW) == NOW - 14 * 86400
    assert parse_since("2026-11-01", NOW) == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert parse_since("2026-11-01T08:30", NOW) == datetime(2026, 11, 1, 8, 30, tzinfo=UTC).timestamp()
    assert parse_since("2026-11-01T08:30Z", NOW) == datetime(2026, 11, 1, 8, 30, tzinfo=UTC).timestamp()
    assert parse_since("2026-11-01T09:30+01:00", NOW) == datetime(2026, 11, 1, 8, 30, tzinfo=UTC).timestamp()
    for bad in ("yesterday", "7 days", "", "-3d", "2026-13-01"):
        with pytest.raises(ValueError, match="relative age"):
            parse_since(bad, NOW)


async def test_export_without_filters_returns_every_record_in_order_with_its_stream_id(
    aredis: aioredis.Redis, stored: list[str]
) -> None:
    records = await collect(export(aredis))
    assert [r["stream_id"] for r in records] == stored
    assert [r["user"] for r in records] == ["U0ALICE", "U0ALICE", "U0BOB", "U0BOB"]
    assert "xoxb-123456789012" not in json.dumps(records)  # previews are redacted at the source
    assert records[0]["args_sha256"] == args_digest(
        {"state": "RUNNING", "token": "xoxb-123456789012-abcdefghijkl"}
    )


async def test_export_filters_combine(aredis: aioredis.Redis, stored: list[str]) -> None:
    async def outcomes(**filters: Any) -> list[str]:
        return [r["outcome"] for r in await collect(export(aredis, **filters))]

    assert await outcomes(user="U0ALICE") == ["succeeded", "failed"]
    assert await outcomes(user="u-u0bob") == ["denied", "succeeded"]  # an identity sub works too
    assert await outcomes(server="presto") == ["succeeded", "denied"]  # the short name
    assert await outcomes(server="io.example/spark") == ["failed"]
    assert await outcomes(outcome="failed,denied") == ["failed", "denied"]
    assert await outcomes(since=NOW - 3 * 86400) == ["failed", "denied", "succeeded"]
    assert await outcomes(since=NOW - 3 * 86400, user="U0BOB", server="presto") == ["denied"]
    assert await outcomes(kind="account_link") == ["succeeded"]
    assert await outcomes(user="U0CAROL") == []


async def test_export_pages_through_a_long_stream(
    aredis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_query, "PAGE", 2)
    audit = Audit(aredis)
    for n in range(7):
        await audit.record(call(f"U{n}", "io.example/presto", "succeeded", NOW + n))
    await aredis.xadd(AUDIT_STREAM, {"something": "else"})  # not a record: skipped, not fatal
    assert [r["user"] for r in await collect(export(aredis))] == [f"U{n}" for n in range(7)]
    assert [r["user"] for r in await collect(export(aredis, user="U6"))] == ["U6"]


async def blocked_in_xread(client: aioredis.Redis) -> None:
    """Return once some client of this Redis is blocked in XREAD (bounded)."""
    deadline = time.monotonic() + 5
    while not any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in await client.client_list()):
        assert time.monotonic() < deadline, "the tail never blocked in XREAD"
        await asyncio.sleep(0)


async def test_tail_delivers_a_matching_record_appended_while_it_waits(
    aredis: aioredis.Redis, redis_url: str, stored: list[str]
) -> None:
    reader = aioredis.Redis.from_url(redis_url)
    records = tail(reader, filters=AuditFilter.of(user="U0ALICE"), block_ms=10_000)
    try:
        following = asyncio.create_task(anext(records))
        await blocked_in_xread(aredis)
        audit = Audit(aredis)
        await audit.record(call("U0BOB", "io.example/presto", "succeeded", NOW))  # filtered out
        appended = await audit.record(call("U0ALICE", "io.example/presto", "failed", NOW))
        record = await asyncio.wait_for(following, 5)
        assert record["stream_id"] == appended  # only new records: the stored ones were not replayed
        assert (record["user"], record["outcome"]) == ("U0ALICE", "failed")
    finally:
        await records.aclose()
        await reader.aclose()


async def test_tail_with_since_replays_then_follows_without_a_gap(
    aredis: aioredis.Redis, stored: list[str]
) -> None:
    records = tail(aredis, filters=AuditFilter.of(since=NOW - 3 * 86400, server="presto"), block_ms=100)
    try:
        first = await asyncio.wait_for(anext(records), 5)
        assert first["stream_id"] == stored[2]
        appended = await Audit(aredis).record(call("U0ALICE", "io.example/presto", "succeeded", NOW))
        assert (await asyncio.wait_for(anext(records), 5))["stream_id"] == appended
    finally:
        await records.aclose()


async def test_tail_can_resume_from_a_stream_position(aredis: aioredis.Redis, stored: list[str]) -> None:
    assert await stream_position(aredis) == stored[-1]
    records = tail(aredis, filters=AuditFilter(), block_ms=100, after=stored[1])
    try:
        assert (await asyncio.wait_for(anext(records), 5))["stream_id"] == stored[2]
        assert (await asyncio.wait_for(anext(records), 5))["stream_id"] == stored[3]
    finally:
        await records.aclose()


async def test_an_empty_stream_has_position_zero(aredis: aioredis.Redis) -> None:
    assert await stream_position(aredis) == "0-0"


def test_chatops_audit_export_prints_json_lines(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async def write() -> None:
        client = aioredis.Redis.from_url(redis_url)
        audit = Audit(client)
        await audit.record(call("U0ALICE", "io.example/presto", "succeeded", time.time() - 3600))
        await audit.record(call("U0BOB", "io.example/presto", "failed", time.time() - 60))
        await client.aclose()

    asyncio.run(write())
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["audit", "export", "--since", "2h", "--outcome", "failed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["user"] for line in lines] == ["U0BOB"]


def test_chatops_audit_needs_redis_url_and_a_readable_since(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["audit", "export"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("chatops: configuration error: REDIS_URL: is required")
    assert "\n" not in err
    with pytest.raises(SystemExit):
        main(["audit", "tail", "--since", "last tuesday"])
    assert "relative age" in capsys.readouterr().err


async def test_tail_resumes_after_redis_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_query, "RECONNECT_SECONDS", 0)
    server = RedisProc().start()
    reader = aioredis.Redis.from_url(server.url, retry=None)
    try:
        records = tail(reader, filters=AuditFilter(), block_ms=10_000, after="0-0")
        following = asyncio.create_task(anext(records))
        writer = aioredis.Redis.from_url(server.url)
        await blocked_in_xread(writer)
        await writer.aclose()
        server.kill()
        server.start()  # same port, empty (no persistence): the tail reconnects and keeps following
        writer = aioredis.Redis.from_url(server.url)
        appended = await Audit(writer).record(call("U0ALICE", "io.example/presto", "succeeded", NOW))
        await writer.aclose()
        assert (await asyncio.wait_for(following, 10))["stream_id"] == appended
        await records.aclose()
    finally:
        await reader.aclose()
        server.stop()
