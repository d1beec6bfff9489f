"""The one renderer of job events (events.py) for `solve` and `compare`, in-process or from Ray.

    with Renderer(total=len(jobs), done=already_finished, quiet=False) as show:
        for event in run_jobs(jobs):
            show(event)

On an interactive terminal: a live display (a bar for the whole plan when it has several jobs, and
one bar per running job, several at once under Ray). Otherwise (logs, CI, pipes, NO_COLOR): plain
lines on stderr, one per job start and end, and step lines (every SDPO step, which carries the loss;
for the baselines at most one per job every HEARTBEAT_S). Nothing with quiet. Results for scripts
(`--json`) are the CLI's business, on stdout. Text that came from a user or a model goes through
console.safe() and is printed without markup.
"""

from __future__ import annotations

import sys
import time

from . import console
from .console import safe
from .events import Done, Error, JobKey, Note, Start, Step

HEARTBEAT_S = 30.0


def fmt_step(rec: dict, budget: int, elapsed: float) -> str:
    used = rec["attempts_used"]
    eta = elapsed / used * (budget - used) if used else 0
    if "loss" in rec:
        what = f"loss {rec['loss']:.4f} kl {rec['kl']:.4f}"
    elif "n_correct" in rec:
        what = f"correct {rec['n_correct']}"
    else:
        what = "no update (solved)" if rec.get("n_passed") else "no update"
    return (f"step {rec['step']:>3} | attempts {used}/{budget} | passed {rec['n_passed']}/{rec['n_attempts']} | "
            f"best tests {rec['best_so_far']}/{rec['n_tests']} | {what} | len p50 {rec['len_p50']} | "
            f"{elapsed:.0f}s elapsed, ETA {eta:.0f}s")


def done_line(job: JobKey, s: dict, secs: float | None = None) -> tuple[str, str | None]:
    """(text, style) of a finished job."""
    took = f" ({secs:.0f}s)" if secs is not None else f" ({s.get('wall_time_s', 0):.0f}s)"
    if s["method"] == "best-of-k":
        return f"{job}: {s['n_correct']}/{s['n_samples']} samples correct{took}", None
    if s["solved"]:
        return f"{job}: solved at attempt {s['discovery_index']}{took}; solution in {safe(s['run'])}", "green"
    return (f"{job}: not solved in {s['attempts_used']} attempts (best {s['best_tests_passed']}/{s['n_tests']} "
            f"tests){took}", None)


class Renderer:
    """Consumes events; see the module docstring.

    Args:
        total: jobs in the plan (finished ones included).
        done: jobs already finished before this command.
        quiet: show nothing.
        live: force the live display on/off (default: console.live_progress()).
    """

    def __init__(self, total: int, done: int = 0, *, quiet: bool = False, live: bool | None = None):
        self.total, self.done, self.quiet = total, done, quiet
        self.done_before = done
        self.live = None
        self.plan_task = None
        self.t0: dict[JobKey, float] = {}
        self.last_line: dict[JobKey, float] = {}
        self.tasks: dict[JobKey, int] = {}
        self.results: list[Done] = []
        self.started: set = set()  # jobs shown as started (a retried job keeps its number)
        self.errors: list[Error] = []
        if not quiet and (console.live_progress() if live is None else live):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.live = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console.err, transient=False)

    # ---- context -------------------------------------------------------------------------------------
    def __enter__(self) -> "Renderer":
        if self.live is not None:
            self.live.start()
            self.plan_task = self.live.add_task("runs", total=self.total, completed=self.done) if self.total > 1 else None
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()
        sys.stderr.flush()

    def line(self, text: str, style: str | None = None) -> None:
        if self.quiet:
            return
        con = self.live.console if self.live is not None else console.err
        con.print(text, style=style, markup=False, highlight=False)

    # ---- events --------------------------------------------------------------------------------------
    def __call__(self, ev) -> None:
        if isinstance(ev, Note):
            self.line(safe(ev.text), "dim")
        elif isinstance(ev, Start):
            self._start(ev)
        elif isinstance(ev, Step):
            self._step(ev)
        elif isinstance(ev, Done):
            self._done(ev)
        elif isinstance(ev, Error):
            self.errors.append(ev)
            self.line(f"{ev.job}: {safe(ev.message)}", "bold red")

    def _start(self, ev: Start) -> None:
        self.t0[ev.job] = self.last_line[ev.job] = time.perf_counter()
        where = f" [{safe(ev.worker)}]" if ev.worker else ""
        self.started.add(ev.job)
        count = f"[{self.done_before + len(self.started)}/{self.total}] " if self.total > 1 else ""
        self.line(f"{count}{ev.job} -> {safe(ev.run)}" + (" (resuming)" if ev.resumed else "") + where)
        if self.live is not None:
            self.tasks[ev.job] = self.live.add_task(f"  {ev.job.method} s{ev.job.seed}", total=ev.budget,
                                                   completed=ev.attempts_used)

    def _step(self, ev: Step) -> None:
        rec, now = ev.record, time.perf_counter()
        for w in ev.warnings:
            self.line(f"warning: {safe(w)}", "yellow")
        task = self.tasks.get(ev.job)
        if task is not None:
            what = f"loss {rec['loss']:.3f}" if "loss" in rec else f"best {rec['best_so_far']}/{rec['n_tests']}"
            self.live.update(task, completed=ev.attempts_used,
                             description=f"  {ev.job.problem_id} {ev.job.method} s{ev.job.seed} step {rec['step']} {what}")
        elif ev.job.method == "sdpo" or now - self.last_line.get(ev.job, 0) > HEARTBEAT_S:
            self.last_line[ev.job] = now
            self.line(f"  {ev.job.problem_id} {ev.job.method} s{ev.job.seed} "
                      + fmt_step(rec, ev.budget, now - self.t0.get(ev.job, now)))

    def _done(self, ev: Done) -> None:
        self.results.append(ev)
        self.done += 1
        task = self.tasks.pop(ev.job, None)
        if task is not None:
            self.live.remove_task(task)
        if self.live is not None and self.plan_task is not None:
            self.live.update(self.plan_task, completed=self.done)
        t0 = self.t0.pop(ev.job, None)
        text, style = done_line(ev.job, ev.summary, time.perf_counter() - t0 if t0 else None)
        self.line(text, style)
