"""Files a person attaches to a question, as the model reads them (pure: no I/O).

A text file (a log, a stack trace) reaches the model as untrusted data inside the same delimiters as tool
output (`agent.prompt.wrap_tool_output`, no server, tool "file:<name>"), with secrets redacted and the
cut stated when it was longer than the cap. An image becomes an image block. Anything else is refused: the
question is answered without it and the person is told why (the edge words it).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from agent.prompt import wrap_tool_output
from agent.redaction import redact_secrets

__all__ = [
    "IMAGE_MAX_BYTES",
    "IMAGE_TYPES",
    "FileRef",
    "Read",
    "dump_refs",
    "image_type",
    "kind_of",
    "load_refs",
    "question_content",
    "refs_from_event",
]

# The Messages API refuses an image over 5 MB (base64 makes it larger on the wire, which the API allows).
IMAGE_MAX_BYTES = 5 * 1024 * 1024
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/x-yaml", "application/x-sh"})
_TEXT_FILETYPES = frozenset(
    {"text", "log", "json", "yaml", "yml", "xml", "csv", "python", "javascript", "shell"}
)
MAX_FILES = 10  # more than this in one message: the rest are refused, not read

Kind = Literal["text", "image", "refused"]


@dataclass(frozen=True)
class FileRef:
    """What a Slack event says about an attached file; `url` is its url_private_download."""

    id: str
    name: str
    mimetype: str
    filetype: str
    size: int
    url: str


@dataclass(frozen=True)
class Read:
    """A file as downloaded: `data` holds at most the cap's bytes; `cut` when the file was longer."""

    ref: FileRef
    kind: Kind
    data: bytes
    cut: bool = False
    limit: int = 0


def refs_from_event(files: Any) -> tuple[FileRef, ...]:
    """The event's `files` list as refs; entries without an id or a download URL are skipped."""
    if not isinstance(files, list):
        return ()
    refs = []
    for f in files:
        if not isinstance(f, Mapping) or not f.get("id"):
            continue
        url = f.get("url_private_download") or f.get("url_private") or ""
        size = f.get("size")
        refs.append(
            FileRef(
                id=str(f["id"]),
                name=str(f.get("name") or f.get("title") or f["id"]),
                mimetype=str(f.get("mimetype") or ""),
                filetype=str(f.get("filetype") or ""),
                size=size if isinstance(size, int) and size >= 0 else 0,
                url=str(url),
            )
        )
    return tuple(refs)


def dump_refs(refs: Sequence[FileRef]) -> str:
    return json.dumps([asdict(r) for r in refs], separators=(",", ":")) if refs else ""


def load_refs(raw: str) -> tuple[FileRef, ...]:
    if not raw:
        return ()
    return tuple(FileRef(**item) for item in json.loads(raw))


def kind_of(ref: FileRef) -> Kind:
    """What the model can be given: text, an image, or nothing."""
    mimetype = ref.mimetype.split(";")[0].strip().lower()
    if mimetype in IMAGE_TYPES:
        return "image"
    if mimetype.startswith("text/") or mimetype in _TEXT_TYPES or ref.filetype.lower() in _TEXT_FILETYPES:
        return "text"
    return "refused"


def image_type(data: bytes) -> str | None:
    """The media type the bytes really are (PNG, JPEG, GIF, WebP), whatever the file claimed: the API
    refuses the whole request when an image block's bytes do not match its media type."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def question_content(said: str, reads: Sequence[Read]) -> str | list[dict[str, Any]]:
    """The person's message as the model gets it: the words, then each file read."""
    if not reads:
        return said
    blocks: list[dict[str, Any]] = [{"type": "text", "text": said}]
    for read in reads:
        if read.kind == "image":
            media = image_type(read.data) or read.ref.mimetype.split(";")[0].strip().lower()
            data = base64.b64encode(read.data).decode("ascii")
            blocks.append({"type": "text", "text": f"Attached image: {read.ref.name}"})
            blocks.append({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
        elif read.kind == "text":
            blocks.append({"type": "text", "text": _text_file(read)})
    return blocks


def _text_file(read: Read) -> str:
    text, _ = redact_secrets(read.data.decode("utf-8", "replace"))
    if read.cut:
        text += f"\n[file cut: only its first {read.limit} bytes of {read.ref.size or 'more'} were read]"
    # No server: a person's file is not any server's output, so withholding by server (a thread handed to
    # someone without access to a server) leaves it alone; it is the thread's, like the question.
    return f"Attached file: {read.ref.name}\n" + wrap_tool_output("", f"file:{read.ref.name}", text)
