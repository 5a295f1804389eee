"""The Stop button of a running turn. The click lands in `web`; the turn runs on some worker, which sees
the request in Redis at its next safe point (flows.stopping). Its asker may stop it, and so may an approver
for a server it is using (flows.stop_rights decides); a refused or late click is told why, alone, and
changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp

from approvals.turns import TurnStore
from bot.blocks import STOP_ACTION_ID
from bot.poster import Poster
from bot.slack_text import Mrkdwn, link, ours, trusted
from flows.linking import Linking
from flows.stop_rights import StopClick, StopRights

__all__ = ["register_stop", "stop_reply"]

log = logging.getLogger(__name__)

STOPPING = "Stopping: I'll finish at the next safe point (no tool call is cut half-way) and say what I found."
ALREADY = "Someone has already asked me to stop this request."
FINISHED = "That request has already finished."
NOT_YOURS = "Only <@{asker}>, who asked, can stop this request."
NOT_AN_APPROVER = "Only <@{asker}> or an approver for {servers} can stop this request."
CONNECT_TO_STOP = " If you approve for {servers}, {connect} first, then click Stop again."
COULD_NOT_RECORD = (
    "I couldn't record your Stop just now (my storage is unavailable). Nothing changed; try again."
)


def stop_reply(click: StopClick, asker: str, connect_url: str | None = None) -> Mrkdwn:
    """What the clicker alone is told; `connect_url` for a clicker who has not linked, so an approver at
    3 a.m. is one link away from the Stop, not told only that they may not."""
    if click.verdict == "refused" and click.servers:
        servers = _either(click.servers)
        if connect_url is not None and click.wants_link:
            connect = link(connect_url, "connect your account")
            return ours(NOT_AN_APPROVER + CONNECT_TO_STOP, asker=asker, servers=servers, connect=connect)
        return ours(NOT_AN_APPROVER, asker=asker, servers=servers)
    if click.verdict == "refused":
        return ours(NOT_YOURS, asker=asker)
    return trusted({"stopping": STOPPING, "already": ALREADY, "finished": FINISHED}[click.verdict])


def _either(names: Sequence[str]) -> str:
    """ "presto", "presto or spark", "presto, spark or airflow"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


async def _ack(ack: AsyncAck) -> None:
    await ack()


def register_stop(
    app: AsyncApp, rights: StopRights, store: TurnStore, poster: Poster, linking: Linking
) -> None:
    async def stop_clicked(body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        user = str((body.get("user") or {}).get("id") or "")
        turn = await store.load(str(action.get("value") or ""))
        if turn is None or not user:
            return
        try:
            click = await rights.click(turn, user)
            connect_url = await linking.offer(turn.team, user) if click.wants_link else None
            said = stop_reply(click, turn.user, connect_url)
        except RedisError as exc:
            log.warning("stop of turn %s not recorded (%s)", turn.id, type(exc).__name__)
            said = trusted(COULD_NOT_RECORD)
        await poster.ephemeral(turn.channel, user, text=said, thread_ts=turn.thread_ts)

    app.action(STOP_ACTION_ID)(ack=_ack, lazy=[stop_clicked])
