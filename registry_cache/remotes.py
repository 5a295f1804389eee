"""Which remote of a server.json entry the bot connects to, and with which headers (SPEC §6).

The first `remotes[]` item of type `streamable-http` that can be used wins. Its URL may be a template
(`https://{tenant}.example.com/mcp`, server.json 2025-12-11): every `{variable}` is filled from governance
`url_variables`, never from the registry's own `default`s, and each value must be one URL-safe word, so no
scheme, host, port, path or query can be smuggled in through it; the result must pass the URL rules.

A remote's `headers` (KeyValueInput) get their values from governance `headers`, which name environment
variables. Only variables named `CHATOPS_HEADER_*` may be named: a registry entry must never be able to make
the bot send its own secrets (or anything else in its environment) to a server; the prefix is the operator's
consent. A secret header whose value the registry itself gives is refused (secrets never live in the
registry), and no header may replace what the bot controls: framing, the MCP session and protocol headers,
and `Authorization` unless the server takes no per-person token (`auth: none`).

Everything here answers with a `Remote` or a reason (a str) for `Skipped`; nothing raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from registry_cache.urls import UnsafeUrl, check_server_url

__all__ = [
    "HEADER_VARIABLE_PREFIX",
    "Header",
    "Remote",
    "choose_remote",
    "header_values",
    "shown",
    "streamable_remotes",
]

HEADER_VARIABLE_PREFIX = "CHATOPS_HEADER_"
_VARIABLE = re.compile(r"\{([^{}]*)\}")
_VARIABLE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# One URL-safe word (RFC 3986 unreserved), not starting with a dot: a label, a tenant id, a whole host name.
_VALUE = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,252}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")  # an HTTP header name (RFC 9110 token)
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{0,4096}")  # printable ASCII: nothing that ends a header line
_ENV_NAME = re.compile(re.escape(HEADER_VARIABLE_PREFIX) + r"[A-Za-z0-9_]{1,100}")
# Headers the transport and the MCP client set themselves; a registry entry may not replace them.
_RESERVED = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive", "upgrade"}
    | {"te", "trailer", "expect", "accept", "accept-encoding", "proxy-authorization", "last-event-id"}
)


@dataclass(frozen=True)
class Header:
    """One header sent on every request to one server: from an environment variable, or a literal value
    the registry gave for a header it does not call secret. Never the secret itself."""

    name: str
    env: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class Remote:
    url: str
    headers: tuple[Header, ...] = ()


def header_values(headers: Iterable[Header], environ: Mapping[str, str]) -> dict[str, str] | str:
    """The values to send (read from `environ` now), or why the server cannot be called: a variable that is
    not set, or holds what a header cannot carry. The reason names the variable, never its value."""
    values: dict[str, str] = {}
    for header in headers:
        if header.env is None:
            values[header.name] = header.value or ""
            continue
        value = environ.get(header.env)
        if value is None:
            return f"header {header.name} needs the environment variable {header.env}, which is not set"
        if not _HEADER_VALUE.fullmatch(value):
            return f"header {header.name}: {header.env} holds characters a header cannot carry"
        values[header.name] = value
    return values


def shown(value: Any, most: int = 60) -> str:
    """A registry value as a reason may quote it: printable, short."""
    text = value if isinstance(value, str) else type(value).__name__
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text if len(text) <= most else text[:most] + "…")


def streamable_remotes(remotes: Any) -> list[Mapping[str, Any]] | str:
    """The entry's `streamable-http` remotes, in order, or why it has none."""
    if remotes is None:
        return "no streamable-http remote"
    if not isinstance(remotes, list):
        return f"remotes must be a list, not {type(remotes).__name__}"
    candidates = [r for r in remotes if isinstance(r, Mapping) and r.get("type") == "streamable-http"]
    return candidates or "no streamable-http remote"


def choose_remote(
    candidates: list[Mapping[str, Any]],
    url_variables: Mapping[str, str],
    header_env: Mapping[str, str],
    auth: str,
) -> Remote | str:
    """The first of `candidates` (from `streamable_remotes`) that can be used, or why none can."""
    reasons: list[str] = []
    for raw in candidates:
        remote = _remote(raw, url_variables, header_env, auth)
        if isinstance(remote, Remote):
            return remote
        reasons.append(remote)
    if len(reasons) == 1:
        return reasons[0]
    return "no streamable-http remote can be used: " + "; ".join(reasons)


