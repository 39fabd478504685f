"""Text safe to show on a terminal: control characters made visible, so log content cannot drive it.

An ESC in an app name or a log line would otherwise reach the terminal as the
start of a control sequence (colours, cursor moves, a changed title, a
hyperlink, or on some terminals worse). Every C0 control but tab, DEL and
every C1 control are shown as escapes: ``\\n``, ``\\r``, and ``\\xNN``
otherwise (ESC is ``\\x1b``, CSI ``\\x9b``, BEL ``\\x07``). Names (apps,
regions, instances) are always shown this way; message text only when it goes
to a terminal: files and pipes get the exact bytes.
"""

from __future__ import annotations

#: RE2 (and ``re``) character class of what :func:`visible` rewrites.
CONTROL_CLASS = "[\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f]"
_SPECIAL = {0x0A: "\\n", 0x0D: "\\r"}
_VISIBLE = {
    code: _SPECIAL.get(code, f"\\x{code:02x}")
    for code in (*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0))
}


def visible(text: str) -> str:
    """``text`` with its control characters (tab excepted) shown as escapes."""
    return text.translate(_VISIBLE)
