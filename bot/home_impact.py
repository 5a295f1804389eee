"""App Home's time-saved section (SPEC §7, issue 19 item 4): this person's own time saved this week and
this month, both as the owners' estimate and calibrated by feedback (approvals.home_records.TimeSaved, the
same rule `chatops stats` applies: approvals.calibration).

Only the person's own figures: no one's feedback text is shown here. The 👎 reasons people give are for the
operators who run `chatops stats` (approvals.feedback_reasons), never for another person's Home.
"""

from __future__ import annotations

from typing import Any

from approvals.home_records import TimeSaved

__all__ = ["duration", "time_saved_blocks"]

JSON = dict[str, Any]
NOTE = (
    "Owners' estimates for your successful tool calls and workflow runs (UTC weeks). The second figure "
    "leaves out answers and runs marked unhelpful (more 👎 than 👍)."
)


def time_saved_blocks(saved: TimeSaved) -> list[JSON]:
    fields = [
        _field("This week", saved.week, saved.week_calibrated),
        _field("This month", saved.month, saved.month_calibrated),
    ]
    return [
        {"type": "divider"},
        {"type": "section", "text": _md("*Time saved*")},
        {"type": "section", "fields": fields},
        {"type": "context", "elements": [_md(NOTE)]},
    ]


def duration(minutes: float) -> str:
    whole = round(minutes)
    if whole < 60:
        return f"{whole} min"
    return f"{whole // 60} h {whole % 60} min" if whole % 60 else f"{whole // 60} h"


def _field(period: str, estimate: float, calibrated: float) -> JSON:
    return _md(
        f"*{period}*\n{duration(estimate)} by the owners' estimate\n"
        f"{duration(calibrated)} counting only answers and runs not marked unhelpful"
    )


def _md(text: str) -> JSON:
    return {"type": "mrkdwn", "text": text, "verbatim": True}
