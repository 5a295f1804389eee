"""Typed registry entries: the official server.json plus the `dev.chatops/governance` extension (SPEC §6).

Parsing is total: every raw entry becomes either a `ServerEntry` or a `Skipped` with a reason that operators
can read in the logs and in `chatops registry`. Unknown fields are tolerated (registries grow), but a field
we rely on with the wrong type skips the entry: a half-understood governance block must never widen access.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from registry_cache.urls import UnsafeUrl, canonical_resource, check_server_url

__all__ = [
    "GOVERNANCE_KEY",
    "OFFICIAL_KEY",
    "Governance",
    "OAuthClient",
    "ServerEntry",
    "Skipped",
    "ToolPolicy",
    "parse_entries",
]

OFFICIAL_KEY = "io.modelcontextprotocol.registry/official"
GOVERNANCE_KEY = "dev.chatops/governance"


def _list_to_tuple(value: Any) -> Any:
    # JSON has lists; strict mode would refuse them for tuple fields.
    return tuple(value) if isinstance(value, list) else value


def _int_to_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


Names = Annotated[tuple[str, ...], BeforeValidator(_list_to_tuple)]
Minutes = Annotated[float, BeforeValidator(_int_to_float), Field(ge=0, le=24 * 60)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class ToolPolicy(_Strict):
    approval: Literal["required", "never"] | None = None
    approver_groups: Names | None = None
    quorum: int | None = Field(default=None, ge=1, le=10)
    minutes_saved: Minutes | None = None
    enabled: bool = True


# The name of an environment variable, never a value: secrets stay out of the registry.
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class OAuthClient(_Strict):
    """The bot's client pre-registered at an `auth: oauth` server's authorization server (SPEC §5).

    Secrets are named, never given: `client_secret_env` / `private_key_env` name environment variables of
    the bot's processes. `issuer`, when set, is the only authorization server these credentials are ever sent
    to; when absent they are pinned to the first one the server's metadata names."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # a stray `client_secret` is refused

    client_id: str = Field(min_length=1, max_length=512)
    client_secret_env: EnvName | None = None
    private_key_env: EnvName | None = None
    token_endpoint_auth_method: (
        Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"] | None
    ) = None
    issuer: str | None = None


class Governance(_Strict):
    status: Literal["active", "deprecated", "suspended"]
    owner_team: str = ""
    support_channel: str = ""
    auth: Literal["user", "service", "none", "oauth"] = "user"
    oauth_client: OAuthClient | None = None  # auth: oauth only: pre-registered credentials
    resource: str | None = None
    # How its tokens are asked for (SPEC §5): RFC 8707 `resource`, a `scope` (Entra ID's api://…/.default),
    # or an RFC 8693 exchange of the person's own token with the resource as audience.
    token: Literal["resource", "scope", "exchange"] = "resource"
    scope: str | None = Field(
        default=None, min_length=1, max_length=1000, pattern=r"^[\x21\x23-\x5b\x5d-\x7e ]+$"
    )
    allowed_groups: Names = ()
    allowed_channels: Names = ()
    approver_groups: Names = ()
    quorum: int = Field(default=1, ge=1, le=10)
    minutes_saved: Minutes = 0
    private_data: bool = False
    tools: dict[str, ToolPolicy] = Field(default_factory=dict)


@dataclass(frozen=True)
class ServerEntry:
    """One usable-or-not server, as the bot understands it."""

    name: str  # registry name, e.g. io.example/presto
    short_name: str  # after the "/": what workflows write (presto.kill_query)
    title: str
    description: str
    version: str
    url: str  # the streamable-http remote
    official_status: str
    governance: Governance
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def resource(self) -> str:
        """Audience for tokens: the governance `resource`, else the remote URL."""
        return self.governance.resource or self.url

    @property
    def usable(self) -> bool:
        return self.official_status == "active" and self.governance.status in ("active", "deprecated")

    @property
    def deprecated(self) -> bool:
        return self.governance.status == "deprecated"

    def tool_policy(self, tool: str) -> ToolPolicy:
        return self.governance.tools.get(tool) or ToolPolicy()


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


