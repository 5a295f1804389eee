"""Registry parsing is total: whatever the JSON, usable entries and skipped ones with reasons, nothing else.

The property tests draw server.json-shaped documents whose every field may also be any other JSON value
(`remotes: 5`, `_meta: "x"`, governance as a list, `isLatest: "false"`, names with spaces, URL templates,
header declarations); the tables pin the reasons operators read for the cases the issue names.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry_cache.model import GOVERNANCE_KEY, OFFICIAL_KEY, ServerEntry, Skipped, parse_entries
from registry_cache.remotes import HEADER_VARIABLE_PREFIX, Header
from registry_cache.urls import UnsafeUrl, check_server_url

GOOD_URL = "https://goodserver.example.com/mcp"  # out of reach of the drawn names and URLs

leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
any_json = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field as the schema says (mostly), or any other JSON value in its place."""
    return st.integers(0, 7).flatmap(lambda draw: any_json if draw == 7 else strategy)


names = st.sampled_from(["io.hostile/a", "io.hostile/b", "com.x/y.z", "kbag", "India MCP - GST", "a/b/c"]) | (
    st.from_regex(r"[a-z.]{1,8}/[a-z]{1,6}", fullmatch=True)
)
hostile_urls = st.sampled_from(
    [
        "{scheme}://h.example.com/mcp",
        "https://h.example.com/ mcp",
        "http://169.254.169.254/",
        "http://2852039166/",
        "https://h.example.com/mcp#x",
        "https://user:pw@h.example.com/",
        "ftp://h.example.com/",
    ]
) | st.text(max_size=30)
fine_urls = st.sampled_from(
    ["https://{tenant}.example.com/mcp", "https://{host}/mcp", "http://127.0.0.1:9/mcp"]
) | st.from_regex(r"https://[a-z]{1,5}\.example\.com/[a-z]{0,4}", fullmatch=True)
urls = st.integers(0, 3).flatmap(lambda draw: hostile_urls if draw == 3 else fine_urls)
headers = st.fixed_dictionaries(
    {"name": maybe(st.sampled_from(["Authorization", "X-Api-Key", "Host", "Mcp-Session-Id", "bad name"]))},
    optional={
        "isSecret": maybe(st.booleans()),
        "isRequired": maybe(st.booleans()),
        "value": maybe(st.sampled_from(["v1", "{x}", "line\nbreak", "s3cr3t"])),
    },
)
remotes = st.fixed_dictionaries(
    {"type": maybe(st.just("streamable-http")) | st.just("sse"), "url": maybe(urls)},
    optional={"headers": maybe(st.lists(maybe(headers), max_size=2)), "variables": any_json},
)
words = st.sampled_from(["acme", "eu-1", "evil.com/x?", "a:1", "..", "169.254.169.254", ""])
governance = st.fixed_dictionaries(
    {"status": maybe(st.sampled_from(["active", "deprecated", "suspended"]))},
    optional={
        "auth": maybe(st.sampled_from(["user", "service", "none"])),
        "allowed_groups": maybe(st.lists(st.text(max_size=5), max_size=3)),
        "resource": maybe(urls),
        "quorum": maybe(st.integers(-2, 12)),
        "tools": maybe(st.dictionaries(st.text(max_size=5), maybe(st.fixed_dictionaries({})), max_size=2)),
        "url_variables": maybe(
            st.dictionaries(st.sampled_from(["tenant", "host", "scheme"]), words, max_size=3)
        ),
        "headers": maybe(
            st.dictionaries(
                st.sampled_from(["Authorization", "X-Api-Key"]),
                st.sampled_from(
                    [f"{HEADER_VARIABLE_PREFIX}A", "SLACK_BOT_TOKEN", "CHATOPS_SECRET_KEY", "x y"]
                ),
                max_size=2,
            )
        ),
    },
)
official = st.fixed_dictionaries(
    {}, optional={"status": maybe(st.sampled_from(["active", "deleted"])), "isLatest": maybe(st.booleans())}
)
meta = st.fixed_dictionaries({GOVERNANCE_KEY: maybe(governance)}, optional={OFFICIAL_KEY: maybe(official)})
server = st.fixed_dictionaries(
    {"name": maybe(names), "remotes": maybe(st.lists(maybe(remotes), min_size=1, max_size=2))},
    optional={"title": any_json, "version": any_json},
)
entries = maybe(st.fixed_dictionaries({"server": maybe(server), "_meta": maybe(meta)}))


def good() -> dict[str, Any]:
    gov = {"status": "active", "owner_team": "t", "auth": "user", "allowed_groups": ["*"]}
    return {
        "server": {
            "name": "io.example/goodserver",
            "remotes": [{"type": "streamable-http", "url": GOOD_URL}],
        },
        "_meta": {GOVERNANCE_KEY: gov, OFFICIAL_KEY: {"status": "active", "isLatest": True}},
    }


