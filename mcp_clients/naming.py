"""Tool names the model accepts, unique across servers, and fingerprints of tool definitions.

The Messages API takes tool names matching ^[a-zA-Z0-9_-]{1,64}$. We name each tool `<short>__<tool>`
(presto__kill_query) so people reading the transcript see where a call goes; anything longer or with other
characters is folded and given a short hash so that two different tools can never share a name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from agent.transcript import canonical_json

__all__ = ["canonical_json", "fingerprint", "model_tool_name"]

MAX_NAME = 64
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def model_tool_name(short_name: str, tool: str) -> str:
    plain = f"{short_name}__{tool}"
    if len(plain) <= MAX_NAME and not _UNSAFE.search(plain):
        return plain
    digest = hashlib.sha256(plain.encode()).hexdigest()[:8]
    folded = _UNSAFE.sub("_", plain)[: MAX_NAME - 9]
    return f"{folded}_{digest}"


def fingerprint(
    name: str, description: str, input_schema: Mapping[str, Any], annotations: Mapping[str, Any]
) -> str:
    """sha256 over everything the model and the approvers rely on; any change means a different tool."""
    body = {
        "name": name,
        "description": description,
        "input_schema": input_schema,
        "annotations": annotations,
    }
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()