def _remote(
    raw: Mapping[str, Any], url_variables: Mapping[str, str], header_env: Mapping[str, str], auth: str
) -> Remote | str:
    template = raw.get("url")
    if not isinstance(template, str):
        return "the remote's url is not a string"
    url, why = _filled(template, url_variables)
    if url is None:
        return why
    try:
        url = check_server_url(url)
    except UnsafeUrl as exc:
        return f"remote URL refused: {exc}"
    headers = _headers(raw.get("headers"), header_env, auth)
    return Remote(url, headers) if isinstance(headers, tuple) else headers


def _filled(template: str, values: Mapping[str, str]) -> tuple[str | None, str]:
    """(the URL with every `{variable}` filled, "") or (None, why it cannot be)."""
    names = _VARIABLE.findall(template)
    if not names:
        return template, ""
    scheme, separator, _ = template.partition("://")
    if not separator or "{" in scheme:
        return None, "the remote URL template's scheme must be written out, not a {variable}"
    if bad := [n for n in names if not _VARIABLE_NAME.fullmatch(n)]:
        return None, f"the remote URL template has a malformed variable {shown(bad[0])}"
    if missing := sorted({n for n in names if n not in values}):
        listed = ", ".join("{" + n + "}" for n in missing)
        return None, f"the remote URL template needs {listed}: set it in governance url_variables"
    for name in names:
        value = values[name]
        if not _VALUE.fullmatch(value) or ".." in value:
            return (
                None,
                f"url_variables.{name} must be one URL-safe word (letters, digits, . _ ~ -), "
                f"not {shown(value)}",
            )
    return _VARIABLE.sub(lambda m: values[m.group(1)], template), ""


def _headers(raw: Any, header_env: Mapping[str, str], auth: str) -> tuple[Header, ...] | str:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        return f"the remote's headers must be a list, not {type(raw).__name__}"
    env_by_name = {k.lower(): v for k, v in header_env.items()}
    headers: dict[str, Header] = {}
    for item in raw:
        header = _declared_header(item, env_by_name)
        if isinstance(header, str):
            return header
        if header is not None:
            headers[header.name.lower()] = header
    for name, env in header_env.items():  # governance may add a header the remote does not declare
        if name.lower() not in headers:
            if not _TOKEN.fullmatch(name):
                return f"governance headers names an invalid header {shown(name)}"
            headers[name.lower()] = Header(name, env=env)
    for header in headers.values():
        if problem := _refused(header, auth):
            return problem
    return tuple(sorted(headers.values(), key=lambda h: h.name.lower()))


def _declared_header(item: Any, env_by_name: Mapping[str, str]) -> Header | str | None:
    """One KeyValueInput of the remote as a `Header`, None when optional and unset, or why not."""
    if not isinstance(item, Mapping):
        return "a remote header is not an object"
    name, secret, required = item.get("name"), item.get("isSecret", False), item.get("isRequired", False)
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        return f"a remote header has an invalid name {shown(name)}"
    if not isinstance(secret, bool) or not isinstance(required, bool):
        return f"header {name}: isSecret and isRequired must be booleans"
    env, value = env_by_name.get(name.lower()), item.get("value")
    if env is not None:
        return Header(name, env=env)
    if value is not None:
        if secret:
            return (
                f"header {name} is secret but the registry gives its value; a secret belongs in an "
                "environment variable named in governance headers"
            )
        if not isinstance(value, str) or "{" in value or not _HEADER_VALUE.fullmatch(value):
            return f"header {name}: its value must be printable text without {{variables}}"
        return Header(name, value=value)
    if required:
        return f"header {name} is required: name the environment variable that holds it in governance headers"
    return None


def _refused(header: Header, auth: str) -> str | None:
    lowered = header.name.lower()
    if lowered in _RESERVED or lowered.startswith("mcp-"):
        return f"header {header.name} is set by the bot itself and cannot come from the registry"
    if lowered == "authorization" and auth != "none":
        return (
            f"header Authorization would replace the per-person token of an auth: {auth} server; "
            "a server that takes one static credential is auth: none"
        )
    if header.env is not None and not _ENV_NAME.fullmatch(header.env):
        return (
            f"header {header.name}: governance names the environment variable {shown(header.env)}; only "
            f"variables named {HEADER_VARIABLE_PREFIX}* may be sent to servers"
        )
    return None