def entry(
    remote: Any = None, *, name: str = "io.example/s", meta: Any = None, official: Any = None, **gov: Any
) -> dict[str, Any]:
    governance: dict[str, Any] = {"status": "active", "owner_team": "t", "allowed_groups": ["*"], **gov}
    remote = {"type": "streamable-http", "url": "https://s.example.com/mcp"} if remote is None else remote
    meta = {GOVERNANCE_KEY: governance} if meta is None else meta
    if official is not None:
        meta[OFFICIAL_KEY] = official
    return {"server": {"name": name, "remotes": [remote]}, "_meta": meta}


def one(raw: Any) -> ServerEntry | Skipped:
    usable, skipped = parse_entries([raw])
    assert len(usable) + len(skipped) == 1, (usable, skipped)
    return usable[0] if usable else skipped[0]


@given(st.lists(entries, max_size=6))
def test_parsing_any_document_gives_usable_entries_and_reasons_and_never_raises(raw: list[Any]) -> None:
    usable, skipped = parse_entries(raw)
    assert all(isinstance(e, ServerEntry) for e in usable)
    assert all(isinstance(s, Skipped) and s.reason and s.name and s.name.isprintable() for s in skipped)
    for e in usable:
        assert check_server_url(e.url) == e.url  # never a template, a space or a refused address
        assert all(h.env is None or h.env.startswith(HEADER_VARIABLE_PREFIX) for h in e.headers)
    assert len({e.resource for e in usable}) == len(usable)


@given(st.lists(entries, max_size=6))
def test_hostile_neighbours_cost_a_good_entry_nothing(hostile: list[Any]) -> None:
    alone, _ = parse_entries([good()])
    usable, _ = parse_entries([*hostile[:3], good(), *hostile[3:]])
    assert alone[0] in usable  # a hostile name, short name or resource would be a neighbour's own skip


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (entry() | {"server": {"name": "io.example/s", "remotes": 5}}, "remotes must be a list, not int"),
        (entry() | {"server": {"name": "io.example/s", "remotes": True}}, "remotes must be a list, not bool"),
        (entry(meta="x"), "_meta must be an object"),
        (entry(meta=[1]), "_meta must be an object"),
        (entry(meta={GOVERNANCE_KEY: ["status", "active"]}), "governance"),
        (entry(meta={GOVERNANCE_KEY: "active"}), "governance"),
        (entry(official=[]), "must be an object"),
        (entry(official={"isLatest": "false"}), "isLatest must be true or false"),
        (entry(official={"isLatest": 0}), "isLatest must be true or false"),
        (entry(name="kbag"), "namespace/name"),
        (entry(name="io.example/a b"), "namespace/name"),
        (entry(name="io.example/a/b"), "namespace/name"),
        (entry(name="io.example/" + "a" * 200), "namespace/name"),
        (entry({"type": "streamable-http", "url": "https://s.example.com/ mcp"}), "space"),
        (entry({"type": "streamable-http", "url": 5}), "url is not a string"),
        (entry(url_variables=5), "url_variables"),
        (entry(headers=["X"]), "headers"),
    ],
)
def test_each_malformed_part_skips_only_its_own_entry_and_says_why(raw: dict[str, Any], why: str) -> None:
    usable, skipped = parse_entries([raw, good()])
    assert [e.name for e in usable] == ["io.example/goodserver"]
    assert len(skipped) == 1
    assert why in skipped[0].reason


def test_an_older_version_is_superseded_quietly_but_a_string_islatest_is_malformed() -> None:
    usable, skipped = parse_entries([entry(official={"isLatest": False}), good()])
    assert ([e.name for e in usable], skipped) == (["io.example/goodserver"], [])
    result = one(entry(official={"isLatest": "true"}))
    assert isinstance(result, Skipped)


TEMPLATE = {"type": "streamable-http", "url": "https://{tenant}.mcp.example.com/{region}/mcp"}


def test_a_remote_url_template_is_filled_from_governance() -> None:
    result = one(entry(TEMPLATE, url_variables={"tenant": "acme", "region": "eu-1"}))
    assert isinstance(result, ServerEntry)
    assert result.url == "https://acme.mcp.example.com/eu-1/mcp"
    assert result.resource == result.url


@pytest.mark.parametrize(
    ("variables", "why"),
    [
        ({}, "needs {region}, {tenant}: set it in governance url_variables"),
        ({"tenant": "acme"}, "needs {region}"),
        ({"tenant": "evil.com/x?", "region": "eu"}, "url_variables.tenant must be one URL-safe word"),
        ({"tenant": "evil.com:8443", "region": "eu"}, "one URL-safe word"),
        ({"tenant": "user@evil.com", "region": "eu"}, "one URL-safe word"),
        ({"tenant": "acme", "region": ".."}, "one URL-safe word"),
        ({"tenant": "acme", "region": "eu#frag"}, "one URL-safe word"),
        ({"tenant": "169.254.169.254", "region": "x"}, "link-local"),  # filled, then the URL rules
        ({"tenant": "acme", "region": ""}, "one URL-safe word"),
    ],
)
def test_a_remote_url_template_is_never_taken_literally_nor_filled_with_an_injection(
    variables: dict[str, str], why: str
) -> None:
    template = (
        TEMPLATE
        if "169" not in variables.get("tenant", "")
        else {**TEMPLATE, "url": "http://{tenant}/{region}"}
    )
    result = one(entry(template, url_variables=variables))
    assert isinstance(result, Skipped)
    assert why in result.reason


