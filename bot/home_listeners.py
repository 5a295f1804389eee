"""App Home listeners: publish the tab when it is opened, Disconnect (which forgets the person's tokens and
revokes their refresh token at the provider, RFC 7009; their own server connections go too), Disconnect
of one `auth: oauth` server (forgotten, and revoked at its authorization server), and Approve/Reject
clicked on the tab.

Every listener acknowledges first and works in a Bolt lazy listener (SPEC §10). The Home's Approve/Reject
buttons carry the cards' action ids and values (the approval id), but only clicks made on a Home view match
here; Bolt runs the first listener that matches, so `register_home` must run before
bot.approval_listeners registers the card buttons. A click on the Home is judged by the same approval
service as a click on the card, checked against the card it stands for, and the tab is re-published with
the outcome at the top (a Home view has no thread to post an ephemeral reply in).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from approvals.audit import Audit, link_record
from bot import cards
from bot.approval_clicks import ApprovalClicks
from bot.approval_text import progress_text
from bot.home import HOME_DISCONNECT_ACTION_ID, Home
from bot.home_servers import HOME_SERVER_DISCONNECT_PREFIX
from bot.identity import BotIdentity
from bot.mrkdwn import escape
from bot.poster import PostError
from flows.server_linking import ServerLinking
from mcp_clients.tokens import Revocation, TokenBroker
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot

__all__ = ["Accounts", "register_home"]

log = logging.getLogger(__name__)

COULD_NOT_RECORD = "I couldn't record your decision just now (my storage is unavailable). Nothing changed."
NOT_OFFERED = "That request is not one I showed you here; open the Home tab again."
_FORGOTTEN = ":wave: Disconnected: I have forgotten your tokens."
DISCONNECT_NOTICE: dict[Revocation, str] = {
    "revoked": f"{_FORGOTTEN} Your sign-in was revoked at your identity provider too. Connect again anytime.",
    "unsupported": f"{_FORGOTTEN} Connect again anytime.",
    "nothing": f"{_FORGOTTEN} Connect again anytime.",
    "failed": (
        f"{_FORGOTTEN} Your identity provider could not be reached to revoke your sign-in there; it ends "
        "when it expires, or revoke it in your account settings at the provider. Connect again anytime."
    ),
}
DISCONNECT_DETAIL: dict[Revocation, str] = {
    "revoked": "refresh token revoked at the provider",
    "unsupported": "the provider offers no revocation",
    "nothing": "no refresh token to revoke",
    "failed": "revocation at the provider failed",
}

SERVER_DISCONNECT = re.compile("^" + re.escape(HOME_SERVER_DISCONNECT_PREFIX) + r"\d+$")  # one per server
SERVER_DISCONNECT_DETAIL: dict[Revocation, str] = {
    "revoked": "tokens revoked at its authorization server",
    "unsupported": "its authorization server offers no revocation",
    "nothing": "it was not connected",
    "failed": "revocation at its authorization server failed",
}
SERVER_DISCONNECT_NOTICE: dict[Revocation, str] = {
    "revoked": "They were revoked at `{name}`'s own sign-in too. Connect again anytime.",
    "unsupported": "Connect again anytime.",
    "nothing": "Connect again anytime.",
    "failed": (
        "`{name}`'s sign-in could not be reached to revoke them there; they end when they expire. Connect "
        "again anytime."
    ),
}


async def _ack(ack: AsyncAck) -> None:
    await ack()


async def _on_home(body: dict[str, Any]) -> bool:
    return (body.get("view") or {}).get("type") == "home"


@dataclass(frozen=True)
class Accounts:
    """What Disconnect acts on: the person's link, the servers they connected themselves, the audit."""

    broker: TokenBroker
    servers: ServerLinking
    registry: SharedSnapshot
    audit: Audit


