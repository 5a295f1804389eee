"""The bill arithmetic: parsing `usage`, sums, input-token equivalents and dollars, price tables.

Multipliers from https://platform.claude.com/docs/en/build-with-claude/prompt-caching ("Pricing").
"""

from __future__ import annotations

import pytest

from agent.usage import (
    DEFAULT_PRICES,
    Price,
    Usage,
    dollars,
    input_equivalents,
    parse_prices,
    price_for,
)

# The docs' own example of a mixed-TTL response ("1-hour cache duration").
DOCS_EXAMPLE = {
    "input_tokens": 2048,
    "cache_read_input_tokens": 1800,
    "cache_creation_input_tokens": 248,
    "output_tokens": 503,
    "cache_creation": {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 100},
}


def test_a_usage_object_splits_into_the_five_priced_kinds() -> None:
    assert Usage.from_api(DOCS_EXAMPLE) == Usage(
        input=2048, cache_write_5m=148, cache_write_1h=100, cache_read=1800, output=503
    )


def test_a_cache_write_without_its_ttl_split_counts_as_five_minutes() -> None:
    """Older responses carry only `cache_creation_input_tokens`; "5m" is the default TTL."""
    got = Usage.from_api({"input_tokens": 5, "cache_creation_input_tokens": 40, "output_tokens": 1})
    assert (got.cache_write_5m, got.cache_write_1h) == (40, 0)
    partial = {"cache_creation_input_tokens": 40, "cache_creation": {"ephemeral_1h_input_tokens": 10}}
    assert Usage.from_api(partial).cache_write_5m == 30


def test_unreadable_usage_fields_count_as_zero_and_never_raise() -> None:
    odd = {"input_tokens": "12", "output_tokens": None, "cache_read_input_tokens": -3, "cache_creation": 7}
    assert Usage.from_api(odd) == Usage()
    assert Usage.from_api(None) == Usage()
    assert Usage.from_api({"input_tokens": True}).input == 0


def test_usages_add_up_field_by_field() -> None:
    a = Usage(input=1, cache_write_5m=2, cache_write_1h=3, cache_read=4, output=5)
    b = Usage(input=10, cache_write_5m=20, cache_write_1h=30, cache_read=40, output=50)
    assert a + b == Usage(input=11, cache_write_5m=22, cache_write_1h=33, cache_read=44, output=55)
    assert sum([a, b], Usage()) == a + b
    assert (a + b).as_dict() == {
        "input": 11,
        "cache_write_5m": 22,
        "cache_write_1h": 33,
        "cache_read": 44,
        "output": 55,
    }


def test_the_prompt_is_input_plus_writes_plus_reads_and_the_hit_ratio_is_reads_over_it() -> None:
    """Docs: "total_input_tokens = cache_read_input_tokens + cache_creation_input_tokens + input_tokens"."""
    u = Usage.from_api(DOCS_EXAMPLE)
    assert u.prompt == 2048 + 248 + 1800
    assert u.cache_hit_ratio == pytest.approx(1800 / 4096)
    assert Usage().cache_hit_ratio == 0.0


def test_input_equivalents_weigh_writes_reads_and_output_by_the_documented_multipliers() -> None:
    """ "5-minute cache write tokens are 1.25 times the base input tokens price; 1-hour cache write tokens
    are 2 times ...; Cache read tokens are 0.1 times"; output is 5× input on every listed model."""
    assert input_equivalents(Usage(input=1000)) == 1000
    assert input_equivalents(Usage(cache_write_5m=1000)) == 1250
    assert input_equivalents(Usage(cache_write_1h=1000)) == 2000
    assert input_equivalents(Usage(cache_read=1000)) == pytest.approx(100)
    assert input_equivalents(Usage(output=1000)) == 5000
    assert input_equivalents(Usage(output=1000), 4.0) == 4000
    assert input_equivalents(Usage(cache_read=1000), read_ratio=0.025) == pytest.approx(25)


def test_dollars_match_the_docs_price_table() -> None:
    """Sonnet 4.6: $3 input, $3.75 5m writes, $6 1h writes, $0.30 hits, $15 output per MTok."""
    sonnet = price_for("claude-sonnet-4-6")
    assert sonnet is not None
    million = 1_000_000
    assert dollars(Usage(input=million), sonnet) == pytest.approx(3.0)
    assert dollars(Usage(cache_write_5m=million), sonnet) == pytest.approx(3.75)
    assert dollars(Usage(cache_write_1h=million), sonnet) == pytest.approx(6.0)
    assert dollars(Usage(cache_read=million), sonnet) == pytest.approx(0.30)
    assert dollars(Usage(output=million), sonnet) == pytest.approx(15.0)
    haiku = DEFAULT_PRICES["claude-haiku-4-5"]
    assert dollars(Usage.from_api(DOCS_EXAMPLE), haiku) == pytest.approx(
        (2048 + 1.25 * 148 + 2 * 100 + 0.1 * 1800 + 5 * 503) / million
    )


def test_a_dated_snapshot_takes_its_alias_price_and_an_unknown_model_none() -> None:
    assert price_for("claude-sonnet-4-5-20250929") == DEFAULT_PRICES["claude-sonnet-4-5"]
    assert price_for("claude-sonnet-4-5-2025") is None
    assert price_for("claude-sonnet-5-5") is None
    assert price_for("mine", {"mine": Price(7.0)}) == Price(7.0)


def test_a_price_table_from_settings_takes_plain_or_detailed_prices() -> None:
    table = parse_prices({"a": 3, "b": {"input": 10, "read_ratio": 0.025}})
    assert table == {"a": Price(3.0), "b": Price(10.0, read_ratio=0.025)}


def test_bad_prices_are_all_named_in_one_message() -> None:
    with pytest.raises(ValueError, match="bad model prices") as err:
        parse_prices({"ok": 1, "neg": -1, "word": "three", "typo": {"inptu": 3}, "inf": float("inf")})
    message = str(err.value)
    for name in ("'neg'", "'word'", "'typo'", "'inf'"):
        assert name in message
    assert "'ok'" not in message
