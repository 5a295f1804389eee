"""App Home (SPEC §7): the person's link, what they may use, what waits on them, what they asked, time saved.

`home_view` is a pure Block Kit builder (validated by slack_sdk); `Home.publish` gathers one person's data
and publishes it to that person. It runs whenever they open the tab and after they act on it.

Recent requests merge three sources by id: the per-person list `remember_request` keeps (every request,
tools or not), the audit trail (requests that called tools or asked for approval) and workflow runs. Time
saved sums `minutes_saved` of the person's succeeded tool calls and workflow runs (what `chatops stats`
counts) since Monday 00:00 UTC and since the 1st, as the owners' estimate and calibrated by feedback
(bot.home_impact); the audit part is cached for a minute, so flicking between tabs does not re-read the
month's audit stream, while feedback given since shows at once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from slack_sdk.models.views import View

from agent.redaction import redact_secrets
from approvals.home_records import RECENT_LIMIT, HomeRecords, TimeSaved, period_starts
from approvals.model_bill import UsageBook
from approvals.store import Approval, ApprovalStore
from approvals.turns import TurnStore
from approvals.workflow_runs import WorkflowRunStore
from bot.approval_text import mention, progress_text, slack_time
from bot.blocks import CONNECT_ACTION_ID, RECONNECT_ACTION_ID
from bot.cards import APPROVE_ACTION_ID, REJECT_ACTION_ID
from bot.home_impact import time_saved_blocks
from bot.home_servers import connections, with_connection
from bot.home_usage import usage_line
from bot.mrkdwn import escape
from bot.poster import Poster
from bot.slack_text import untrusted
from flows.server_linking import ServerLinking
from mcp_clients.listing import ListingCache
from mcp_clients.tokens import Identity
from registry_cache.model import ServerEntry
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot
from registry_cache.view import Person, RegistryView

__all__ = [
    "HOME_APPROVAL_BLOCK_PREFIX",
    "HOME_DISCONNECT_ACTION_ID",
    "Home",
    "home_view",
    "period_starts",
    "remember_request",
    "tool_summary",
    "withheld_note",
]

JSON = dict[str, Any]
Recent = tuple[str, str | None, str]  # (what was asked, link to its thread, where it stands)
HOME_DISCONNECT_ACTION_ID = "home_disconnect"
HOME_APPROVAL_BLOCK_PREFIX = "home_approval_"  # + approval id: block ids must be unique within a view
MAX_BLOCKS, MAX_SERVERS, MAX_APPROVALS = 100, 25, 15  # 100: Slack's limit for Home
_TURN_STATUS = {  # approvals.turns statuses, as the person would say them
    "answered": "answered",
    "paused": "waiting for approval",
    "failed": "failed",
    "refused": "not run",
    "waiting_for_link": "waiting for you to connect",
    "waiting_for_thread": "queued in its thread",
}

# ----- the view (pure) -------------------------------------------------------------------------------------


def home_view(
    *,
    identity: Identity | None,
    servers: Sequence[tuple[ServerEntry, str]],
    approvals: Sequence[Approval],
    recent: Sequence[Recent],
    saved: TimeSaved,
    connect_url: str | None,
    viewer: str = "",
    notice: str | None = None,
    connected: Mapping[str, str | None] | None = None,
    usage: str | None = None,
) -> JSON:
    """The Home tab. `viewer`: whom it is for (approvals they already voted on show no buttons); `notice`:
    safe mrkdwn about what just happened (a click's outcome), shown at the top; `connected`: for `auth: oauth`
    servers, their Connect link or None when connected (bot.home_servers)."""
    blocks: list[JSON] = [{"type": "header", "text": _plain("Your chatops home")}]
    blocks += [_section(notice[:2000])] if notice else []
    blocks += _account(identity, connect_url)
    blocks += time_saved_blocks(saved)
    blocks += [_section(f"*Your model usage this month*\n{usage}")] if usage else []
    if identity is not None:
        blocks += [_DIVIDER, _section(f"*Waiting on your approval ({len(approvals)})*")]
        blocks += [b for a in approvals[:MAX_APPROVALS] for b in _approval(a, viewer, identity.sub)]
        if not approvals or len(approvals) > MAX_APPROVALS:
            more = len(approvals) - MAX_APPROVALS
            blocks.append(_context(f"…and {more} more." if approvals else "Nothing is waiting on you."))
        blocks += [_DIVIDER, _section(f"*Servers you can use ({len(servers)})*")]
        shown = enumerate(servers[:MAX_SERVERS])
        blocks += [with_connection(_server(e, summary), i, e, connected or {}) for i, (e, summary) in shown]
        if not servers or len(servers) > MAX_SERVERS:
            none = "None yet: the registry opens servers to groups, and yours have none."
            blocks.append(_context(f"…and {len(servers) - MAX_SERVERS} more." if servers else none))
    lines = [_recent_line(text, link, status) for text, link, status in recent[:RECENT_LIMIT]]
    blocks += [_DIVIDER, _section("*Your recent requests*")]
    blocks.append(_section("\n".join(lines)) if lines else _context("You have not asked me anything yet."))
    if len(blocks) > MAX_BLOCKS:
        raise RuntimeError(f"bug: the Home view has {len(blocks)} blocks; Slack allows {MAX_BLOCKS}")
    return View(type="home", blocks=blocks).to_dict()  # to_dict() runs slack_sdk's validation


def tool_summary(entry: ServerEntry, *, only_in: Sequence[str] = ()) -> str:
    """What the registry says about this server's tools, as one short paragraph of mrkdwn."""
    gov, parts = entry.governance, []
    for name, policy in sorted(gov.tools.items()):
        if not policy.enabled:
            continue  # hidden tools are not offered, so they are not advertised either
        if policy.approval == "never":
            parts.append(f"`{_name(name, 60)}` runs at once")
        elif policy.approval == "required":
            rule = RegistryView.approval(entry, name, read_only_hint=None)
            needs = "1 approval" if rule.quorum == 1 else f"{rule.quorum} approvals"
            parts.append(f"`{_name(name, 60)}` needs {needs} from {_groups(rule.approver_groups)}")
    others = f"read-only tools run at once, others need approval from {_groups(gov.approver_groups)}"
    text = "; ".join([*parts, ("other tools: " if parts else "Tools: ") + others]) + "."
    if only_in:
        text = "Only in " + ", ".join(_channel(c) for c in only_in[:5]) + ". " + text
    return text if len(text) <= 1500 else text[:1499] + "…"


def withheld_note(withheld: Mapping[str, str], most: int = 3) -> str:
    """What the server's last listing kept from the assistant and why (its tool names are its own text)."""
    if not withheld:
        return ""
    shown = [f"`{_name(tool, 60)}`: {_name(why, 160)}" for tool, why in sorted(withheld.items())[:most]]
    more = f"; and {len(withheld) - most} more" if len(withheld) > most else ""
    return "\n:no_entry_sign: Not offered to the assistant: " + "; ".join(shown) + more + "."


def _account(identity: Identity | None, connect_url: str | None) -> list[JSON]:
    if identity is None:
        text = (
            ":link: *Connect your account*\nI act with your own company identity, so I can only see and do "
            "what you can. Connect once and I can answer your requests and show what you may use."
        )
        button = _button("Connect your account", CONNECT_ACTION_ID, url=connect_url, style="primary")
        return [_section(text), _actions("home_account", [button])] if connect_url else [_section(text)]
    groups = ", ".join(_name(g, 40) for g in sorted(identity.groups)[:20]) or "none"
    more = f" and {len(identity.groups) - 20} more" if len(identity.groups) > 20 else ""
    confirm = {
        "title": _plain("Disconnect your account?"),
        "text": _plain("I will forget your tokens. Connect again whenever you want me to act for you."),
        "confirm": _plain("Disconnect"),
        "deny": _plain("Cancel"),
    }
    buttons = [_button("Reconnect", RECONNECT_ACTION_ID, url=connect_url)] if connect_url else []
    buttons.append(_button("Disconnect", HOME_DISCONNECT_ACTION_ID, style="danger", confirm=confirm))
    return [
        _section(f":white_check_mark: Connected as *{_name(identity.email or identity.sub)}*"),
        _context(f"Groups: {groups}{more} (from your identity provider)"),
        _actions("home_account", buttons),
    ]


def _approval(a: Approval, viewer: str, viewer_sub: str) -> list[JSON]:
    reason = _clip(untrusted(" ".join(a.reason.replace("`", "'").split()), markdown=False), 400)
    reason = reason or "_(no reason given)_"
    # ensure_ascii: invisible and look-alike characters show as \\u escapes, as they do on the card.
    arguments = json.dumps(a.arguments, ensure_ascii=True, sort_keys=True).replace("`", "\\u0060")
    text = (
        f":raising_hand: `{_name(a.tool, 60)}` on *{_name(a.short_name or a.server, 60)}*, "
        f"requested by {mention(a.requester)}\n>{reason}\n```{_clip(escape(arguments), 600)}```\n"
        f"{progress_text(a)} Expires {slack_time(a.expires_at, '{date_short_pretty} {time}')}. "
        f"The card is in {_channel(a.channel)}."
    )
    if any(v.user == viewer or v.sub == viewer_sub for v in a.approvals):  # this account, or this person
        return [_section(text), _context("You have approved this; it needs more approvers.")]
    approve = _button("Approve", APPROVE_ACTION_ID, value=a.id, style="primary")
    reject = _button("Reject", REJECT_ACTION_ID, value=a.id, style="danger")
    return [_section(text), _actions(HOME_APPROVAL_BLOCK_PREFIX + a.id, [approve, reject])]


def _server(entry: ServerEntry, summary: str) -> JSON:
    gov, flag = entry.governance, " · _deprecated_" if entry.deprecated else ""
    owner, support = _name(gov.owner_team) or "unknown", _channel(gov.support_channel)
    title = f"*{_name(entry.title, 80)}* `{_name(entry.short_name, 60)}`{flag}"
    return _section(f"{title}\nOwner: {owner} · Support: {support}\n{summary}")


def _recent_line(text: str, link: str | None, status: str) -> str:
    label = _name(text.replace("|", "/"), 80) or "(empty message)"
    ok = link is not None and re.fullmatch(r"https://[^\s|<>]+", link)
    shown = f"<{link.replace('&', '&amp;')}|{label}>" if link and ok else label
    return f"• {shown} · _{_name(status, 40)}_"


_DIVIDER: JSON = {"type": "divider"}


def _plain(text: str) -> JSON:
    return {"type": "plain_text", "text": text}


def _md(text: str) -> JSON:
    return {"type": "mrkdwn", "text": text, "verbatim": True}  # only what we wrote as <…> is a link


def _section(text: str) -> JSON:
    return {"type": "section", "text": _md(text)}


def _context(text: str) -> JSON:
    return {"type": "context", "elements": [_md(text)]}


def _actions(block_id: str, elements: list[JSON]) -> JSON:
    return {"type": "actions", "block_id": block_id, "elements": elements}


def _button(label: str, action_id: str, **extra: Any) -> JSON:
    return {"type": "button", "text": _plain(label), "action_id": action_id} | {
        k: v for k, v in extra.items() if v is not None
    }


def _name(text: str, most: int = 80) -> str:
    flat = " ".join(text.split())
    return untrusted(flat if len(flat) <= most else flat[: most - 1] + "…", markdown=False)


def _clip(escaped: str, most: int) -> str:
    # Cut escaped text without leaving half an entity (&am…) behind.
    return escaped if len(escaped) <= most else re.sub(r"&[a-z]*$", "", escaped[: most - 1]) + "…"


def _channel(value: str) -> str:
    # Registry values are either channel ids (shown as live links) or names such as "#presto-help".
    return f"<#{value}>" if re.fullmatch(r"[CG][A-Z0-9]{2,}", value) else _name(value, 80) or "none"


def _groups(groups: Sequence[str]) -> str:
    names = [_name(g, 40) for g in groups[:6]]
    return " or ".join(names) + (f" (+{len(groups) - 6})" if len(groups) > 6 else "") if names else "nobody"


# ----- gathering and publishing ----------------------------------------------------------------------------


class Identities(Protocol):
    async def identity(self, team: str, user: str) -> Identity | None: ...


class Offers(Protocol):
    async def offer(self, team: str, user: str) -> str: ...


@dataclass(frozen=True)
class Home:
    """Gathers one person's Home from current state and publishes it (views.publish is safe to repeat)."""

    identities: Identities
    linking: Offers
    registry: SharedSnapshot
    approvals: ApprovalStore
    listings: ListingCache | None
    slack: Poster
    turns: TurnStore
    records: HomeRecords
    runs: WorkflowRunStore
    servers: ServerLinking  # `auth: oauth` servers: whether this person connected each
    bill: UsageBook  # this person's model usage this month

    async def publish(self, team: str, user: str, *, notice: str | None = None) -> None:
        identity = await self.identities.identity(team, user)
        # A fresh link each time: offers last 10 minutes, and every opening of the tab publishes again.
        connect_url = await self.linking.offer(team, user)
        servers: list[tuple[ServerEntry, str]] = []
        approvals: list[Approval] = []
        connected: dict[str, str | None] = {}
        if identity is not None:
            try:
                servers = _visible(await self.registry.view(), identity)
            except RegistryUnavailable as exc:
                notice = (notice + "\n" if notice else "") + f":warning: {escape(str(exc))}"
            servers = await self._with_withheld(servers)
            shown = [entry for entry, _ in servers[:MAX_SERVERS]]
            connected = await connections(self.servers, team, user, shown)
            pending = await self.approvals.pending_for_groups(identity.groups)
            # Not their own requests, asked from this Slack account or another linked to the same person.
            approvals = [a for a in pending if a.requester != user and a.requester_sub != identity.sub]
        saved, asked = await self.records.saved(user, time.time())
        view = home_view(
            identity=identity,
            servers=servers,
            approvals=approvals,
            recent=await self._recent(team, user, asked),
            saved=saved,
            connect_url=connect_url,
            viewer=user,
            notice=notice,
            connected=connected,
            usage=usage_line(*await self.bill.own(user)),
        )
        await self.slack.call("views.publish", user_id=user, view=view)

    async def _with_withheld(self, servers: list[tuple[ServerEntry, str]]) -> list[tuple[ServerEntry, str]]:
        """Each server's summary with what its last live listing withheld (malformed, poisoned, unfit)."""
        if self.listings is None or not servers:
            return servers
        withheld = await self.listings.withheld([(entry.name, entry.url) for entry, _ in servers])
        return [(entry, summary + withheld_note(withheld.get(entry.name, {}))) for entry, summary in servers]

    async def _recent(self, team: str, user: str, asked: dict[str, Any]) -> list[Recent]:
        items: dict[str, tuple[float, str, str, str, str]] = {}  # id -> (time, text, channel, ts, status)
        for data, at in await self.records.recent(team, user):
            items[data["id"]] = (at, data["text"], data["channel"], data["thread_ts"], "")
        for turn_id in sorted(asked, key=asked.__getitem__, reverse=True)[:RECENT_LIMIT]:
            turn = None if turn_id in items else await self.turns.load(turn_id)
            if turn is not None:
                items[turn_id] = (turn.created_at, turn.text, turn.channel, turn.thread_ts, "")
        for run in await self.runs.recent(team, user, limit=RECENT_LIMIT):
            what, status = f"workflow {run.workflow}", run.status.replace("_", " ")
            items[run.id] = (run.created_at, what, run.channel, run.message_ts or "", status)
        newest = sorted(items.items(), key=lambda kv: kv[1][0], reverse=True)[:RECENT_LIMIT]
        out: list[Recent] = []
        for item_id, (_, text, channel, ts, status) in newest:
            if not status:
                status = _TURN_STATUS.get((await self.turns.status(item_id)).get("status", ""), "in progress")
            flat, _ = redact_secrets(
                " ".join(re.sub(r"<@[A-Z0-9]+>", "", text).split())
            )  # "@bot do x" → "do x"
            out.append((flat, await self._permalink(channel, ts), status))
        return out

    async def _permalink(self, channel: str, ts: str) -> str | None:
        # A permalink never changes, so each is asked of Slack once and kept as long as the request is shown.
        if not channel or not ts:
            return None
        cached = await self.records.permalink(channel, ts)
        if cached is not None:
            return cached
        link = await self.slack.permalink(channel, ts)
        if link:
            await self.records.keep_permalink(channel, ts, link)
        return link


async def remember_request(
    redis: aioredis.Redis, team: str, user: str, turn_id: str, channel: str, thread_ts: str, text: str
) -> None:
    """Note a request for this person's Home (tests seed the list with it; turns use HomeRecords)."""
    await HomeRecords(redis).remember(team, user, turn_id, channel, thread_ts, text)


def _visible(view: RegistryView, identity: Identity) -> list[tuple[ServerEntry, str]]:
    """Servers this person may use anywhere; a channel-restricted one says where."""
    person, found = Person(identity.sub, identity.email, identity.groups), []
    for entry in view.entries:
        channels = entry.governance.allowed_channels
        if view.access(person, entry, None).allowed:
            found.append((entry, tool_summary(entry)))
        elif channels and view.access(person, entry, channels[0]).allowed:
            found.append((entry, tool_summary(entry, only_in=channels)))
    return found
