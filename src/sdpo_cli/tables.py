"""Tables that are never cut: the wide layout when it fits, a narrow one when not, plain text in pipes.

    print_table(console.err, table, title="p1 (budget 8)", narrow=stacked_renderable)

rich squeezes a table that is wider than the console by wrapping its cells and cutting headers
("discov…"), and a console that is not a terminal is 80 columns wide by default. Here:
  * not a terminal (a pipe, a file, CI logs): the whole table at its natural width as a Markdown
    table (plain text, no colour, no wrapping, nothing cut; pastes into an issue as it is);
  * a terminal wide enough for the table: the rich table;
  * a narrower terminal: `narrow` (a renderable that fits, e.g. one block per row, or the same table
    with fewer columns); without one, the rich table as rich squeezes it.

Does not own: what the tables say (report.py, show.py). Imports only rich.
"""

from __future__ import annotations

import io
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

_WIDE = 10_000  # "unlimited" width for measuring and for the plain rendering


def natural_width(con: Console, table: Table) -> int:
    """Columns the table needs to show every cell on one line (its widest rendering)."""
    return con.measure(table, options=con.options.update_width(_WIDE)).maximum


def fits(con: Console, table: Table) -> bool:
    return natural_width(con, table) <= con.width


def plain(table: Table, title: str | None = None) -> str:
    """The table as a Markdown table at its natural width, nothing wrapped or cut, no colour."""
    scratch = Console(file=io.StringIO(), width=_WIDE, color_system=None, no_color=True, highlight=False,
                      emoji=False, legacy_windows=False)
    saved = table.box, table.title, table.show_edge
    table.box, table.title, table.show_edge = box.MARKDOWN, None, True
    try:
        width = natural_width(scratch, table)
        with scratch.capture() as cap:
            scratch.print(table, width=width, crop=False)
    finally:
        table.box, table.title, table.show_edge = saved
    lines = [line.rstrip() for line in cap.get().splitlines()]
    text = "\n".join(line for line in lines if line)
    return (f"{title}\n{text}" if title else text) + "\n"


def print_table(con: Console, table: Table, *, title: str | None = None,
                narrow: RenderableType | None = None) -> None:
    """Print `table` (with `title` above it) so that no header or value is cut; see the module docstring."""
    if not con.is_terminal:
        con.out(plain(table, title), end="", highlight=False)
        return
    if title:
        con.print(title, style="bold", markup=False, highlight=False)
    if narrow is None or fits(con, table):
        con.print(table)
    else:
        con.print(narrow)
