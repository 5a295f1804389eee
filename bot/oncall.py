"""`/oncall`: the command's text parsed into a value, and its replies and form built as Slack payloads (pure).

    /oncall help | list | run <workflow> [key=value ...] | status [run-id]

Values may be quoted like a shell (`reason="runaway backfill"`); a mistake becomes
`OncallCommand(kind="error")` with a message that says how to write it. Missing or invalid parameters are
asked for in a modal (`params_modal`), one typed input per parameter, with each problem shown under its
field. Every payload is built with slack_sdk's models and validated by them.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from slack_sdk.models.blocks import (
    Block,
    CheckboxesElement,
    ContextBlock,
    InputBlock,
    InputInteractiveElement,
    MarkdownTextObject,
    NumberInputElement,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from agent.workflow import MAX_STRING_PARAM, Param, Workflow
from bot.blocks import Message
from bot.mrkdwn import escape
from bot.slack_text import Mrkdwn, trusted

__all__ = [
    "MODAL_CALLBACK_ID",
    "OncallCommand",
    "help_text",
    "list_message",
    "params_modal",
    "parse_command",
    "read_modal_values",
    "submission_errors",
]

MODAL_CALLBACK_ID = "oncall_params"
VALUE_ACTION_ID = "value"
_BLOCK_PREFIX = "param_"
_SUBCOMMANDS = ("help", "list", "run", "status")
_WORKFLOW = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_RUN_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
_MAX_LISTED = 45  # a message holds 50 blocks: the header, the workflows, and the note about the rest
# Slack's clients turn typed quotes into typographic ones; shlex only knows the plain ones.
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"'})


@dataclass(frozen=True)
class OncallCommand:
    kind: Literal["help", "list", "run", "status", "error"]
    workflow: str = ""
    params: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    message: str = ""  # for kind="error": what was wrong and how to write it (mrkdwn, already safe)


def parse_command(text: str) -> OncallCommand:
    # Slack escapes these three in a command's text; the values people typed are what counts.
    plain = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").translate(_QUOTES)
    try:
        words = shlex.split(plain)
    except ValueError as exc:
        return _error(
            f'I couldn\'t read that ({exc}). Quote values with spaces: `reason="runaway backfill"`.'
        )
    if not words or words[0].lower() in ("help", "-h", "--help"):
        return OncallCommand("help")
    verb, rest = words[0].lower(), words[1:]
    if verb == "list":
        return OncallCommand("list") if not rest else _error("`/oncall list` takes nothing after it.")
    if verb == "status":
        if len(rest) > 1 or (rest and not _RUN_ID.fullmatch(rest[0])):
            return _error("Use `/oncall status` for your recent runs, or `/oncall status <run-id>` for one.")
        return OncallCommand("status", run_id=rest[0] if rest else None)
    if verb == "run":
        return _run(rest)
    close = difflib.get_close_matches(verb, _SUBCOMMANDS, n=1)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    return _error(f"I don't know `{escape(verb[:40])}`.{hint} Try `/oncall help`.")


def _run(words: list[str]) -> OncallCommand:
    if not words:
        return _error("Which workflow? `/oncall run <workflow> [key=value ...]`; `/oncall list` shows them.")
    name, pairs = words[0], words[1:]
    if not _WORKFLOW.fullmatch(name):
        return _error(f"`{escape(name[:64])}` is not a workflow name; `/oncall list` shows them.")
    params: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not _KEY.fullmatch(key):
            shown = escape(pair[:64])
            return _error(
                f'`{shown}` is not `key=value`. Quote values with spaces: `reason="runaway backfill"`.'
            )
        if key in params:
            return _error(f"`{key}` is given twice.")
        params[key] = value
    return OncallCommand("run", workflow=name, params=params)


def _error(message: str) -> OncallCommand:
    return OncallCommand("error", message=message)


def help_text(command: str = "/oncall") -> Mrkdwn:
    return trusted(
        f"*{command}* runs canned on-call workflows, with your identity and the usual approvals.\n"
        f"• `{command} list`: the workflows you can run\n"
        f"• `{command} run <workflow> [key=value ...]`: run one; missing parameters open a form. "
        'Quote values with spaces: `reason="runaway backfill"`\n'
        f"• `{command} status [run-id]`: your recent runs, or one run\n"
        f"• `{command} help`: this message"
    )


def list_message(workflows_visible: Sequence[Workflow], command: str = "/oncall") -> Message:
    """The workflows this person can run, each with how to run it."""
    if not workflows_visible:
        text = trusted("No workflows are available to you here.")
        return Message(text, [_section(text)])
    ordered = sorted(workflows_visible, key=lambda w: w.name)
    blocks = [_section(f"*Workflows you can run* ({len(ordered)})")]
    blocks += [_section(_describe(w, command)) for w in ordered[:_MAX_LISTED]]
    if len(ordered) > _MAX_LISTED:
        more = ", ".join(f"`{w.name}`" for w in ordered[_MAX_LISTED:])
        blocks.append(_context(f"…and {len(ordered) - _MAX_LISTED} more: {more}"[:3000]))
    return Message(trusted(f"{len(ordered)} workflows you can run"), blocks)


def _describe(workflow: Workflow, command: str) -> str:
    usage = " ".join(f"{p.name}=…" if p.required else f"[{p.name}=…]" for p in workflow.params)
    saves = f" _(saves ~{workflow.minutes_saved:g} min)_" if workflow.minutes_saved else ""
    line = (
        f"*{workflow.name}*: {escape(workflow.description)}{saves}\n`{command} run {workflow.name} {usage}`"
    )
    return line if len(line) <= 3000 else line[:2999] + "…"


def params_modal(
    workflow: Workflow, *, given: Mapping[str, str], errors: Mapping[str, str], private_metadata: str
) -> dict[str, Any]:
    """A form with one typed input per parameter, prefilled, each problem shown under its field."""
    blocks: list[Block] = [_section_block(f"*{workflow.name}*\n{escape(workflow.description)}"[:3000])]
    declared = {p.name for p in workflow.params}
    stray = [f"`{escape(k[:64])}`: {escape(v)}" for k, v in errors.items() if k not in declared]
    if stray:
        blocks.append(_context_block(":warning: " + "; ".join(stray)))
    for param in workflow.params:
        blocks.append(_input(param, given.get(param.name)))
        if param.name in errors:
            text = f":warning: {escape(errors[param.name])}"[:3000]
            blocks.append(_context_block(text, block_id=f"error_{param.name}"))
    view = View(
        type="modal",
        callback_id=MODAL_CALLBACK_ID,
        title=_plain("Run workflow"),
        submit=_plain("Run"),
        close=_plain("Cancel"),
        blocks=blocks,
        private_metadata=private_metadata,
    )
    view.validate_json()
    return view.to_dict()


def _input(param: Param, given: str | None) -> InputBlock:
    start = given if given is not None else ("" if param.default is None else _param_text(param.default))
    element: InputInteractiveElement
    if param.type == "boolean":
        yes = Option(value="true", text="Yes")
        checked = start.strip().lower() in ("true", "yes", "y", "on", "1")
        element = CheckboxesElement(
            action_id=VALUE_ACTION_ID, options=[yes], initial_options=[yes] if checked else None
        )
    elif param.choices:
        options = [Option(value=_param_text(c)[:150], text=_param_text(c)[:75]) for c in param.choices]
        chosen = next((o for o in options if o.value == start.strip()), None)
        element = StaticSelectElement(action_id=VALUE_ACTION_ID, options=options, initial_option=chosen)
    elif param.type in ("integer", "number"):
        number = start.strip() if _is_number(start.strip(), param.type == "number") else None
        element = NumberInputElement(
            action_id=VALUE_ACTION_ID, is_decimal_allowed=param.type == "number", initial_value=number
        )
    else:
        element = PlainTextInputElement(
            action_id=VALUE_ACTION_ID,
            initial_value=start[:MAX_STRING_PARAM] or None,
            max_length=MAX_STRING_PARAM,
        )
    return InputBlock(
        block_id=f"{_BLOCK_PREFIX}{param.name}",
        label=_plain(param.name),
        element=element,
        hint=_plain(param.description[:2000]) if param.description else None,
        optional=param.type == "boolean" or not param.required,  # an unticked box is a valid "false"
        dispatch_action=False,  # nothing happens until "Run"
    )


def read_modal_values(view_state_values: Mapping[str, Any]) -> dict[str, str]:
    """The submitted form as the text values `/oncall run` would have had (for `coerce_params`)."""
    values: dict[str, str] = {}
    for block_id, actions in view_state_values.items():
        state = actions.get(VALUE_ACTION_ID) if isinstance(actions, Mapping) else None
        if not block_id.startswith(_BLOCK_PREFIX) or not isinstance(state, Mapping):
            continue
        name, kind = block_id[len(_BLOCK_PREFIX) :], state.get("type")
        if kind == "checkboxes":
            values[name] = "true" if state.get("selected_options") else "false"
        elif kind == "static_select":
            option = state.get("selected_option")
            values[name] = str(option.get("value", "")) if isinstance(option, Mapping) else ""
        else:
            value = state.get("value")
            values[name] = "" if value is None else str(value)
    return values


def submission_errors(workflow: Workflow, errors: Mapping[str, str]) -> dict[str, Any]:
    """The `view_submission` answer that shows problems on the open form, next to their fields."""
    declared = {p.name for p in workflow.params}  # Slack refuses errors for blocks the form lacks
    shown = {f"{_BLOCK_PREFIX}{k}": v[:150] for k, v in errors.items() if k in declared}
    return {"response_action": "errors", "errors": shown}


def _is_number(text: str, decimal: bool) -> bool:
    pattern = r"-?\d+(\.\d+)?" if decimal else r"-?\d+"
    return bool(re.fullmatch(pattern, text))


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _plain(text: str) -> PlainTextObject:
    return PlainTextObject(text=text)


def _section_block(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text, verbatim=True))


def _context_block(text: str, block_id: str | None = None) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=text, verbatim=True)], block_id=block_id)


def _section(text: str) -> dict[str, Any]:
    return _section_block(text).to_dict()


def _context(text: str) -> dict[str, Any]:
    return _context_block(text).to_dict()
