"""Tool poisoning, both ways (ACCEPTANCE 20; OWASP LLM01/LLM02).

In: a tool description is text from a server the bot does not control, and the model reads it as guidance.
A description that addresses the model (`<IMPORTANT>`, "ignore previous instructions", "do not tell the
user"), asks for credentials, or hides text in invisible characters disables that tool for the turn:
the model never sees it. Out: a call whose arguments carry something shaped like a credential (a JWT, a
Slack, Anthropic, AWS or GitHub key, one of our own Fernet ciphertexts, a private key) is refused before
any request leaves, whatever the model was talked into.

The credential shapes live in agent.redaction (one list, also used by the agent loop so that such a call
never becomes an approval card either). Description patterns lean wide: an honest description never needs
to shout at the model.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from agent.redaction import CREDENTIAL_REFUSAL, contains_credential

__all__ = ["CREDENTIAL_REFUSAL", "credential_in_arguments", "poisoned_description", "poisoned_tool"]

_CREDENTIAL_WORDS = (
    r"secrets?|credentials?|passwords?|api[ _-]?keys?|private[ _-]?keys?|id_rsa|\.ssh\b|\.env\b"
    r"|(?:access|bearer|auth|session|refresh|oauth|api|any|your|the\s+user'?s)[ _-]?tokens?"
)
_HIDDEN_INSTRUCTIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"<\s*/?\s*(important|system|instructions?|secret|admin)\b", re.I), "hidden-instruction tag"),
    (
        re.compile(
            r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instructions?|rules|guidelines|prompts?)\b",
            re.I | re.S,
        ),
        "asks the model to ignore its instructions",
    ),
    (
        re.compile(
            r"\b(do\s*n[o']?t|never)\s+(tell|mention|inform|show|reveal)\b.{0,30}\b(user|human|person)",
            re.I | re.S,
        ),
        "asks the model to hide something from the user",
    ),
    (
        re.compile(
            rf"\b(send|pass|include|read|forward|exfiltrate|attach|provide|collect)\b.{{0,60}}\b({_CREDENTIAL_WORDS})",
            re.I | re.S,
        ),
        "asks for credentials",
    ),
    (re.compile(r"\bsidenote\b", re.I), "asks for a side channel"),
]

# Zero-width and bidi control characters: text the person reviewing a tool cannot see.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")
_TAG_CHARS = re.compile("[\U000e0000-\U000e007f]")  # Unicode "tag" characters smuggle ASCII invisibly


def poisoned_tool(title: str | None, description: str | None, input_schema: Mapping[str, Any]) -> str | None:
    """Why this tool must not reach the model: its description, title or any text in its input schema
    (parameter names and descriptions are read by the model too)."""
    schema_text = json.dumps(input_schema, ensure_ascii=False)
    return poisoned_description(f"{title or ''}\n{description or ''}\n{schema_text}")


def poisoned_description(text: str) -> str | None:
    """Why this tool description must not reach the model, or None when it looks honest."""
    if _INVISIBLE.search(text) or _TAG_CHARS.search(text):
        return "invisible characters in the description"
    normalized = unicodedata.normalize("NFKC", text)
    for pattern, reason in _HIDDEN_INSTRUCTIONS:
        if pattern.search(normalized):
            return reason
    return None


def credential_in_arguments(arguments: Mapping[str, Any]) -> bool:
    """True when any string anywhere in the arguments (keys included) looks like a credential."""
    return any(contains_credential(s) for s in _strings(arguments))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []
