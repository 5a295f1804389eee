"""The permission view answers SPEC §6 questions from one snapshot, failing closed where unsure."""

from typing import Any

import pytest

from registry_cache.model import GOVERNANCE_KEY, OFFICIAL_KEY, parse_entries
from registry_cache.view import Person, RegistryView


def entry(
    name: str, url: str = "https://x.example.com/mcp", official: str | None = None, **gov: Any
) -> dict[str, Any]:
    governance: dict[str, Any] = {"status": "active", "owner_team": "team", "allowed_groups": ["data-eng"]}
    governance.update(gov)
    meta: dict[str, Any] = {GOVERNANCE_KEY: governance}
    if official is not None:
        meta[OFFICIAL_KEY] = {"status": official, "isLatest": True}
    return {"server": {"name": name, "remotes": [{"type": "streamable-http", "url": url}]}, "_meta": meta}


ALICE = Person("u-alice", "alice@example.com", frozenset({"data-eng", "presto-oncall"}))
DAVE = Person("u-dave", "dave@example.com", frozenset({"finance"}))


def view(*raw: dict[str, Any]) -> RegistryView:
    entries, skipped = parse_entries(raw)
    return RegistryView(entries, skipped)


def test_group_gating_and_everyone() -> None:
    v = view(  # each at its own URL: two usable servers never share a token audience
        entry("io.example/presto", "https://presto.example.com/mcp", allowed_groups=["data-eng", "ads-eng"]),
        entry("io.example/ledger", "https://ledger.example.com/mcp", allowed_groups=["finance"]),
        entry("io.example/status", "https://status.example.com/mcp", allowed_groups=["*"]),
        entry("io.example/closed", "https://closed.example.com/mcp", allowed_groups=[]),
        entry("io.example/absent", "https://absent.example.com/mcp", allowed_groups=None) | {},
    )
    assert [e.short_name for e in v.servers_for(ALICE, "C1")] == ["presto", "status"]
    assert [e.short_name for e in v.servers_for(DAVE, "C1")] == ["ledger", "status"]
    refused = v.access(DAVE, v.server("presto"), "C1")  # type: ignore[arg-type]
    assert not refused.allowed
    assert "data-eng" in refused.reason


def test_absent_allowed_groups_means_nobody() -> None:
    raw = entry("io.example/nobody")
    del raw["_meta"][GOVERNANCE_KEY]["allowed_groups"]
    assert view(raw).servers_for(ALICE, "C1") == []


def test_channel_restriction() -> None:
    v = view(entry("io.example/status", allowed_groups=["*"], allowed_channels=["C0INCIDENT"]))
    assert [e.short_name for e in v.servers_for(ALICE, "C0INCIDENT")] == ["status"]
    assert v.servers_for(ALICE, "C0RANDOM") == []
    assert v.servers_for(ALICE, None) == []


@pytest.mark.parametrize(
    ("official", "status", "usable"),
    [
        (None, "active", True),
        ("active", "deprecated", True),
        ("active", "suspended", False),
        ("deprecated", "active", False),
        ("deleted", "active", False),
    ],
)
def test_official_and_governance_status(official: str | None, status: str, usable: bool) -> None:
    v = view(entry("io.example/s", official=official, status=status))
    assert bool(v.servers_for(ALICE, "C1")) is usable


def test_registry_approval_beats_annotations_and_steps_only_add() -> None:
    v = view(
        entry(
            "io.example/presto",
            approver_groups=["presto-admins"],
            tools={
                "kill_query": {"approval": "required", "approver_groups": ["presto-oncall"], "quorum": 2},
                "query_history": {"approval": "never"},
                "drop_table": {"enabled": False},
            },
        )
    )
    presto = v.server("presto")
    assert presto is not None
    kill = v.approval(presto, "kill_query", read_only_hint=True)  # a lying annotation does not help
    assert (kill.required, kill.approver_groups, kill.quorum) == (True, ("presto-oncall",), 2)
    assert not v.approval(presto, "query_history", read_only_hint=False).required
    assert v.approval(presto, "query_history", read_only_hint=None, step_requires=True).required
    assert not v.approval(presto, "slow_queries", read_only_hint=True).required
    unannotated = v.approval(presto, "slow_queries", read_only_hint=None)
    assert unannotated.required
    assert (unannotated.approver_groups, unannotated.quorum) == (("presto-admins",), 1)
    assert v.approval(presto, "x", read_only_hint=False).required
    assert not v.tool_enabled(presto, "drop_table")
    assert v.tool_enabled(presto, "kill_query")


def test_who_may_approve() -> None:
    v = view(entry("io.example/p", approver_groups=["presto-admins"]))
    rule = v.approval(v.server("p"), "t", read_only_hint=None)  # type: ignore[arg-type]
    assert rule.may_approve({"presto-admins", "x"})
    assert not rule.may_approve({"data-eng"})
    nobody = view(entry("io.example/q")).approval(
        view(entry("io.example/q")).server("q"), "t", read_only_hint=None
    )  # type: ignore[arg-type]
    assert not nobody.may_approve({"anything"})


