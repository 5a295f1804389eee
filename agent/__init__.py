"""The agent: the tool-use loop and the workflow runner, pure (no Slack, Redis, RQ or SDK imports).

`resume(saved, outcomes)` continues a paused conversation with what became of its deferred calls.
"""

from agent.deferred import Decided, resume

__all__ = ["Decided", "resume"]
