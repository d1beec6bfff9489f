"""Drive `solve` over several problems and render its events: live on a terminal, one plain line per
step otherwise, nothing with --quiet; `--json` puts one object per problem on stdout.

Kept apart from the trainer (which never prints) and from cli.py (which only parses flags).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from . import console
from .errors import RunError


def _fmt_step(ev: dict, elapsed: float) -> str:
    used, budget = ev["attempts_used"], ev["budget"]
    eta = elapsed / used * (budget - used) if used else 0
    loss = f"loss {ev['loss']:.4f} kl {ev['kl']:.4f}" if "loss" in ev else "no update (solved)"
    return (f"step {ev['step']:>3} | attempts {used}/{budget} | passed {ev['n_passed']}/{ev['n_attempts']} | "
            f"best tests {ev['best_so_far']}/{ev['n_tests']} | {loss} | len p50 {ev['len_p50']} | "
            f"{elapsed:.0f}s elapsed, ETA {eta:.0f}s")


def run_jobs(method: str, jobs: list[tuple], runs_dir: Path, *, quiet: bool, as_json: bool) -> int:
    """Run every (problem, run-or-None, config dict) job in order. Returns the exit code (0 all solved, 1 not)."""
    from .config import SolveConfig
    from .runs import RunDir
    from .trainer import Session, mark_interrupted, solve

    session, session_key = None, None
    all_solved = True
    for problem, run, cfg_values in jobs:
        cfg = SolveConfig(**cfg_values)
        if run is not None and (run.summary() or {}).get("status") in ("solved", "exhausted"):
            s = run.summary()
            console.err.print(f"{run.path}: already finished ({s['status']}); nothing to resume")
            if as_json:
                print(json.dumps(result_line(s)), flush=True)
            all_solved &= s["solved"]
            continue
        key = (cfg.model, cfg.backend, cfg.device)
        if session is None or key != session_key:
            if not quiet:
                console.err.print(f"loading model {cfg.model} ({cfg.backend} backend) ...")
            session, session_key = Session(cfg), key
        # Per-problem config: same model, the job's own knobs.
        session.cfg = cfg.resolve(session.cfg.device).validate()
        resumed = run is not None
        if run is None:
            run = RunDir.create(runs_dir, problem, method, session.cfg.seed, session.cfg.to_dict())
        t0 = time.perf_counter()
        if not quiet:
            console.err.print(f"[bold]{problem.id}[/] -> {run.path}" + (" (resuming)" if resumed else ""))
        events = solve(problem, session, run, resume=resumed)
        try:
            for ev in _with_progress(events, quiet, t0):
                if ev["type"] == "done":
                    done = ev
        except KeyboardInterrupt:
            events.close()  # Ctrl-C outside the generator (while rendering): still unload and record it
            mark_interrupted(problem, session.cfg, run)
            console.error(f"Interrupted. Resume with: sdpo solve --resume {run.path}")
            raise SystemExit(130) from None
        except RunError as e:
            # e.g. the vLLM engine died: everything up to the last completed step is on disk.
            raise RunError(f"{e} -- the run is saved; continue it with: sdpo solve --resume {run.path}") from e
        all_solved &= done["solved"]
        if not quiet:
            if done["solved"]:
                console.err.print(f"[green]solved[/] {problem.id} at attempt {done['discovery_index']} "
                                  f"({done['wall_time_s']:.0f}s); solution in {run.path}")
            else:
                console.err.print(f"[red]not solved[/] {problem.id} in {done['attempts_used']} attempts "
                                  f"(best {done['best_tests_passed']}/{done['n_tests']} tests)")
        if as_json:
            print(json.dumps(result_line(done)), flush=True)
    return 0 if all_solved else 1


def result_line(summary: dict) -> dict:
    """The --json line of one problem."""
    keys = ("run", "problem_id", "problem_file", "seed", "status", "solved", "discovery_index", "attempts_used",
            "wall_time_s")
    return {k: summary.get(k) for k in keys}


def _with_progress(events, quiet: bool, t0: float):
    """Pass events through while rendering them."""
    if quiet:
        yield from events
        return
    if not console.live_progress():
        for ev in events:
            if ev["type"] == "step":
                console.err.print(_fmt_step(ev, time.perf_counter() - t0), markup=False, highlight=False)
                for w in ev.get("warnings", []):
                    console.warn(f"warning: {w}")
            yield ev
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("attempts"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console.err,
                  transient=False) as bar:
        task = None
        for ev in events:
            if ev["type"] == "start":
                task = bar.add_task("sampling", total=ev["budget"], completed=ev["attempts_used"])
            elif ev["type"] == "step":
                loss = f"loss {ev['loss']:.3f}" if "loss" in ev else "solved"
                bar.update(task, completed=ev["attempts_used"],
                           description=f"step {ev['step']} best {ev['best_so_far']}/{ev['n_tests']} {loss}")
                for w in ev.get("warnings", []):
                    bar.console.print(f"[yellow]warning: {w}[/]")
            yield ev
    sys.stderr.flush()
