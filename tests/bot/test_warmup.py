"""The worker's parent warms the client libraries before it forks, with no network."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
import anthropic.types as t
before = (t.Message.__pydantic_complete__, t.ToolUseBlock.__pydantic_complete__)
from bot.warmup import warm_up
warm_up()
after = (t.Message.__pydantic_complete__, t.ToolUseBlock.__pydantic_complete__)
print(before, after, gc.get_freeze_count() > 0)
"""


def test_warm_up_builds_the_lazy_response_models_and_freezes_the_heap() -> None:
    # A fresh interpreter: in the test process another test may already have parsed a reply.
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"CHATOPS_NETGUARD": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.split("\n")[0] == "(False, False) (True, True) True"
