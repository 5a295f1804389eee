"""Model tool names are unique by construction, valid for the Messages API, readable and stable."""

from __future__ import annotations

import itertools

import pytest

from mcp_clients.naming import NAME_PATTERN, ToolKey, model_tool_name, unique_names

# Every string of up to three of these: the characters that make names ambiguous (`_`, `-`), ones the API
# refuses (`.`, non-ASCII) and plain letters, in every position.
PIECES = ("a", "b", "_", "-", ".", "é")
STRINGS = ["".join(p) for n in range(4) for p in itertools.product(PIECES, repeat=n)]


def key(short: str, tool: str, namespace: str = "io.example") -> ToolKey:
    return ToolKey(f"{namespace}/{short}", short, tool)


def test_no_two_pairs_in_an_exhaustive_table_share_a_name_and_every_name_is_valid() -> None:
    keys = [key(short, tool) for short, tool in itertools.product(STRINGS, STRINGS)]
    named, clashing = unique_names(keys)
    assert clashing == {}
    assert len(named) == len(keys) == len(set(named.values()))
    assert all(NAME_PATTERN.fullmatch(name) for name in named.values())


@pytest.mark.parametrize(
    ("short", "tool"),
    [
        (s, t)
        for s in ("presto", "a", "a-b", "a_b", "x" * 30)
        for t in ("kill_query", "b__c", "_x", "-", "y" * 30)
    ],
)
def test_a_plain_name_reads_back_as_its_pair(short: str, tool: str) -> None:
    name = model_tool_name(f"io.example/{short}", short, tool)
    assert name == f"{short}__{tool}"
    assert tuple(name.split("__", 1)) == (short, tool)  # the first `__` is always the separator


def test_a_double_underscore_on_either_side_of_the_separator_cannot_merge_two_tools() -> None:
    left, right = key("a__b", "c"), key("a", "b__c")
    named, clashing = unique_names([left, right])
    assert clashing == {}
    assert named[right] == "a__b__c"
    assert named[left] != named[right]
    assert "__" not in named[left]  # folded names never look like plain ones


def test_long_and_foreign_names_fold_into_64_readable_characters() -> None:
    long_short, long_tool = "analytics-warehouse-" * 3, "recompute_" * 8
    first = model_tool_name("io.example/w", long_short, long_tool + "daily")
    second = model_tool_name("io.example/w", long_short, long_tool + "weekly")
    assert first != second
    for name in (
        first,
        second,
        model_tool_name("io.example/jp", "jp", "ツール"),
        model_tool_name("x/", "", ""),
    ):
        assert NAME_PATTERN.fullmatch(name), name
    assert first.startswith("analytics-warehouse")


def test_pairs_that_would_share_a_name_are_both_withheld_whatever_the_order() -> None:
    twins = [key("presto", "kill_query", "io.example"), key("presto", "kill_query", "com.evil")]
    bystander = key("spark", "failed_stages")
    named, clashing = unique_names([*twins, bystander])
    assert named == {bystander: "spark__failed_stages"}
    assert set(clashing) == set(twins)
    assert "kill_query on com.evil/presto" in clashing[twins[0]]
    assert unique_names(reversed([*twins, bystander])) == (named, clashing)


def test_a_tool_keeps_its_name_whatever_else_is_listed() -> None:
    odd = key("warehouse.v2", "recompute")
    alone, _ = unique_names([odd])
    crowded, _ = unique_names([odd, *(key(s, t) for s, t in itertools.product(STRINGS[:30], STRINGS[:30]))])
    assert alone[odd] == crowded[odd]
