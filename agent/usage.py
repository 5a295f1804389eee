"""The model's bill in plain numbers: usage per call, summed per turn, priced per model.

Pure arithmetic that the bot (audit, stats, App Home, metrics) and `python -m bench cost` share. The rules
come from Anthropic's prompt-caching docs (https://platform.claude.com/docs/en/build-with-claude/prompt-caching,
"Pricing"): "5-minute cache write tokens are 1.25 times the base input tokens price", "1-hour cache write
tokens are 2 times the base input tokens price", "Cache read tokens are 0.1 times the base input tokens
price" (0.025× on Claude Fable 5.1 and Mythos 5.1), and every model in that table prices output at 5× its
input. A response's `usage` splits the prompt into `input_tokens` (after the last breakpoint),
`cache_creation_input_tokens` ("equals the sum of the values in the `cache_creation` object", split by TTL)
and `cache_read_input_tokens`.

Errors: `parse_prices` raises `ValueError` naming every bad entry; `Usage.from_api` never raises (a usage
field it cannot read counts as 0: the answer it came with matters more than its bill).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "DEFAULT_PRICES",
    "OUTPUT_RATIO",
    "READ_RATIO",
    "WRITE_1H_RATIO",
    "WRITE_5M_RATIO",
    "Price",
    "PriceTable",
    "Usage",
    "dollars",
    "input_equivalents",
    "parse_prices",
    "parse_prices_json",
    "price_for",
]

WRITE_5M_RATIO = 1.25
WRITE_1H_RATIO = 2.0
READ_RATIO = 0.1
OUTPUT_RATIO = 5.0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True)
class Usage:
    """Tokens of one model call (or a sum of them), in the five ways they are priced."""

    input: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    output: int = 0

    @classmethod
    def from_api(cls, usage: Mapping[str, Any] | None) -> Usage:
        """From a Messages API `usage` object as JSON (an SDK reply's `usage.model_dump()`)."""
        usage = usage or {}
        written = _count(usage.get("cache_creation_input_tokens"))
        split = usage.get("cache_creation")
        if isinstance(split, Mapping):
            w1h = _count(split.get("ephemeral_1h_input_tokens"))
            w5m = _count(split.get("ephemeral_5m_input_tokens"))
            w5m += max(0, written - w5m - w1h)  # a total beyond its split: 5 minutes, the default TTL
        else:
            w5m, w1h = written, 0
        return cls(
            input=_count(usage.get("input_tokens")),
            cache_write_5m=w5m,
            cache_write_1h=w1h,
            cache_read=_count(usage.get("cache_read_input_tokens")),
            output=_count(usage.get("output_tokens")),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Usage)))

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def prompt(self) -> int:
        """Every input token the model read: "cache_read + cache_creation + input" in the docs' words."""
        return self.input + self.cache_write + self.cache_read

    @property
    def cache_hit_ratio(self) -> float:
        """The share of the prompt read from the cache (0.0 when there was no prompt)."""
        return self.cache_read / self.prompt if self.prompt else 0.0

    def as_dict(self) -> dict[str, int]:
        """Stable keys for audit records and metrics labels."""
        return {f.name: getattr(self, f.name) for f in fields(Usage)}


@dataclass(frozen=True)
class Price:
    """One model's prices: the base input price, and output and cache reads relative to it."""

    input_per_mtok: float  # US dollars per million base input tokens
    output_ratio: float = OUTPUT_RATIO
    read_ratio: float = READ_RATIO


PriceTable = Mapping[str, Price]

# Base input $/Mtok from the pricing table in the docs above (2026). Settings may replace it.
DEFAULT_PRICES: dict[str, Price] = {
    "claude-opus-5": Price(5.0),
    "claude-opus-4-8": Price(5.0),
    "claude-opus-4-7": Price(5.0),
    "claude-opus-4-6": Price(5.0),
    "claude-opus-4-5": Price(5.0),
    "claude-sonnet-5": Price(2.0),
    "claude-sonnet-4-6": Price(3.0),
    "claude-sonnet-4-5": Price(3.0),
    "claude-haiku-4-5": Price(1.0),
}

_SNAPSHOT = re.compile(r"-\d{8}$")


def price_for(model: str, table: PriceTable = DEFAULT_PRICES) -> Price | None:
    """The model's price; a dated snapshot (claude-sonnet-4-5-20250929) takes its alias's. None: unknown."""
    return table.get(model) or table.get(_SNAPSHOT.sub("", model))


def input_equivalents(
    usage: Usage, output_ratio: float = OUTPUT_RATIO, *, read_ratio: float = READ_RATIO
) -> float:
    """The bill in base-input tokens: what `usage` costs, divided by the base input price."""
    return (
        usage.input
        + WRITE_5M_RATIO * usage.cache_write_5m
        + WRITE_1H_RATIO * usage.cache_write_1h
        + read_ratio * usage.cache_read
        + output_ratio * usage.output
    )


def dollars(usage: Usage, price: Price) -> float:
    equivalents = input_equivalents(usage, price.output_ratio, read_ratio=price.read_ratio)
    return equivalents * price.input_per_mtok / 1_000_000


def _positive(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def _price(spec: Any) -> Price | None:
    if not isinstance(spec, Mapping):
        base = _positive(spec)
        return Price(base) if base is not None else None
    if set(spec) - {"input", "output_ratio", "read_ratio"}:
        return None
    base = _positive(spec.get("input"))
    output = _positive(spec.get("output_ratio", OUTPUT_RATIO))
    read = _positive(spec.get("read_ratio", READ_RATIO))
    return Price(base, output, read) if base is not None and output is not None and read is not None else None


def parse_prices(raw: Mapping[str, Any]) -> dict[str, Price]:
    """A price table from settings: `{"model": 3.0}` (base input $/Mtok) or `{"model": {"input": 3.0,
    "output_ratio": 5, "read_ratio": 0.1}}`. Every bad entry is named in one `ValueError`."""
    table: dict[str, Price] = {}
    bad: list[str] = []
    for model, spec in raw.items():
        price = _price(spec)
        if price is None or not model:
            bad.append(
                f"{model!r}: expected a positive number of dollars per million input tokens, or "
                '{"input": <$/Mtok>, "output_ratio": <x>, "read_ratio": <x>}'
            )
        else:
            table[model] = price
    if bad:
        raise ValueError("bad model prices: " + "; ".join(bad))
    return table


def parse_prices_json(text: str) -> dict[str, Price]:
    """`parse_prices` of a JSON object given as text (CHATOPS_MODEL_PRICES); empty text is no table."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        raise ValueError("must be a JSON object of model prices") from None
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object of model prices")
    return parse_prices(raw)  # ValueError names every bad entry
