"""Bounded tool context: past a threshold, the model searches for tools instead of reading every definition.

An organisation with 50 servers and 500 tools would otherwise send tens of thousands of tokens of
definitions on every step. Two ways, chosen by `mode`:

- "api": the Messages API's tool search tool (`tool_search_tool_bm25`). Every tool is still sent, but all
  except the always-loaded few carry `defer_loading: true`, which keeps them out of the context until the
  model's search returns them (docs "Tool search tool").
- "local": for an API or gateway without tool search. Only the always-loaded tools are sent, beside a
  `find_tools` tool that this process answers itself (BM25 over names, descriptions and server names); the
  definitions it returns are sent from the next step on.

Always loaded: the tools this conversation already used (newest first, at most `ALWAYS_LOADED`): a thread
that queried presto will likely query it again. A tool the model finds is called like any other: the loop
only runs names the gateway listed for this person here, and the gateway checks the registry, approvals
and fingerprints at call time, so search widens what the model sees up front, never what it may do.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "API_SEARCH_TOOL",
    "LOCAL_SEARCH_TOOL",
    "SearchMode",
    "ToolContext",
    "ToolIndex",
    "used_tools",
]

SearchMode = Literal["api", "local", "off"]
ALWAYS_LOADED = 5
FOUND_LIMIT = 5
API_SEARCH_TOOL: dict[str, Any] = {"type": "tool_search_tool_bm25_20251119", "name": "tool_search_tool_bm25"}
LOCAL_SEARCH_NAME = "find_tools"
LOCAL_SEARCH_TOOL: dict[str, Any] = {
    "name": LOCAL_SEARCH_NAME,
    "description": (
        "Search the tools you may use here by what they do (keywords: system, object, action). Only some "
        "tools are shown up front; the ones this returns can be called from your next step."
    ),
    "input_schema": {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "keywords, e.g. 'kafka consumer lag'"}},
        "required": ["query"],
    },
}
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    {"a", "an", "and", "are", "by", "for", "from", "how", "i", "in", "is", "it", "me", "my", "of", "on"}
    | {"or", "the", "this", "to", "was", "what", "which", "with"}
)


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower().replace("_", " ")) if w not in _STOP]


def _first_line(text: Any) -> str:
    return (str(text or "").strip().splitlines() or [""])[0][:200]


@dataclass
class ToolIndex:
    """Okapi BM25 over each tool's name, description, argument names and server name (in-process)."""

    names: list[str]
    docs: list[Counter[str]]
    lengths: list[int]
    df: Counter[str]
    k1: float = 1.2
    b: float = 0.75

    @classmethod
    def build(cls, tools: Sequence[Mapping[str, Any]], servers: Mapping[str, str]) -> ToolIndex:
        names, docs = [], []
        for tool in tools:
            name = str(tool.get("name", ""))
            props = (tool.get("input_schema") or {}).get("properties") or {}
            text = " ".join([name, str(tool.get("description", "")), servers.get(name, ""), *map(str, props)])
            names.append(name)
            docs.append(Counter(_words(text)))
        df: Counter[str] = Counter(w for d in docs for w in d)
        return cls(names, docs, [sum(d.values()) for d in docs], df)

    def search(self, query: str, limit: int = FOUND_LIMIT) -> list[str]:
        """The best `limit` tool names for `query`, best first; none when no word is shared."""
        n = len(self.docs)
        avg = sum(self.lengths) / n if n else 1.0
        terms = set(_words(query))
        scored: list[tuple[float, int]] = []
        for i, doc in enumerate(self.docs):
            score = 0.0
            for w in terms & doc.keys():
                idf = math.log(1 + (n - self.df[w] + 0.5) / (self.df[w] + 0.5))
                tf = doc[w]
                score += (
                    idf * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * self.lengths[i] / avg))
                )
            if score > 0:
                scored.append((-score, i))
        return [self.names[i] for _, i in sorted(scored)[:limit]]


def used_tools(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Tool names the conversation called, newest first, each once."""
    seen: dict[str, None] = {}
    for message in reversed(messages):
        content = message.get("content")
        for block in reversed(content) if isinstance(content, list) else ():
            if isinstance(block, Mapping) and block.get("type") == "tool_use":
                seen.setdefault(str(block.get("name")), None)
    return list(seen)


@dataclass
class ToolContext:
    """The tool definitions one run sends, step by step."""

    specs: list[dict[str, Any]]  # every tool the person may use here
    mode: SearchMode = "off"
    loaded: set[str] = field(default_factory=set)  # local mode: sent in full
    index: ToolIndex | None = None

    @classmethod
    def build(
        cls,
        specs: list[dict[str, Any]],
        servers: Mapping[str, str],
        *,
        mode: SearchMode,
        threshold: int,
        history: Sequence[Mapping[str, Any]] = (),
    ) -> ToolContext:
        if mode == "off" or len(specs) <= threshold:
            return cls(specs)
        names = {s["name"] for s in specs}
        always = set([n for n in used_tools(history) if n in names][:ALWAYS_LOADED])
        index = ToolIndex.build(specs, servers) if mode == "local" else None
        return cls(specs, mode, always, index)

    def request_tools(self) -> list[dict[str, Any]]:
        """What the next request's `tools` holds."""
        if self.mode == "api":
            deferred = [s if s["name"] in self.loaded else {**s, "defer_loading": True} for s in self.specs]
            return [API_SEARCH_TOOL, *deferred]
        if self.mode == "local":
            return [LOCAL_SEARCH_TOOL, *(s for s in self.specs if s["name"] in self.loaded)]
        return list(self.specs)

    def is_local_search(self, name: str) -> bool:
        return self.mode == "local" and name == LOCAL_SEARCH_NAME

    def find(self, arguments: Any) -> str:
        """Answer a `find_tools` call: load the matches for the next step and say which they are."""
        query = arguments.get("query") if isinstance(arguments, Mapping) else None
        if not isinstance(query, str) or not query.strip() or self.index is None:
            return "Give a `query` of a few keywords describing the tool you need."
        found = self.index.search(query)
        if not found:
            return f"No tool you may use here matches {query!r}. Try other words."
        self.loaded.update(found)
        by_name = {s["name"]: s for s in self.specs}
        lines = [f"- {n}: {_first_line(by_name[n].get('description'))}" for n in found]
        return "These tools are now available to call:\n" + "\n".join(lines)