def test_the_approvers_of_a_server_are_its_own_and_each_enabled_tools() -> None:
    v = view(
        entry(
            "io.example/presto",
            approver_groups=["presto-admins"],
            tools={
                "kill_query": {"approval": "required", "approver_groups": ["presto-oncall"]},
                "drop_table": {"enabled": False, "approver_groups": ["dba"]},
                "query_history": {"approval": "never"},
            },
        ),
        entry("io.example/bare", "https://bare.example.com/mcp"),
    )
    presto, bare = v.server("presto"), v.server("bare")
    assert presto is not None
    assert bare is not None
    assert v.approver_groups(presto) == {"presto-admins", "presto-oncall"}
    assert v.approver_groups(bare) == frozenset()


def test_minutes_saved_per_tool_overrides_server() -> None:
    v = view(entry("io.example/p", minutes_saved=5, tools={"kill_query": {"minutes_saved": 15}}))
    p = v.server("p")
    assert p is not None
    assert v.minutes_saved(p, "kill_query") == 15
    assert v.minutes_saved(p, "other") == 5


def test_bad_entries_are_skipped_with_reasons_never_crash() -> None:
    entries, skipped = parse_entries(
        [
            "not an object",
            {"server": {"name": "noslash"}},
            entry("io.example/meta", url="http://169.254.169.254/"),
            entry("io.example/plain", url="http://example.com/mcp"),
            {"server": {"name": "io.example/noremote", "remotes": []}, "_meta": {}},
            entry("io.example/badgov", allowed_groups="data-eng"),
            entry("io.example/badauth", auth="root"),
            {
                "server": {
                    "name": "io.example/ungoverned",
                    "remotes": [{"type": "streamable-http", "url": "https://a.example.com"}],
                }
            },
            entry("io.example/dup"),
            entry("io.example/dup", url="https://evil.example.com/mcp"),
            entry("io.example/presto"),
            entry("com.evil/presto", url="https://evil.example.com/mcp"),
            entry("io.example/good", future_field={"x": 1}),
        ]
    )
    assert [e.name for e in entries] == ["io.example/good"]
    reasons = {s.name: s.reason for s in skipped}
    assert "metadata" in reasons["io.example/meta"]
    assert "plain http" in reasons["io.example/plain"]
    assert "streamable-http" in reasons["io.example/noremote"]
    assert "allowed_groups" in reasons["io.example/badgov"]
    assert "auth" in reasons["io.example/badauth"]
    assert "governance" in reasons["io.example/ungoverned"]
    assert "more than once" in reasons["io.example/dup"]
    assert "short name" in reasons["io.example/presto"]
    assert "short name" in reasons["com.evil/presto"]


def test_older_versions_are_ignored_in_favour_of_latest() -> None:
    old = entry("io.example/p", url="https://old.example.com/mcp")
    old["_meta"][OFFICIAL_KEY] = {"status": "active", "isLatest": False}
    new = entry("io.example/p", url="https://new.example.com/mcp")
    entries, skipped = parse_entries([old, new])
    assert [e.url for e in entries] == ["https://new.example.com/mcp"]
    assert skipped == []


def test_resource_defaults_to_url() -> None:
    v = view(entry("io.example/a"), entry("io.example/b", resource="https://b.example.com/"))
    assert v.server("a").resource == "https://x.example.com/mcp"  # type: ignore[union-attr]
    assert v.server("b").resource == "https://b.example.com/"  # type: ignore[union-attr]


def test_two_usable_servers_claiming_one_resource_are_both_unusable_with_the_reason() -> None:
    entries, skipped = parse_entries(
        [
            entry("io.example/presto", "https://presto.example.com/mcp"),
            # Claims presto's audience, spelled differently: a token for it would be accepted by presto.
            entry(
                "com.evil/collector",
                "https://collector.evil.com/mcp",
                resource="HTTPS://Presto.example.com/mcp/",
            ),
            entry(
                "io.example/spark",
                "https://spark.example.com/mcp",
                resource="https://spark-audience.example.com",
            ),
            entry("io.example/airflow", "https://spark-audience.example.com/"),  # its URL is spark's resource
            entry("io.example/ledger", "https://ledger.example.com/mcp"),
            entry("io.example/old", "https://ledger.example.com/mcp", status="suspended"),  # claims nothing
        ]
    )
    assert [e.name for e in entries] == ["io.example/ledger", "io.example/old"]
    reasons = {s.name: s.reason for s in skipped}
    assert "also claimed by com.evil/collector" in reasons["io.example/presto"]
    assert "also claimed by io.example/presto" in reasons["com.evil/collector"]
    assert "also claimed by io.example/airflow" in reasons["io.example/spark"]
    assert "also claimed by io.example/spark" in reasons["io.example/airflow"]
