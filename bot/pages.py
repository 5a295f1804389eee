"""The few HTML pages a person sees in a browser (account linking), plain and friendly.

Every value that comes from outside (a name, an email, a provider's error) is escaped here.
"""

from __future__ import annotations

from html import escape

__all__ = ["confirm_page", "page"]

_STYLE = """body{{font-family:system-ui,sans-serif;max-width:34rem;margin:15vh auto;padding:0 1rem;
line-height:1.5}}
h1{{color:{colour};font-size:1.4rem}}
button{{font-size:1rem;padding:.5rem 1.2rem}}"""


def _document(title: str, body: str, *, colour: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{escape(title)}</title>
<style>
{_STYLE.format(colour=colour)}</style></head>
<body><h1>{escape(title)}</h1>{body}</body></html>
"""


def page(title: str, message: str, *, ok: bool) -> str:
    body = f"<p>{escape(message)}</p>\n<p>You can close this tab and return to Slack.</p>"
    return _document(title, body, colour="#2e7d32" if ok else "#b71c1c")


def confirm_page(*, slack_name: str, signed_in_as: str, action: str, pending: str, csrf: str) -> str:
    """OAUTH_MATCH_EMAIL=false: the person says whether this sign-in is theirs. Only the button links."""
    title = f"Link Slack user {slack_name} to {signed_in_as}?"
    body = f"""<p>You signed in at your company's identity provider as <b>{escape(signed_in_as)}</b>.
The bot will act as that account for the Slack user <b>{escape(slack_name)}</b>: their questions and
actions will run with its permissions.</p>
<p>If you did not just click Connect in Slack yourself, or this is not you, close this tab: nothing is
linked until you press the button.</p>
<form method="post" action="{escape(action)}">
<input type="hidden" name="pending" value="{escape(pending)}">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<button type="submit">Link my accounts</button>
</form>"""
    return _document(title, body, colour="#1d3557")
