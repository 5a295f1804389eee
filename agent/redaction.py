"""Find and blank out secrets before text leaves the process (Slack, the audit, logs, the model).

Patterns cover what tools and people paste by accident: JWTs, Slack and Anthropic tokens, AWS and GitHub
keys, bearer credentials, PEM private keys, credentials in URLs and `password=`-style assignments (also as
JSON and YAML keys). False positives cost a `[redacted]` in an answer; false negatives leak a credential into
a channel, so the patterns lean wide, while ordinary prose ("Bearer token", `max_tokens=1024`) stays readable.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["CREDENTIAL_REFUSAL", "REDACTED", "contains_credential", "redact_secrets", "redact_value"]

REDACTED = "[redacted]"
CREDENTIAL_REFUSAL = "refused: arguments contain what looks like a credential"

_KEY_NAME = r"[A-Za-z0-9_.-]*(?:password|passwd|secret|token|api_?key|private_?key|credentials?)"
_VALUE = r"(?!\[redacted\])[^\s\"',;&}]+"
# (pattern, replacement). Each hit counts once; earlier patterns win because their output is `[redacted]`.
_SECRETS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S
        ),
        REDACTED,
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"\b(?:xoxe\.)?xox[abposre]-[A-Za-z0-9][A-Za-z0-9-]*"), REDACTED),
    (re.compile(r"\bxapp-[A-Za-z0-9][A-Za-z0-9-]*"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
    (
        re.compile(r"(?i)(aws_secret_access_key[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), REDACTED),
    (re.compile(r"\bsk-ant-[A-Za-z0-9_-]+"), REDACTED),
    # A bearer credential has a digit or is long; "Bearer token" and "Bearer authentication" stay readable.
    (re.compile(r"(?i)\b(bearer\s+)(?:(?=[\w.~+/=-]*\d)[\w.~+/=-]{8,}|[\w.~+/=-]{20,})"), r"\1" + REDACTED),
    # key=value anywhere; "key": value (JSON) anywhere; key: value only at a line start (YAML, headers).
    (re.compile(rf"(?i)\b({_KEY_NAME}\s*=\s*[\"']?){_VALUE}"), r"\1" + REDACTED),
    (re.compile(rf"(?i)([\"']{_KEY_NAME}[\"']\s*:\s*[\"']?){_VALUE}"), r"\1" + REDACTED),
    (re.compile(rf"(?im)^(\s*{_KEY_NAME}\s*:\s*[\"']?){_VALUE}"), r"\1" + REDACTED),
    # Credentials inside a URL: scheme://user:password@host.
    (re.compile(r"(://[^/\s:@]*:)[^/\s@]+(?=@)"), r"\1" + REDACTED),
]


_FERNET = re.compile(r"\bgAAAAA[A-Za-z0-9_-]{40,}={0,2}")  # our own sealed tokens, should one ever leak
_SECRETS.append((_FERNET, REDACTED))


def redact_secrets(text: str) -> tuple[str, int]:
    """Replace token-like strings with `[redacted]`; return the new text and how many were replaced."""
    total = 0
    for pattern, replacement in _SECRETS:
        text, count = pattern.subn(replacement, text)
        total += count
    return text, total


# Narrower than the redaction patterns: used to refuse tool arguments, where a false positive blocks a call
# (a SQL query may say `token`; it will not hold an `eyJ…` JWT). Only shapes that are credentials by form.
_CREDENTIAL_SHAPES = re.compile(
    r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"  # JWT
    r"|\b(?:xoxe\.)?xox[abposre]-[A-Za-z0-9-]{8,}|\bxapp-[A-Za-z0-9-]{8,}"  # Slack
    r"|\bsk-ant-[A-Za-z0-9_-]{8,}"  # Anthropic
    r"|\bgAAAAA[A-Za-z0-9_-]{40,}"  # Fernet ciphertext (our own sealed tokens)
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"  # AWS access key id
    r"|\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"
    r"|(?i:\bbearer\s+[A-Za-z0-9._~+/=-]{20,})"
)


def contains_credential(text: str) -> bool:
    """True when `text` holds something shaped like a credential (token, key, our own ciphertext)."""
    return _CREDENTIAL_SHAPES.search(text) is not None


def redact_value(value: Any) -> Any:
    """`value` (JSON-shaped) with every string redacted as `redact_secrets` does, structure kept."""
    if isinstance(value, str):
        return redact_secrets(value)[0]
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value
