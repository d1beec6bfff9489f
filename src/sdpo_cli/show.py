"""`sdpo show RUN_DIR`: one run in the terminal, from its files only (no model, no torch).

    sdpo show runs/20260101-120000_p1_sdpo_s0             # summary, step table, last 3 failing attempts
    sdpo show runs/20260101-120000_p1_sdpo_s0 --last 10 --steps 0    # more attempts, every step
    sdpo show runs/20260101-120000_p1_sdpo_s0 --json      # the same as one JSON object on stdout
    sdpo show comparisons/demo                            # a folder of runs: one line per run

The human output goes to stdout (it is what the command is for) through rich: colour only on a
terminal and never with NO_COLOR, tables that are never cut (tables.py). Model and user text
(replies, feedback, answers) is printed through console.safe with markup off, so neither escape
sequences nor `[bold]`-like text from a model reach the terminal. `--json` prints the records
exactly as stored.

Runs are read with runview.load_run: unfinished runs, missing keys and a torn last line are shown
as they are, never an error. A path that is not a run (or a folder of runs) is bad input (exit 2).

Does not own: the run format (runs.py) or the discovery numbers of a comparison (report.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import console
from .errors import ConfigError
from .runs import find_runs
from .runview import RunView, load_run, steps_with_warnings
from .tables import fits, print_table

LABELS = {"sdpo": "SDPO", "best-of-k": "best-of-k", "multi-turn": "multi-turn"}
REPLY_LINES = 30  # lines of a reply shown per failing attempt (head and tail); feedback is shown whole


def _num(x, fmt: str = ".3g") -> str:
    return "-" if not isinstance(x, (int, float)) or isinstance(x, bool) else format(x, fmt)


# (header, cell(step record), priority): on a narrow terminal the highest priority numbers go first.
_STEP_COLUMNS = [
    ("step", lambda s: _num(s.get("step"), "d"), 0),
    ("attempts", lambda s: _num(s.get("attempts_used"), "d"), 0),
    ("passed", lambda s: f"{_num(s.get('n_passed'), 'd')}/{_num(s.get('n_attempts'), 'd')}", 0),
    ("best tests", lambda s: f"{_num(s.get('best_so_far', s.get('best_passed')), 'd')}/{_num(s.get('n_tests'), 'd')}", 1),
    ("loss", lambda s: _num(s.get("loss")), 1),
    ("KL", lambda s: _num(s.get("kl")), 2),
    ("entropy", lambda s: _num(s.get("entropy")), 3),
    ("length p10/50/90", lambda s: "/".join(_num(s.get(f"len_p{q}"), "d") for q in (10, 50, 90)), 2),
    ("time s", lambda s: _num(s.get("time_step_s"), ".1f"), 4),
    ("warn", lambda s: str(len(s.get("warnings") or [])) if s.get("warnings") else "", 3),
]
_OPTIONAL = {"loss", "KL", "entropy", "warn"}  # left out when no step has them
_KEYS = {"loss": "loss", "KL": "kl", "entropy": "entropy", "warn": "warnings"}


def step_table(steps: list[dict], max_priority: int = 99) -> Table:
    from rich import box

    t = Table(box=box.SIMPLE_HEAD)
    cols = [c for c in _STEP_COLUMNS if c[2] <= max_priority
            and (c[0] not in _OPTIONAL or any(s.get(_KEYS[c[0]]) for s in steps))]
    for name, _, _ in cols:
        t.add_column(name, justify="right")
    for s in steps:
        t.add_row(*(cell(s) for _, cell, _ in cols), style="yellow" if s.get("warnings") else None)
    return t


def _narrow_step_table(con: Console, steps: list[dict]) -> Table:
    """The step table with its lowest-priority columns left out until it fits `con` (at least priority 0)."""
    for p in (3, 2, 1, 0):
        t = step_table(steps, p)
        if fits(con, t):
            return t
    return t


def _clip_lines(text: str, n: int = REPLY_LINES) -> str:
    lines = text.splitlines()
    if len(lines) <= n:
        return text
    head = n * 2 // 3
    return "\n".join(lines[:head] + [f"... ({len(lines) - n} lines not shown) ..."] + lines[-(n - head):])


def _fields(rows: list[tuple[str, str]]) -> Text:
    """"key  value" lines, keys aligned; values are never wrapped or cut (the console soft-wraps)."""
    width = max(len(k) for k, _ in rows)
    out = Text()
    for k, v in rows:
        out.append(f"{k:<{width}}  ", style="bold")
        out.append(console.safe(v) + "\n")
    out.rstrip()
    return out


def _summary_rows(view: RunView) -> list[tuple[str, str]]:
    cfg = view.config
    best, total = view.best_tests()
    rows = [("run", str(view.path)), ("status", view.headline())]
    unit = "turns" if view.method == "multi-turn" else "steps"
    rows.append((unit, f"{len(view.steps)} completed, {view.n_attempts} attempts recorded"))
    if best is not None:
        rows.append(("best tests", f"{best}/{total if total is not None else '?'} passed"))
    wall = (view.summary or {}).get("wall_time_s")
    if isinstance(wall, (int, float)):
        rows.append(("wall time", f"{wall:.1f} s"))
    if cfg:
        rows.append(("model", f"{cfg.get('model', '?')} ({cfg.get('backend', '?')} on {cfg.get('device', '?')})"))
        keys = ("budget", "batch_size", "max_new_tokens", "temperature", "lr", "teacher", "topk")
        rows.append(("settings", ", ".join(f"{k} {cfg[k]}" for k in keys if k in cfg)))
    if view.status in ("interrupted", "unfinished") and view.method == "sdpo":
        rows.append(("resume", f"sdpo solve --resume {view.path}"))
    rows += [("note", n) for n in view.notes]
    return rows


def _attempt_block(a: dict) -> list:
    status = str(a.get("status") or "?").replace("_", " ")
    head = Text()
    head.append(f"attempt {a.get('attempt', '?')}", style="bold")
    head.append(f" · step {a.get('step', '?')} #{a.get('index', '?')} · ")
    head.append(status, style="red")
    head.append(f" · {a.get('tests_passed', '?')}/{a.get('tests_total', '?')} tests · {a.get('n_tokens', '?')} tokens"
                + (" (hit the length limit)" if a.get("truncated") else ""))
    out = [head, Text("  reply:", style="dim"), Text(_indent(console.safe(_clip_lines(str(a.get("text", ""))))))]
    fb = str(a.get("feedback") or "")
    out += [Text("  feedback:", style="dim"), Text(_indent(console.safe(fb)) if fb else "    (none)")]
    return out


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in (text.splitlines() or [""]))


def last_failures(view: RunView, n: int) -> list[dict]:
    return [a for a in view.attempts if not a.get("passed")][-n:] if n > 0 else []


def run_json(view: RunView, last: int) -> dict:
    return {"run": str(view.path), "method": view.method, "problem_id": view.problem_id, "seed": view.seed,
            "status": view.status, "headline": view.headline(), "attempts_recorded": view.n_attempts,
            "successes_recorded": view.n_successes, "summary": view.summary, "config": view.config,
            "checkpoint": view.checkpoint, "steps": view.steps, "last_failures": last_failures(view, last),
            "notes": view.notes}


def render_run(view: RunView, *, last: int = 3, steps: int = 20, con: Console | None = None) -> None:
    con = con or console.out
    label = LABELS.get(view.method, view.method)
    con.print(Text(console.safe(f"{view.problem_id} · {label} · seed {view.seed}"), style="bold"))
    con.print(_fields(_summary_rows(view)), soft_wrap=True)
    if view.steps:
        shown = view.steps[-steps:] if steps > 0 else view.steps
        more = len(view.steps) - len(shown)
        title = "Steps" + (f" (the last {len(shown)} of {len(view.steps)}; --steps 0 shows all)" if more else "")
        con.print()
        print_table(con, step_table(shown), title=title, narrow=_narrow_step_table(con, shown))
    warns = steps_with_warnings(view)
    if warns:
        con.print("Warnings", style="bold yellow")
        for s, w in warns:
            con.print(Text(f"  step {s}: {console.safe(w)}", style="yellow"))
    fails = last_failures(view, last)
    if fails:
        con.print()
        n_fail = view.n_attempts - view.n_successes
        con.print(f"Last {len(fails)} of {n_fail} failing attempts", style="bold", markup=False)
        for a in fails:
            con.print()
            for part in _attempt_block(a):
                con.print(part, soft_wrap=True)
    elif last > 0 and view.n_attempts:
        con.print("\nNo failing attempts.", style="green")


def render_runs(views: list[RunView], root: Path, con: Console | None = None) -> None:
    """A folder of runs: one line each."""
    con = con or console.out

    def table(with_path: bool) -> Table:
        from rich import box

        t = Table(box=box.SIMPLE_HEAD)
        for col in (["run"] if with_path else []) + ["problem", "method", "seed", "status", "result"]:
            t.add_column(col)
        for v in views:
            cells = [v.problem_id, LABELS.get(v.method, v.method), str(v.seed), v.status, v.headline()]
            t.add_row(*([v.path.name] if with_path else []) + [console.safe(c) for c in cells])
        return t

    print_table(con, table(True), title=f"{len(views)} runs in {root}", narrow=table(False))
    con.print("sdpo show RUN_DIR shows one run.", style="dim")


def show(path: Path, *, last: int = 3, steps: int = 20, as_json: bool = False) -> None:
    """`sdpo show`: one run directory, or a folder of runs. Raises ConfigError (exit 2) for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such directory (give a run directory made by `sdpo solve` or `sdpo compare`)")
    if last < 0 or steps < 0:
        raise ConfigError("--last and --steps must be >= 0")
    dirs = [path] if (path / "config.yaml").is_file() else [r.path for r in find_runs(path)]
    if not dirs:
        raise ConfigError(f"{path}: not a run directory and no run directories below it "
                          "(a run directory holds config.yaml and attempts.jsonl; give one made by `sdpo solve`)")
    views = [load_run(d, keep=max(last, 1)) for d in dirs]
    if len(views) == 1:
        if as_json:
            print(json.dumps(run_json(views[0], last)))
        else:
            render_run(views[0], last=last, steps=steps)
    elif as_json:
        print(json.dumps({"runs": [{k: v for k, v in run_json(view, 0).items()
                                    if k in ("run", "method", "problem_id", "seed", "status", "headline", "summary")}
                                   for view in views]}))
    else:
        render_runs(views, path)
