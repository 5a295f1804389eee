"""Reading the registry over HTTP (against the fake registry on loopback), then deciding from it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from fixtures.registry import FakeRegistry
from fixtures.server import RunningServer, serve
from registry_cache.client import RegistryFetchError, fetch_all, read_registry
from registry_cache.model import parse_entries
from registry_cache.view import Person, RegistryView

URLS = {
    name: f"http://127.0.0.1:{port}/mcp"
    for port, name in enumerate(
        ["PRESTO_URL", "SPARK_URL", "AIRFLOW_URL", "LEDGER_URL", "STATUSPAGE_URL", "HIVE_URL", "SEARCH_URL"],
        1,
    )
}
ALICE = Person("u-alice", "alice@example.com", frozenset({"data-eng", "presto-oncall"}))
DAVE = Person("u-dave", "dave@example.com", frozenset({"finance"}))


@pytest.fixture
def registry() -> Iterator[tuple[FakeRegistry, RunningServer]]:
    fake = FakeRegistry.from_file(urls=URLS)
    with serve(fake.app) as server:
        yield fake, server


async def test_every_page_is_read_and_the_world_decides_as_specified(
    registry: tuple[FakeRegistry, RunningServer],
) -> None:
    fake, server = registry
    fake.add_synthetic(250)
    async with httpx2.AsyncClient() as http:
        raw = await fetch_all(http, server.url)
    assert len(raw) == 257
    assert sum(1 for r in fake.requests if r.path == "/v0.1/servers") == 3  # 100 + 100 + 57
    entries, _ = parse_entries(raw)
    view = RegistryView(entries)
    assert {e.short_name for e in view.servers_for(ALICE, "C0DATAENG")} >= {
        "presto",
        "spark",
        "airflow",
        "search-logs",
    }
    assert view.server("hive-legacy") is not None
    alice_here = {e.short_name for e in view.servers_for(ALICE, "C0DATAENG")}
    assert "ledger" not in alice_here
    assert "hive-legacy" not in alice_here  # suspended
    assert "statuspage" not in alice_here  # only in #incidents
    assert "statuspage" in {e.short_name for e in view.servers_for(ALICE, "C0INCIDENT")}
    assert {e.short_name for e in view.servers_for(DAVE, "C0DATAENG")} >= {"ledger"}
    assert "presto" not in {e.short_name for e in view.servers_for(DAVE, "C0DATAENG")}


async def test_poisoned_entries_are_skipped_and_never_widen_access(
    registry: tuple[FakeRegistry, RunningServer],
) -> None:
    fake, server = registry
    fake.add_poisoned()
    async with httpx2.AsyncClient() as http:
        entries, skipped = parse_entries(await fetch_all(http, server.url))
    view = RegistryView(entries, skipped)
    presto = view.server("io.example/presto")
    # A duplicate "latest" presto entry open to everyone must not replace (or merge into) the real one.
    assert presto is None or presto.governance.allowed_groups == ("data-eng", "ads-eng")
    assert all(e.url.startswith("http://127.0.0.1") for e in entries)
    assert skipped


async def test_an_outage_is_an_error_not_an_empty_registry(
    registry: tuple[FakeRegistry, RunningServer],
) -> None:
    fake, server = registry
    fake.fail_with(503)
    async with httpx2.AsyncClient() as http:
        with pytest.raises(RegistryFetchError, match="503"):
            await fetch_all(http, server.url)


async def test_a_hanging_registry_times_out(registry: tuple[FakeRegistry, RunningServer]) -> None:
    fake, server = registry
    fake.hang(10)
    try:
        async with httpx2.AsyncClient() as http:
            with pytest.raises(RegistryFetchError, match="unreachable"):
                await fetch_all(http, server.url, timeout=0.3)
    finally:
        fake.clear_outage()


async def test_items_of_a_page_that_are_not_entries_cost_only_themselves_and_paging_goes_on(
    registry: tuple[FakeRegistry, RunningServer],
) -> None:
    fake, server = registry
    fake.add_synthetic(150)  # two pages of 100
    for garbage in ("not an entry", 5, None, ["x"], {"server": 5}):
        fake.add(garbage)  # type: ignore[arg-type]
    async with httpx2.AsyncClient() as http:
        entries, skipped = parse_entries(await fetch_all(http, server.url))
    assert len([e for e in entries if e.name.startswith("io.example.synthetic/")]) == 150
    assert RegistryView(entries).server("presto") is not None
    assert [s.name for s in skipped].count("(unnamed)") == 5


@pytest.mark.parametrize(
    ("metadata", "why"),
    [(5, "metadata is not an object"), ({"nextCursor": 5}, "metadata.nextCursor is not a string")],
)
async def test_a_malformed_metadata_ends_the_paging_there_and_says_so(
    registry: tuple[FakeRegistry, RunningServer], metadata: object, why: str
) -> None:
    fake, server = registry
    fake.add_synthetic(150)
    fake.garble_metadata(metadata)
    async with httpx2.AsyncClient() as http:
        read = await read_registry(http, server.url)
    assert len(read.entries) == 100
    assert read.problems == [f"page 1: {why}; paging stopped there"]


async def test_an_item_nested_too_deep_to_store_is_left_out_and_reported(
    registry: tuple[FakeRegistry, RunningServer],
) -> None:
    fake, server = registry
    deep: dict[str, object] = {"server": {"name": "io.example/deep"}}
    for _ in range(100):
        deep = {"x": deep}
    fake.add(deep)
    async with httpx2.AsyncClient() as http:
        read = await read_registry(http, server.url)
    assert len(read.entries) == 7
    assert "nests deeper than 64 levels" in read.problems[0]