def register_home(
    app: AsyncApp, home: Home, accounts: Accounts, clicks: ApprovalClicks, bot: BotIdentity
) -> None:
    async def refresh(team: str, user: str, notice: str | None = None) -> None:
        try:
            await home.publish(team, user, notice=notice)
        except (PostError, RedisError) as exc:
            # Nothing to tell the person through: the tab keeps its last version until the next opening.
            log.warning(
                "could not publish the Home of %s: %s", user, getattr(exc, "error", type(exc).__name__)
            )

    async def opened(body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home":  # the Messages tab fires this event too
            await refresh(str(body.get("team_id") or bot.team), str(event["user"]))

    async def disconnect(body: dict[str, Any]) -> None:
        team, user = _who(body, bot)
        await refresh(team, user, await _disconnect(accounts, team, user))

    async def disconnect_server(body: dict[str, Any]) -> None:
        team, user = _who(body, bot)
        await refresh(team, user, await _disconnect_server(accounts, team, user, _clicked(body)))

    async def approve(body: dict[str, Any]) -> None:
        team, user = _who(body, bot)
        try:
            notice = await _vote_from_home(clicks, body, user)
        except RedisError:
            notice = COULD_NOT_RECORD
        await refresh(team, user, notice)

    async def open_reject(body: dict[str, Any], client: AsyncWebClient) -> None:
        team, user = _who(body, bot)
        approval_id = _clicked(body)
        try:
            offered = _offered(body, approval_id)
            refusal = await clicks.may_reject(approval_id, user=user) if offered else NOT_OFFERED
        except RedisError:
            refusal = COULD_NOT_RECORD
        if refusal:
            await refresh(team, user, escape(refusal))
            return
        # The reason modal and its submission are the card's (bot.approval_listeners): both paths agree.
        await client.views_open(trigger_id=body["trigger_id"], view=cards.reject_modal(approval_id))

    app.event("app_home_opened")(ack=_ack, lazy=[opened])
    app.action(HOME_DISCONNECT_ACTION_ID)(ack=_ack, lazy=[disconnect])
    app.action(SERVER_DISCONNECT)(ack=_ack, lazy=[disconnect_server])
    app.action(cards.APPROVE_ACTION_ID, matchers=[_on_home])(ack=_ack, lazy=[approve])
    app.action(cards.REJECT_ACTION_ID, matchers=[_on_home])(ack=_ack, lazy=[open_reject])


async def _disconnect(accounts: Accounts, team: str, user: str) -> str:
    """Forget this person's tokens (and revoke them at the provider); the tab's notice."""
    identity = await accounts.broker.identity(team, user)
    revocation = await accounts.broker.disconnect(team, user)
    try:  # and every server they connected themselves: "I will forget your tokens" means all of them
        entries = (await accounts.registry.view()).entries
    except RegistryUnavailable:
        entries = ()  # forgotten all the same, just not revoked at their servers
    await accounts.servers.disconnect_all(team, user, entries)
    if identity is not None:
        detail = f"disconnected from App Home; {DISCONNECT_DETAIL[revocation]}"
        await accounts.audit.record(
            link_record("account_unlink", "succeeded", team=team, user=user, sub=identity.sub, detail=detail)
        )
    return DISCONNECT_NOTICE[revocation]


async def _disconnect_server(accounts: Accounts, team: str, user: str, server: str) -> str:
    """Forget this person's tokens for one `auth: oauth` server and revoke them there; the tab's notice."""
    try:
        entry = (await accounts.registry.view()).server(server)
    except RegistryUnavailable as exc:
        return f":warning: {escape(str(exc))}. Nothing was disconnected; try again shortly."
    if entry is None or entry.governance.auth != "oauth":
        return NOT_OFFERED
    revocation = await accounts.servers.disconnect(team, user, entry)
    identity = await accounts.broker.identity(team, user)
    await accounts.audit.record(
        link_record(
            "server_disconnect",
            "succeeded",
            team=team,
            user=user,
            sub=identity.sub if identity is not None else "",
            server=entry.name,
            detail=f"disconnected from App Home; {SERVER_DISCONNECT_DETAIL[revocation]}",
        )
    )
    name = escape(entry.short_name)
    return f"{_FORGOTTEN} (for `{name}`). {SERVER_DISCONNECT_NOTICE[revocation].format(name=name)}"


async def _vote_from_home(clicks: ApprovalClicks, body: dict[str, Any], user: str) -> str | None:
    """An Approve on the Home, judged as a click on the card it stands for; the notice for the tab's top."""
    approval_id = _clicked(body)
    approval = await clicks.service.get(approval_id) if _offered(body, approval_id) else None
    if approval is None or not approval.cards:
        return NOT_OFFERED
    card = approval.cards[0]  # the Home stands for the card: the service checks the click against it
    text = await clicks.vote(approval_id, user=user, channel=card.channel, message_ts=card.ts)
    after = await clicks.service.get(approval_id)
    if not text and after is not None:
        call = f"`{escape(after.tool)}` on {escape(after.short_name)}"
        text = f":white_check_mark: Your approval of {call} is recorded. {progress_text(after)}"
    return text or None


def _who(body: dict[str, Any], bot: BotIdentity) -> tuple[str, str]:
    user = body.get("user") or {}
    team = (body.get("team") or {}).get("id") or user.get("team_id") or bot.team
    return str(team), str(user["id"])


def _clicked(body: dict[str, Any]) -> str:
    return str((body.get("actions") or [{}])[0].get("value") or "")


def _offered(body: dict[str, Any], approval_id: str) -> bool:
    """Was this approval on the Home view the click came from? Slack sends the view as we published it, so
    this is the Home's counterpart of the card check: a button only decides what we put on it."""
    for block in (body.get("view") or {}).get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("value") == approval_id and approval_id:
                return True
    return False
