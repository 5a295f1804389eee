"""What one gateway session keeps from the model, and why (SPEC §6): the bookkeeping behind `withheld`.

A tool is withheld for its definition (its server lists it malformed, it looks poisoned, the model API
cannot take its schema), for its name (it would share one with another tool), or because it needs an
approval nobody may give. Each is recorded once with the reason people read: the turn audits `withheld`
as `tool_withheld`, a workflow step calling one fails before anything runs, and what a live listing
withheld for definitions is kept per server for App Home and `chatops registry` (`of_server`).

`disabled` holds the tools withheld for their definition or name: a call shown one of them from a
remembered listing is refused, and an approved action whose tool is now among them fails, saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from mcp_clients.naming import ToolKey, model_tool_name
from mcp_clients.specs import Built, ToolSpec, uniquely_named
from registry_cache.model import ServerEntry
from registry_cache.view import NOBODY_MAY_APPROVE

__all__ = ["Withholding"]

log = logging.getLogger(__name__)


class Withholding:
    def __init__(self) -> None:
        self.disabled: dict[str, str] = {}  # model name -> why (its definition or its name)
        self.withheld: dict[str, tuple[str, str, str]] = {}  # model name -> (server, tool, why), all kinds
        self._keys: set[ToolKey] = set()  # withheld for their definition: their names stay taken
        self._definitions: dict[str, dict[str, str]] = {}  # server -> tool -> why

    def definition(self, entry: ServerEntry, tool: str, why: str) -> None:
        name = model_tool_name(entry.name, entry.short_name, tool)
        log.warning("tool %s of %s withheld from the model: %s", tool, entry.name, why)
        self.disabled[name] = why
        self.withheld[name] = (entry.name, tool, why)
        self._keys.add(ToolKey(entry.name, entry.short_name, tool))
        self._definitions.setdefault(entry.name, {})[tool] = why

    def built(self, entry: ServerEntry, built: Built) -> None:
        for tool, poison in built.poisoned.values():
            self.definition(entry, tool, f"its definition looks poisoned ({poison})")
        for tool, why in built.unfit.values():
            self.definition(entry, tool, f"the model API cannot take it: {why}")

    def malformed(self, entry: ServerEntry, malformed: Mapping[str, str]) -> None:
        for tool, why in malformed.items():
            self.definition(entry, tool, f"its server lists it malformed ({why})")

    def of_server(self, server: str) -> dict[str, str]:
        """tool -> why, for what this session withheld of `server` for its definitions."""
        return dict(self._definitions.get(server, {}))

    def unapprovable(self, entry: ServerEntry, specs: Sequence[ToolSpec]) -> list[ToolSpec]:
        """`specs` without the tools that need an approval nobody may give: offered, a call to one could only
        wait on a card until it expired."""
        offered = []
        for spec in specs:
            if spec.approval.unapprovable:
                self.withheld[spec.model_name] = (entry.name, spec.tool, NOBODY_MAY_APPROVE)
            else:
                offered.append(spec)
        return offered

    def uniquely_named(self, specs: list[ToolSpec]) -> list[ToolSpec]:
        """`specs` whose names one tool has to itself; a name a withheld tool would have is nobody's."""
        offered, clashing = uniquely_named(specs, self._keys)
        for key, why in clashing.items():
            log.warning("tool %s of %s withheld from the model: %s", key.tool, key.server, why)
            name = model_tool_name(key.server, key.short_name, key.tool)
            self.disabled.setdefault(name, why)
            self.withheld.setdefault(name, (key.server, key.tool, why))
        return offered
