"""Typed registry entries: the official server.json plus the `dev.chatops/governance` extension (SPEC §6).

Parsing is total: every raw entry becomes either a `ServerEntry` or a `Skipped` with a reason that operators
can read in the logs and in `chatops registry`. Unknown fields are tolerated (registries grow), but a field
we rely on with the wrong type skips the entry: a half-understood governance block must never widen access.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from registry_cache.remotes import Header, choose_remote, shown, streamable_remotes
from registry_cache.urls import UnsafeUrl, canonical_resource, check_server_url

__all__ = [
    "GOVERNANCE_KEY",
    "OFFICIAL_KEY",
    "Governance",
    "Header",
    "OAuthClient",
    "ServerEntry",
    "Skipped",
    "ToolPolicy",
    "parse_entries",
]

OFFICIAL_KEY = "io.modelcontextprotocol.registry/official"
GOVERNANCE_KEY = "dev.chatops/governance"
# The official server.json schema's name pattern (and its 200-character limit).
NAME_PATTERN = re.compile(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+")
NAME_MAX = 200


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
    approvals_channel: str | None = None  # overrides the server's for this tool's cards
    escalation_channel: str | None = None


# The name of an environment variable, never a value: secrets stay out of the registry.
# A registry entry names where a secret is, never the secret; and only variables set aside for exactly that:
# an entry naming SLACK_BOT_TOKEN or CHATOPS_SECRET_KEY would have the bot send it to a server of its choice.
OAUTH_VARIABLE_PREFIX = "CHATOPS_OAUTH_"
EnvName = Annotated[str, Field(pattern=r"^CHATOPS_OAUTH_[A-Za-z0-9_]{1,100}$")]


class OAuthClient(_Strict):
    """The bot's client pre-registered at an `auth: oauth` server's authorization server (SPEC §5).

    Secrets are named, never given: `client_secret_env` / `private_key_env` name environment variables of
    the bot's processes, `CHATOPS_OAUTH_*` only, each serving one usable entry. `issuer`, when set, is the
    only authorization server these credentials are ever sent to; when absent they are pinned to the first
    one the server's metadata names."""

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
    # Where this server's approval cards also go, and where a request still pending late is escalated
    # (SPEC §6, §7); a tool's own value overrides.
    approvals_channel: str = ""
    escalation_channel: str = ""
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
    url_variables: dict[str, str] = Field(default_factory=dict)  # fills a remote URL template's {variables}
    headers: dict[str, str] = Field(
        default_factory=dict
    )  # header name -> environment variable with its value


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
    headers: tuple[Header, ...] = ()  # sent on every request to this server, and only to it

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


class _Parsed(NamedTuple):
    entry: ServerEntry | None  # None: an older version (isLatest false), superseded without a word
    skipped: Skipped | None


def _label(name: Any) -> str:
    """How a skipped entry is named in logs and `chatops registry`: its name if it has a printable one."""
    return shown(name, 100)[1:-1] if isinstance(name, str) and name else "(unnamed)"


def _parse_one(raw: Any) -> _Parsed:
    if not isinstance(raw, Mapping):
        return _Parsed(None, Skipped("(unnamed)", f"entry is not an object but {type(raw).__name__}"))
    server, meta = raw.get("server"), raw.get("_meta")
    name = server.get("name") if isinstance(server, Mapping) else None
    label = _label(name)
    if not isinstance(server, Mapping):
        return _Parsed(None, Skipped(label, "entry has no server object"))
    meta = {} if meta is None else meta
    if not isinstance(meta, Mapping):
        return _Parsed(None, Skipped(label, f"_meta must be an object, not {type(meta).__name__}"))
    if not isinstance(name, str) or len(name) > NAME_MAX or not NAME_PATTERN.fullmatch(name):
        why = f"server name must look like namespace/name (^{NAME_PATTERN.pattern}$, at most {NAME_MAX})"
        return _Parsed(None, Skipped(label, why))
    official = meta.get(OFFICIAL_KEY)
    official = {} if official is None else official
    if not isinstance(official, Mapping):
        return _Parsed(None, Skipped(name, f"{OFFICIAL_KEY} must be an object"))
    status, latest = official.get("status", "active"), official.get("isLatest", True)
    if not isinstance(latest, bool):  # the schema says boolean: "false" is malformed, not latest
        return _Parsed(None, Skipped(name, f"isLatest must be true or false, not {shown(latest)}"))
    if not latest:
        return _Parsed(None, None)
    if not isinstance(status, str):
        return _Parsed(None, Skipped(name, "official status is malformed"))
    entry = _governed(name, server, meta.get(GOVERNANCE_KEY), status, raw)
    return _Parsed(None, entry) if isinstance(entry, Skipped) else _Parsed(entry, None)