def _parse_one(raw: Any) -> ServerEntry | Skipped:
    if not isinstance(raw, Mapping):
        return Skipped("(unnamed)", "entry is not an object")
    server = raw.get("server")
    meta = raw.get("_meta") or {}
    if not isinstance(server, Mapping) or not isinstance(meta, Mapping):
        return Skipped("(unnamed)", "entry has no server object")
    name = server.get("name")
    if not isinstance(name, str) or "/" not in name or not name.split("/", 1)[1]:
        return Skipped(str(name), "server name must look like namespace/name")
    official = meta.get(OFFICIAL_KEY) or {}
    status = official.get("status", "active") if isinstance(official, Mapping) else None
    if not isinstance(status, str):
        return Skipped(name, "official status is malformed")
    remotes = server.get("remotes") or []
    urls: list[str] = [
        str(r["url"])
        for r in remotes
        if isinstance(r, Mapping) and r.get("type") == "streamable-http" and isinstance(r.get("url"), str)
    ]
    if not urls:
        return Skipped(name, "no streamable-http remote")
    try:
        url = check_server_url(urls[0])
    except UnsafeUrl as exc:
        return Skipped(name, f"remote URL refused: {exc}")
    gov_raw = meta.get(GOVERNANCE_KEY)
    if gov_raw is None:
        return Skipped(name, f"no {GOVERNANCE_KEY} block (ungoverned servers are not offered)")
    try:
        governance = Governance.model_validate(gov_raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "governance"
        return Skipped(name, f"governance {where}: {first['msg']}")
    if governance.token == "scope" and not governance.scope:
        return Skipped(name, "governance token: scope needs a scope to ask for")
    if governance.resource is not None:
        try:
            check_server_url(governance.resource)
        except UnsafeUrl as exc:
            return Skipped(name, f"governance resource refused: {exc}")
    if governance.oauth_client is not None and governance.oauth_client.issuer is not None:
        try:
            check_server_url(governance.oauth_client.issuer)
        except UnsafeUrl as exc:
            return Skipped(name, f"governance oauth_client.issuer refused: {exc}")
    return ServerEntry(
        name=name,
        short_name=name.split("/", 1)[1],
        title=str(server.get("title") or name.split("/", 1)[1]),
        description=str(server.get("description") or ""),
        version=str(server.get("version") or ""),
        url=url,
        official_status=status,
        governance=governance,
        raw=raw,
    )


def _is_latest(raw: Mapping[str, Any]) -> bool:
    official = (raw.get("_meta") or {}).get(OFFICIAL_KEY) or {}
    return bool(official.get("isLatest", True)) if isinstance(official, Mapping) else True


def _one_server_per_resource(entries: list[ServerEntry], skipped: list[Skipped]) -> list[ServerEntry]:
    """Usable entries that claim the same token audience are all dropped (SPEC §6): a token obtained for
    that resource would be accepted by either server, so the bot could not promise that a server receives
    only its own. Unusable entries claim nothing (they get no tokens)."""
    by_resource: dict[str, list[ServerEntry]] = {}
    for entry in entries:
        if entry.usable:
            by_resource.setdefault(canonical_resource(entry.resource), []).append(entry)
    shared: set[str] = set()
    for group in by_resource.values():
        if len(group) < 2:
            continue
        for entry in group:
            others = ", ".join(e.name for e in group if e is not entry)
            reason = (
                f"resource {entry.resource} is also claimed by {others}; neither is used until one changes"
            )
            skipped.append(Skipped(entry.name, reason))
            shared.add(entry.name)
    return [e for e in entries if e.name not in shared]


def parse_entries(raw_entries: Iterable[Any]) -> tuple[list[ServerEntry], list[Skipped]]:
    """Parse every raw entry; keep one entry per name (the latest), one per short name and one per
    token resource."""
    parsed: list[ServerEntry] = []
    skipped: list[Skipped] = []
    for raw in raw_entries:
        result = _parse_one(raw)
        if isinstance(result, Skipped):
            skipped.append(result)
        elif _is_latest(result.raw):
            parsed.append(result)
    by_name: dict[str, list[ServerEntry]] = {}
    for entry in parsed:
        by_name.setdefault(entry.name, []).append(entry)
    by_short: dict[str, list[str]] = {}
    for name in by_name:
        by_short.setdefault(name.split("/", 1)[1], []).append(name)
    entries: list[ServerEntry] = []
    for name, group in by_name.items():
        if len(group) > 1:
            # Two "latest" entries under one name: we cannot tell which one the owners meant, so neither runs.
            skipped.append(Skipped(name, "registry lists this name more than once as latest"))
        elif len(by_short[name.split("/", 1)[1]]) > 1:
            # Short names are what workflows and tool names use; an ambiguous one could be hijacked.
            skipped.append(Skipped(name, f"short name {group[0].short_name!r} is used by several servers"))
        else:
            entries.append(group[0])
    entries = _one_server_per_resource(entries, skipped)
    entries.sort(key=lambda e: e.name)
    return entries, skipped
