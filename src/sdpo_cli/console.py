"""The one place that prints: a rich Console on stderr, error lines, and plain/live progress choice.

stdout is reserved for results (paths, `--json` objects) so shell scripts can pipe it; everything
else goes to stderr. Colour follows rich's rules (NO_COLOR, not a terminal -> no colour).
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)  # one message = one line, for logs and grep
out = Console(highlight=False, soft_wrap=True)


def error(line: str) -> None:
    """One red line on stderr (markup in `line` is not interpreted)."""
    err.print(line, style="bold red", markup=False)


def warn(line: str) -> None:
    err.print(line, style="yellow", markup=False)


def live_progress() -> bool:
    """Live (redrawn) progress only on an interactive terminal; plain lines otherwise."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb" and "NO_COLOR" not in os.environ
