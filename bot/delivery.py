"""A turn's answer, delivered: in the thread for everyone, or to the requester alone (SPEC §7).

The answer is the model's text, which may repeat what a tool said: it goes out through the Block Kit
builders, which make it safe (bot.slack_text.untrusted), and an answer too long for messages is attached as
a file (bot.poster keeps control sequences and secrets out of files). A turn that read a `private_data`
server, or resumed with one's outcome, answers its requester alone; the thread learns only that it did.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from agent.loop import Answer, Failed, Paused
from agent.redaction import redact_secrets
from approvals.turns import Turn
from bot import blocks
from bot.poster import Poster, PostError
from bot.slack_text import join, ours, trusted, untrusted

__all__ = ["Delivery", "summary"]

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    poster: Poster

    async def public(
        self, turn: Turn, placeholder: str, result: Answer | Paused | Failed, seconds: float, attempt: str
    ) -> None:
        used = sorted({f"{c.server.split('/', 1)[-1]} · {c.tool}" for c in result.calls})
        footer = f"Used {', '.join(used)} · {seconds:.1f} s" if used else f"{seconds:.1f} s"
        if isinstance(result, Answer):
            text = result.text
            if result.notes:
                footer += " · " + " · ".join(result.notes)
        else:
            text = summary(result)
        text, _ = redact_secrets(text)
        stopped = _stopped(result)
        if stopped is not None:  # our words name who stopped it; what it found is the model's
            text = join([ours("Stopped by <@{user}>.", user=trusted(stopped[0])), untrusted(stopped[1])], "")
            footer = untrusted(footer)
        layout = blocks.answer_messages(
            text, footer=footer, feedback_id=turn.id, already_safe=stopped is not None
        )
        poster = self.poster
        try:
            for index, message in enumerate(layout.messages):
                if index == 0:
                    await poster.update(turn.channel, placeholder, text=message.text, blocks=message.blocks)
                else:
                    await poster.post(
                        turn.channel,
                        text=message.text,
                        blocks=message.blocks,
                        thread_ts=turn.thread_ts,
                        marker=f"{turn.id}:{attempt}:answer:{index}",
                    )
            if layout.upload_full_text:
                await poster.upload_text(
                    turn.channel, turn.thread_ts, filename="answer.md", title="Full answer", content=text
                )
        except PostError as exc:
            log.warning("answer blocks refused (%s); falling back to a file", exc.error)
            await poster.update(
                turn.channel, placeholder, text=trusted("The full answer is attached as a file.")
            )
            await poster.upload_text(
                turn.channel,
                turn.thread_ts,
                filename="answer.md",
                title="Answer",
                content=text + "\n\n" + footer,
            )

    async def private(
        self, turn: Turn, placeholder: str, result: Answer | Paused | Failed, seconds: float
    ) -> None:
        """A turn that read a `private_data` server answers the requester alone (ACCEPTANCE 23): the
        thread learns only that an answer was given, never what it said."""
        text = result.text if isinstance(result, Answer) else summary(result)
        text, _ = redact_secrets(text)
        footer = f"Only you can see this: it uses data from a server marked private · {seconds:.1f} s"
        layout = blocks.answer_messages(text, footer=footer, feedback_id=turn.id, overflow_threshold=1000)
        for message in layout.messages:
            await self.poster.ephemeral(
                turn.channel, turn.user, text=message.text, blocks=message.blocks, thread_ts=turn.thread_ts
            )
        note = ours(
            "I answered <@{user}> privately: the answer uses data from a server marked private.",
            user=turn.user,
        )
        await self.poster.update(turn.channel, placeholder, text=note)


_STOPPED_BY = re.compile(r"Stopped by <@([UW][A-Z0-9]{2,30})>\.")


def _stopped(result: Answer | Paused | Failed) -> tuple[str, str] | None:
    """(who, the rest) of a turn someone stopped: the loop says it "Stopped by <@U…>." (flows.stopping)."""
    if not isinstance(result, Failed) or result.kind != "stopped":
        return None
    said = _STOPPED_BY.match(result.message)
    if said is None:
        return None
    rest, _ = redact_secrets(result.message[said.end() :])
    return said.group(1), rest


def summary(result: Paused | Failed) -> str:
    if isinstance(result, Paused):
        lines = [f"• `{p.server.split('/', 1)[-1]}.{p.tool}`" for p in result.pending]
        return "This needs approval before it can run (see the card below):\n" + "\n".join(lines)
    return result.message
