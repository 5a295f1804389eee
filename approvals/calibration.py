"""Time saved calibrated by feedback (SPEC §9): the owners' estimate counts only for calls in turns nobody
marked unhelpful, and each tool's helpful rate stands beside its estimate so owners can correct it.

A turn is *unhelpful* when it has more 👎 than 👍, *helpful* when more 👍 than 👎; a tie or no vote leaves
it unrated (its minutes still count: silence is not a complaint). A tool's helpful rate is over the rated
turns that called it, per month. Feedback on a turn is found by the turn's id, which is the `request_id` of
its audit records (approvals.audit), so the tools a turn used are those records' tools.

A workflow run is rated like a turn, by its run id (`feedback_id`): its own record (counted under
WORKFLOWS_SERVER with the workflow's `minutes_saved`) and the calls its steps made (their
records carry the run id as `workflow_run_id`, or as `request_id` once a step was approved) count only while
the run is not marked unhelpful, and the workflow gets a helpful rate beside its estimate as a tool does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "WORKFLOWS_SERVER",
    "Calibration",
    "ToolRating",
    "Verdict",
    "calibrated",
    "counts",
    "feedback_id",
    "verdict",
]

WORKFLOWS_SERVER = "(workflows)"  # the "server" a canned workflow run is counted under
Verdict = Literal["helpful", "unhelpful"] | None


def verdict(up: int, down: int) -> Verdict:
    return "helpful" if up > down else "unhelpful" if down > up else None


def counts(said: Verdict) -> bool:
    """Whether minutes saved by a turn or run with this verdict count in the calibrated figure."""
    return said != "unhelpful"


def feedback_id(record: Mapping[str, Any]) -> str:
    """What feedback on the work behind an audit record is stored under: its turn, else its workflow run."""
    return str(record.get("request_id") or record.get("workflow_run_id") or "")


def calibrated(minutes_by_id: Mapping[str, float], verdicts: Mapping[str, Verdict]) -> float:
    """Minutes saved (per feedback id; "" for work nobody can rate) that count once feedback is known."""
    return sum(m for fid, m in minutes_by_id.items() if counts(verdicts.get(fid) if fid else None))


@dataclass
class ToolRating:
    estimate_minutes: float = 0.0  # the owner's minutes per successful call, as recorded
    rated: int = 0  # turns with a verdict that called this tool
    helpful: int = 0

    @property
    def helpful_rate(self) -> float | None:
        return self.helpful / self.rated if self.rated else None


@dataclass
class Calibration:
    """Collected while the audit is read (`add`), settled once feedback is known (`settle`)."""

    calls: list[tuple[str, str, str, str, float]] = field(
        default_factory=list
    )  # month, server, tool, turn, min
    hours: dict[str, float] = field(default_factory=dict)  # month -> calibrated hours
    tools: dict[tuple[str, str, str], ToolRating] = field(default_factory=dict)  # (month, server, tool)

    def add(self, month: str, server: str, tool: str, request_id: str, minutes: float) -> None:
        self.calls.append((month, server, tool, request_id, minutes))
        rating = self.tools.setdefault((month, server, tool), ToolRating())
        rating.estimate_minutes = max(rating.estimate_minutes, minutes)

    def settle(self, verdicts: Mapping[str, Verdict]) -> None:
        seen: set[tuple[str, str, str, str]] = set()
        for month, server, tool, turn, minutes in self.calls:
            said = verdicts.get(turn) if turn else None
            if counts(said):
                self.hours[month] = self.hours.get(month, 0.0) + minutes / 60.0
            if said is not None and (month, server, tool, turn) not in seen:
                seen.add((month, server, tool, turn))
                rating = self.tools[(month, server, tool)]
                rating.rated += 1
                rating.helpful += int(said == "helpful")
