"""App Home's line about the person's own model usage this month (approvals.model_bill keeps the totals)."""

from __future__ import annotations

from agent.usage import Usage

__all__ = ["usage_line"]


def usage_line(usage: Usage, turns: int, dollars: float) -> str | None:
    """One line of this person's own model usage (approvals.model_bill), None before their first turn."""
    if not turns:
        return None
    hit = f"{usage.cache_hit_ratio * 100:.0f}%"
    tokens = f"{usage.prompt + usage.output:,} tokens ({hit} of input from cache)"
    return f"{turns} requests, {tokens}, about ${dollars:,.2f}"