def test_a_template_scheme_is_refused_and_registry_defaults_are_not_used() -> None:
    scheme = one(
        entry({"type": "streamable-http", "url": "{s}://h.example.com/mcp"}, url_variables={"s": "https"})
    )
    assert isinstance(scheme, Skipped)
    assert "scheme must be written out" in scheme.reason
    remote = {**TEMPLATE, "variables": {"tenant": {"default": "acme"}, "region": {"default": "eu"}}}
    defaults = one(entry(remote))
    assert isinstance(defaults, Skipped)
    assert "url_variables" in defaults.reason


def weather(declared: list[Any], **gov: Any) -> dict[str, Any]:
    remote = {"type": "streamable-http", "url": "https://w.example.com/mcp", "headers": declared}
    return entry(remote, **gov)


SECRET = {"name": "Authorization", "isSecret": True, "isRequired": True}


def test_a_required_header_takes_its_value_from_the_environment_variable_governance_names() -> None:
    var = f"{HEADER_VARIABLE_PREFIX}WEATHER"
    result = one(
        weather([SECRET, {"name": "X-Region", "value": "eu"}], auth="none", headers={"Authorization": var})
    )
    assert isinstance(result, ServerEntry)
    assert result.headers == (Header("Authorization", env=var), Header("X-Region", value="eu"))


@pytest.mark.parametrize(
    ("declared", "gov", "why"),
    [
        ([SECRET], {"auth": "none"}, "header Authorization is required: name the environment variable"),
        ([SECRET | {"value": "Bearer s3cr3t"}], {"auth": "none"}, "secret but the registry gives its value"),
        ([SECRET], {"auth": "none", "headers": {"Authorization": "SLACK_BOT_TOKEN"}}, "only variables named"),
        (
            [SECRET],
            {"auth": "none", "headers": {"Authorization": "CHATOPS_SECRET_KEY"}},
            "only variables named",
        ),
        ([SECRET], {"auth": "user", "headers": {"Authorization": "CHATOPS_HEADER_A"}}, "per-person token"),
        ([{"name": "Host", "value": "evil.com"}], {}, "set by the bot itself"),
        ([{"name": "Mcp-Session-Id", "value": "x"}], {}, "set by the bot itself"),
        ([{"name": "X-A", "value": "a\r\nHost: evil"}], {}, "printable text"),
        ([{"name": "bad name", "value": "x"}], {}, "invalid name"),
        ([{"name": "X-A", "isRequired": "yes"}], {}, "must be booleans"),
        ([5], {}, "not an object"),
        ([], {"headers": {"Host": "CHATOPS_HEADER_A"}}, "set by the bot itself"),
    ],
)
def test_a_header_the_bot_cannot_send_safely_skips_the_entry_with_the_reason(
    declared: list[Any], gov: dict[str, Any], why: str
) -> None:
    result = one(weather(declared, **gov))
    assert isinstance(result, Skipped)
    assert why in result.reason


def test_two_servers_naming_one_header_variable_are_both_unusable() -> None:
    var = {"Authorization": f"{HEADER_VARIABLE_PREFIX}SHARED"}
    a = weather([SECRET], auth="none", headers=var) | {}
    a["server"] = {**a["server"], "name": "io.example/a"}
    b = weather([SECRET], auth="none", headers=var)
    b["server"] = {**b["server"], "name": "io.example/b"}
    b["server"]["remotes"] = [{**b["server"]["remotes"][0], "url": "https://b.example.com/mcp"}]
    usable, skipped = parse_entries([a, b, good()])
    assert [e.name for e in usable] == ["io.example/goodserver"]
    assert {s.name for s in skipped} == {"io.example/a", "io.example/b"}
    assert all(f"header variable {HEADER_VARIABLE_PREFIX}SHARED is also claimed" in s.reason for s in skipped)


def test_a_skipped_name_is_printable_and_short_whatever_the_registry_wrote() -> None:
    result = one(entry(name="bad\x1b[31mname" + "x" * 500))
    assert isinstance(result, Skipped)
    assert result.name.isprintable()
    assert len(result.name) <= 102


def test_urls_with_spaces_or_braces_never_pass_the_url_rules() -> None:
    for url in ("https://a.example.com/m cp", "https://{x}.example.com/", "https://a.example.com/\t"):
        with pytest.raises(UnsafeUrl):
            check_server_url(url)