def _governed(
    name: str, server: Mapping[str, Any], gov_raw: Any, status: str, raw: Mapping[str, Any]
) -> ServerEntry | Skipped:
    candidates = streamable_remotes(server.get("remotes"))
    if isinstance(candidates, str):
        return Skipped(name, candidates)
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
    remote = choose_remote(candidates, governance.url_variables, governance.headers, governance.auth)
    if isinstance(remote, str):
        return Skipped(name, remote)
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
    short = name.split("/", 1)[1]
    return ServerEntry(
        name=name,
        short_name=short,
        title=_str_or_empty(server.get("title")) or short,
        description=_str_or_empty(server.get("description")),
        version=_str_or_empty(server.get("version")),
        url=remote.url,
        official_status=status,
        governance=governance,
        raw=raw,
        headers=remote.headers,
    )


def _str_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _exclusive(
    entries: list[ServerEntry], skipped: list[Skipped], what: str, claims: Callable[[ServerEntry], set[str]]
) -> list[ServerEntry]:
    """Usable entries that claim one thing are all dropped, with the reason. A token audience (SPEC §6): a
    token obtained for that resource would be accepted by either server, so the bot could not promise that a
    server receives only its own. A header variable: its secret would go to both servers. Unusable entries
    claim nothing (they get no tokens and no headers)."""
    by_claim: dict[str, list[ServerEntry]] = {}
    for entry in entries:
        for claim in claims(entry) if entry.usable else set():
            by_claim.setdefault(claim, []).append(entry)
    dropped: dict[str, str] = {}
    for claim, group in by_claim.items():
        for entry in group if len(group) > 1 else ():
            others = ", ".join(e.name for e in group if e is not entry)
            why = f"{what} {claim} is also claimed by {others}; neither is used until one changes"
            dropped.setdefault(entry.name, why)
    skipped.extend(Skipped(name, why) for name, why in dropped.items())
    return [e for e in entries if e.name not in dropped]


def _oauth_variables(entry: ServerEntry) -> set[str]:
    client = entry.governance.oauth_client
    named = (client.client_secret_env, client.private_key_env) if client is not None else ()
    return {name for name in named if name is not None}


def parse_entries(raw_entries: Iterable[Any]) -> tuple[list[ServerEntry], list[Skipped]]:
    """Parse every raw entry, whatever it holds: usable entries and skipped ones with reasons, nothing else.
    Keep one entry per name (the latest), one per short name, one per token resource, one per header
    variable and one per client secret variable."""
    parsed: list[ServerEntry] = []
    skipped: list[Skipped] = []
    for raw in raw_entries:
        entry, skip = _parse_one(raw)
        if skip is not None:
            skipped.append(skip)
        elif entry is not None:
            parsed.append(entry)
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
    entries = _exclusive(entries, skipped, "resource", lambda e: {canonical_resource(e.resource)})
    entries = _exclusive(
        entries, skipped, "header variable", lambda e: {h.env for h in e.headers if h.env is not None}
    )
    entries = _exclusive(entries, skipped, "client secret variable", _oauth_variables)
    entries.sort(key=lambda e: e.name)
    return entries, skipped
