"""The Stop button of a running turn. The click lands in `web`; the turn runs on some worker, which sees
the request in Redis at its next safe point (flows.stopping). Only the asker may stop their request; a
refused or late click is told why, alone, and changes nothing."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from approvals.stops import TurnStops
from approvals.turns import TurnStore
from bot.blocks import STOP_ACTION_ID
from bot.poster import Poster
from bot.slack_text import ours, trusted

__all__ = ["register_stop"]

STOPPING = "Stopping: I'll finish at the next safe point (no tool call is cut half-way) and say what I found."
ALREADY = "Someone has already asked me to stop this request."
FINISHED = "That request has already finished."
NOT_YOURS = "Only <@{asker}>, who asked, can stop this request."
_RUNNING = frozenset({"running", "queued", ""})


async def _ack(ack: AsyncAck) -> None:
    await ack()


def register_stop(app: AsyncApp, stops: TurnStops, store: TurnStore, poster: Poster) -> None:
    async def stop_clicked(body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        user = str((body.get("user") or {}).get("id") or "")
        turn = await store.load(str(action.get("value") or ""))
        if turn is None or not user:
            return
        status = (await store.status(turn.id)).get("status", "")
        if turn.user != user:
            said = ours(NOT_YOURS, asker=turn.user)
        elif status not in _RUNNING:
            said = trusted(FINISHED)
        else:
            said = trusted(STOPPING if await stops.request(turn.id, user) else ALREADY)
        await poster.ephemeral(turn.channel, user, text=said, thread_ts=turn.thread_ts)

    app.action(STOP_ACTION_ID)(ack=_ack, lazy=[stop_clicked])
