"""Logging as one JSON line per record, with secrets scrubbed from every message (SPEC §5 "Secrets")."""

from __future__ import annotations

import json
import logging
import sys
import time

from agent.redaction import redact_secrets

__all__ = ["setup_logging"]


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        message, _ = redact_secrets(message)
        if record.name == "chatops.audit":
            return message  # already one JSON object
        line = {
            "time": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        return json.dumps(line, ensure_ascii=False)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Request-level chatter from HTTP clients would log URLs (and response_urls) at DEBUG/INFO.
    for noisy in (
        "httpx2",
        "httpx",
        "httpcore",
        "httpcore2",
        "slack_sdk",
        "slack_bolt",
        "mcp",
        "urllib3",
        "uvicorn.access",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
