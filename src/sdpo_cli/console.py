"""The one place that prints: a rich Console on stderr, error lines, and plain/live progress choice.

stdout is reserved for results (paths, `--json` objects) so shell scripts can pipe it; everything
else goes to stderr. Colour follows rich's rules (NO_COLOR, not a terminal -> no colour).
"""

from __future__ import annotations

import os
import re
import sys

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)  # one message = one line, for logs and grep
out = Console(highlight=False, soft_wrap=True)


# C0 controls but \t and \n, DEL, C1 controls, and the Unicode bidi overrides/isolates that can make
# text display differently from what it is ("Trojan Source"). ESC (\x1b) is among them: no escape
# sequence from model output or a file name ever reaches the terminal.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(text: str) -> str:
    """`text` with every terminal control character made visible (``\\x1b``, ``\\r``, ``\\u202e``).

    For human output of anything a model, a judge or a user file supplied. Print the result with
    markup=False (or inside a rich Text) so `[bold]`-like text is not interpreted either. `--json`
    output stays exact and never goes through this.
    """

    def visible(m: re.Match) -> str:
        c = m.group(0)
        return repr(c)[1:-1] if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    return _UNSAFE.sub(visible, text)


def error(line: str) -> None:
    """One red line on stderr (markup in `line` is not interpreted, control characters are shown)."""
    err.print(safe(line), style="bold red", markup=False)


def warn(line: str) -> None:
    err.print(safe(line), style="yellow", markup=False)


def status_line(word: str, colour: str, rest: str) -> None:
    """`word` in `colour`, then `rest` verbatim (made safe, never read as markup), on stderr."""
    from rich.text import Text

    err.print(Text.assemble((word, colour), safe(rest)))


def live_progress() -> bool:
    """Live (redrawn) progress only on an interactive terminal; plain lines otherwise."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb" and "NO_COLOR" not in os.environ
