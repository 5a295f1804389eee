"""Downloading the files a person attached to a question (flows.ports.Attachments), from Slack only.

Only ever with the bot token, never a person's; only from Slack's own file host (a hostile event could name
an internal URL: anything else is refused without a request); the size cap is enforced while the body
streams in, not after; redirects are not followed (they could leave the host); every download is bounded in
time. A file that cannot be read is refused, and the question is still answered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx2

from agent.attachments import IMAGE_MAX_BYTES, MAX_FILES, FileRef, Read, image_type, kind_of

__all__ = ["Attached", "SlackFiles", "file_origins"]

log = logging.getLogger(__name__)

Attached = tuple[list[Read], list[tuple[FileRef, str]]]  # (read, [(refused, why)])


def file_origins(slack_api_url: str) -> frozenset[tuple[str, str, int]]:
    """Where attached files may be downloaded from: the Slack API's own origin, and Slack's file host when
    the API is Slack's (https://files.slack.com); (scheme, host, port)."""
    host = (urlsplit(slack_api_url).hostname or "").lower()
    origins = {_origin(slack_api_url)}
    if host == "slack.com":
        origins.add(("https", f"files.{host}", 443))
    return frozenset(origins)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


class SlackFiles:
    def __init__(
        self,
        http: httpx2.AsyncClient,
        bot_token: str,
        *,
        origins: frozenset[tuple[str, str, int]],
        text_max_bytes: int,
        timeout_seconds: float,
    ) -> None:
        self._http = http
        self._token = bot_token
        self._origins = origins
        self._text_max = text_max_bytes
        self._timeout = timeout_seconds

    async def read(self, refs: Sequence[FileRef]) -> Attached:
        reads: list[Read] = []
        refused: list[tuple[FileRef, str]] = []
        for n, ref in enumerate(refs):
            kind = kind_of(ref)
            if n >= MAX_FILES:
                refused.append((ref, "too_many"))
            elif kind == "refused":
                refused.append((ref, "type"))
            elif kind == "image" and ref.size > IMAGE_MAX_BYTES:
                refused.append((ref, "too_large"))
            elif not ref.url:  # e.g. `file_access: check_file_info`: Slack left the URL out
                refused.append((ref, "unreadable"))
            elif _origin(ref.url) not in self._origins:
                log.warning("file %s: refused a download URL outside Slack's file host", ref.id)
                refused.append((ref, "host"))
            else:
                got = await self._download(ref, kind)
                if isinstance(got, Read):
                    reads.append(got)
                else:
                    refused.append((ref, got))
        return reads, refused

    async def _download(self, ref: FileRef, kind: str) -> Read | str:
        """The file's bytes up to the cap (text: cut there; an image over the API's limit: refused)."""
        limit = self._text_max if kind == "text" else IMAGE_MAX_BYTES
        data = bytearray()
        cut = False
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._http.stream(
                "GET", ref.url, headers=headers, timeout=self._timeout, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    log.warning("file %s: download answered HTTP %s", ref.id, response.status_code)
                    return "unreadable"
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > limit:
                        cut = True
                        break
        except httpx2.HTTPError as exc:
            log.warning("file %s: download failed (%s)", ref.id, type(exc).__name__)
            return "unreadable"
        if cut and kind == "image":
            return "too_large"
        if kind == "image" and image_type(bytes(data)) is None:
            return "not_image"  # named an image, but is none: the API would refuse the whole question
        if cut and kind == "text":
            del data[limit:]  # a character cut in half reads as one replacement mark
        return Read(ref, "text" if kind == "text" else "image", bytes(data), cut=cut, limit=limit)
