"""App Home's pure parts: what a server's last listing withheld, said safely."""

from __future__ import annotations

from bot.home import withheld_note


def test_withheld_tools_are_named_with_their_reasons_and_none_of_their_text_can_ping_or_format() -> None:
    note = withheld_note(
        {
            "bad": "its server lists it malformed (inputSchema.type: Input should be 'object')",
            "<!channel> *x*": "its definition looks poisoned (hidden-instruction tag)",
            "c": "r",
            "d": "r",
        }
    )
    assert note.startswith("\n:no_entry_sign: Not offered to the assistant: ")
    assert "`bad`: its server lists it malformed (inputSchema.type: Input should be 'object')" in note
    assert "<!channel>" not in note
    assert "and 1 more" in note
    assert withheld_note({}) == ""
