"""The few HTML pages a person sees in a browser (account linking), plain and friendly."""

from __future__ import annotations

from html import escape

__all__ = ["page"]


def page(title: str, message: str, *, ok: bool) -> str:
    colour = "#2e7d32" if ok else "#b71c1c"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:34rem;margin:15vh auto;padding:0 1rem;line-height:1.5}}
h1{{color:{colour};font-size:1.4rem}}</style></head>
<body><h1>{escape(title)}</h1><p>{escape(message)}</p>
<p>You can close this tab and return to Slack.</p></body></html>
"""
