"""`sdpo compare`: SDPO against best-of-k and multi-turn on the same problems, budget and settings.

    comparisons/<name>/
      compare.yaml          what is compared: problem ids, methods, seeds, samples, multi-turn
                            variant/window, and the one resolved SolveConfig every run uses
      problems/<id>.yaml    copies of the problem files (the comparison is self-contained)
      runs/<run dirs>       one normal run directory per (problem, method, seed), see runs.py
      report.json, curves.csv, discovery.png[, discovery_problems.png]   written by report.py

Per problem: best-of-k once (n samples, first seed), then for every seed an SDPO run and a
multi-turn run. Every method uses the same model, backend, sampling settings and budget (SPEC §3.3):
the resolved config is fixed when the comparison is created, and `--resume` refuses to change it.
`--resume` continues the comparison in `--out`: finished runs are skipped, unfinished ones resumed
from their checkpoint, and new seeds, baselines or problems given on the command line are added.

Owns: the comparison directory, planning its runs, running them with one loaded model, and the
progress display of the whole comparison. Does not own: the methods (trainer.py, baselines.py), the
numbers and plots (report.py) or flag parsing (cli.py).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from . import console
from .config import SolveConfig, build_config
from .errors import ConfigError, RunError
from .report import SPEC_FILE
from .runs import RunDir, atomic_write

BASELINES = ("best-of-k", "multi-turn")
DEFAULT_SEEDS = 5  # the paper's seeds per question
HEARTBEAT_S = 30.0  # plain (non-terminal) progress: at most one line per run this often


@dataclass
class Job:
    problem: object  # Problem
    method: str  # "sdpo" | "best-of-k" | "multi-turn"
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.problem.id, self.method, self.seed)


# --------------------------------------------------------------------------------------------------
# The comparison directory


def default_out(problem_ids: list[str]) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    more = f"_+{len(problem_ids) - 1}" if len(problem_ids) > 1 else ""
    return Path("comparisons") / f"{stamp}_{problem_ids[0]}{more}"


def _load_problems(paths: list[Path]):
    from .errors import ProblemError
    from .problem import load_problem

    loaded, errors = [], []
    for path in paths:
        try:
            loaded.append(load_problem(path))
        except ProblemError as e:
            errors += e.lines
    if errors:
        raise ProblemError("\n".join(errors), lines=errors)
    seen: dict[str, Path] = {}
    for p in loaded:
        if p.id in seen:
            raise ProblemError(f"{p.path}: id {p.id!r} is also the id of {seen[p.id]}; problem ids must be unique")
        seen[p.id] = p.path
    return loaded


def _resolve(cfg: SolveConfig) -> SolveConfig:
    """Fix the machine-dependent defaults once, so every run of the comparison gets the same values."""
    from .model import default_device

    return cfg.validate().resolve(cfg.device or default_device()).validate()


def prepare(problem_paths: list[Path], *, out: Path | None, resume: bool, baselines: list[str] | None,
            seeds: int | None, samples: int | None, variant: str | None, window_tokens: int | None,
            cfg_values: dict, given: set[str]) -> tuple[Path, dict, list]:
    """Create (or, with `resume`, reopen and extend) a comparison directory. Writes nothing on bad input.

    Args:
        problem_paths: problem files (with `resume`: extra problems to add; may be empty).
        out: the comparison directory (None: comparisons/<utc>_<first id>).
        resume: continue the comparison in `out`.
        baselines: baselines to run (None: both).
        seeds: number of seeds, seeds cfg.seed, cfg.seed + 1, ... (None: 5, or the saved ones).
        samples: best-of-k samples n (None: the budget).
        variant: multi-turn prompt variant (None: feedback_only).
        window_tokens: multi-turn window in tokens (None: context length minus max_new_tokens).
        cfg_values: SolveConfig fields (defaults < config file < flags).
        given: the fields set by a flag or the config file (checked against a resumed comparison).

    Returns:
        (out, spec as in compare.yaml, problems loaded from the comparison's own copies).
    """
    from .baselines import VARIANTS

    for b in baselines or []:
        if b not in BASELINES:
            raise ConfigError(f"--baseline: {b!r} is not one of {', '.join(BASELINES)}")
    if variant is not None and variant not in VARIANTS:
        raise ConfigError(f"--variant: {variant!r} is not one of {', '.join(VARIANTS)}")
    for name, v in (("--seeds", seeds), ("--samples", samples), ("--window-tokens", window_tokens)):
        if v is not None and v < 1:
            raise ConfigError(f"{name}: must be >= 1, got {v}")
    new_problems = _load_problems(problem_paths)

    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR: the comparison directory to continue")
        spec = load_spec(out)
        cfg = dict(spec["config"])
        conflicts = [f"--{k.replace('_', '-')}: this comparison uses {cfg[k]!r}, not {cfg_values[k]!r}"
                     for k in sorted(given) if k != "device" and cfg_values[k] != cfg[k]]
        for name, key, value in (("--samples", "samples", samples), ("--variant", "variant", variant),
                                 ("--window-tokens", "window_tokens", window_tokens)):
            if value is not None and value != spec[key]:
                conflicts.append(f"{name}: this comparison uses {spec[key]!r}, not {value!r}")
        if conflicts:
            lines = [c + " (all runs of a comparison share one setting; start a new --out)" for c in conflicts]
            raise ConfigError("; ".join(lines), lines=lines)
        if "device" in given:
            spec["config"]["device"] = cfg_values["device"]  # where it runs, not what it computes
        base = cfg["seed"]
        if seeds is not None:
            spec["seeds"] = sorted(set(spec["seeds"]) | set(range(base, base + seeds)))
        spec["methods"] = ["sdpo"] + [b for b in BASELINES if b in spec["methods"] or b in (baselines or [])]
        for p in new_problems:
            if p.id not in spec["problem_ids"]:
                _copy_problem(out, p)
                spec["problem_ids"].append(p.id)
    else:
        if not new_problems:
            raise ConfigError("give problem files to compare, or --resume --out DIR")
        cfg = _resolve(build_config({}, cfg_values))
        if samples is not None and samples < cfg.budget:
            raise ConfigError(f"--samples: best-of-k needs at least the budget ({cfg.budget}) samples, got {samples}")
        out = out or default_out([p.id for p in new_problems])
        if (out / SPEC_FILE).exists():
            raise ConfigError(f"{out}: a comparison already exists there; add --resume to continue or extend it")
        spec = {
            "problem_ids": [p.id for p in new_problems],
            "methods": ["sdpo"] + [b for b in BASELINES if baselines is None or b in baselines],
            "seeds": list(range(cfg.seed, cfg.seed + (seeds or DEFAULT_SEEDS))),
            "samples": samples or cfg.budget,
            "variant": variant or "feedback_only",
            "window_tokens": window_tokens,
            "config": cfg.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out / "runs").mkdir(parents=True, exist_ok=True)
        for p in new_problems:
            _copy_problem(out, p)
    atomic_write(out / SPEC_FILE, yaml.safe_dump(spec, sort_keys=False))
    return out, spec, _load_problems([out / "problems" / f"{pid}.yaml" for pid in spec["problem_ids"]])


def _copy_problem(out: Path, problem) -> None:
    (out / "problems").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(problem.path, out / "problems" / f"{problem.id}.yaml")


def load_spec(out: Path) -> dict:
    path = Path(out) / SPEC_FILE
    if not path.is_file():
        raise RunError(f"{out}: not a comparison directory (no {SPEC_FILE}); give the --out of an earlier `sdpo compare`")
    return yaml.safe_load(path.read_text())


def plan(spec: dict, problems: list) -> list[Job]:
    """Every run of the comparison, in the order they are run.

    best-of-k first (one run per problem: it does not depend on the seed), then seed by seed, so an
    interrupted comparison already holds whole seeds of every problem and method.
    """
    jobs = [Job(p, "best-of-k", spec["seeds"][0]) for p in problems if "best-of-k" in spec["methods"]]
    for seed in spec["seeds"]:
        for p in problems:
            jobs.append(Job(p, "sdpo", seed))
            if "multi-turn" in spec["methods"]:
                jobs.append(Job(p, "multi-turn", seed))
    return jobs


def existing_runs(root: Path) -> dict[tuple[str, str, int], RunDir]:
    """(problem id, method, seed) -> its run directory; a finished run wins over an unfinished duplicate."""
    found: dict[tuple[str, str, int], RunDir] = {}
    for cfg_file in sorted(Path(root).rglob("config.yaml")):
        run = RunDir(cfg_file.parent)
        h = run.header
        key = (h["problem_id"], h["method"], int(h["seed"]))
        old = found.get(key)
        if old is None or not _finished(old):  # paths sort by creation time: the latest unfinished one
            found[key] = run
    return found


def _finished(run: RunDir) -> bool:
    return (run.summary() or {}).get("status") in ("solved", "exhausted")


# --------------------------------------------------------------------------------------------------
# Running


def run_comparison(out: Path, spec: dict, problems: list, *, quiet: bool = False, session=None) -> int:
    """Run (or resume) every run of the comparison; loads the model only if there is work left.

    Args:
        out: the comparison directory.
        spec: its compare.yaml.
        problems: its problems (from `prepare`).
        quiet: no progress output.
        session: an already loaded trainer.Session (tests); None = load `spec["config"]["model"]` once.

    Returns:
        the number of runs that were run or resumed (0 = everything was already finished).
    """
    from .baselines import best_of_k, multi_turn

    base = SolveConfig(**spec["config"])
    jobs = plan(spec, problems)
    index = existing_runs(out / "runs")
    todo = [j for j in jobs if not (j.key in index and _finished(index[j.key]))]
    show = _Display(len(jobs), len(jobs) - len(todo), quiet)
    if not todo:
        show.line(f"{out}: all {len(jobs)} runs are finished")
        return 0
    if session is None:
        from .trainer import Session

        show.line(f"loading model {base.model} ({base.backend} backend) ...")
        session = Session(base)
    base = replace(base, device=session.cfg.device)
    with show:
        for job in todo:
            session.cfg = replace(base, seed=job.seed)
            run = index.get(job.key)
            resumed = run is not None
            if run is None:
                run = RunDir.create(out / "runs", job.problem, job.method, job.seed, session.cfg.to_dict())
            if job.method == "sdpo":
                from .trainer import solve

                events = solve(job.problem, session, run, resume=resumed)
            elif job.method == "best-of-k":
                events = best_of_k(job.problem, session, run, spec["samples"], resume=resumed)
            else:
                events = multi_turn(job.problem, session, run, variant=spec["variant"],
                                    window_tokens=spec["window_tokens"], resume=resumed)
            show.run(job, run, events, resumed)
    return len(todo)


class _Display:
    """Progress of the whole comparison: a live two-bar display on a terminal (runs, and attempts of
    the current run), plain lines otherwise (one per run, plus a heartbeat), nothing when quiet."""

    def __init__(self, total: int, done: int, quiet: bool):
        self.total, self.done, self.quiet = total, done, quiet
        self.live = None
        if not quiet and console.live_progress():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.live = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console.err)

    def __enter__(self):
        if self.live is not None:
            self.live.start()
            self.runs_task = self.live.add_task("runs", total=self.total, completed=self.done)
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.stop()
        sys.stderr.flush()

    def line(self, text: str, style: str | None = None) -> None:
        if not self.quiet:
            (self.live.console if self.live is not None else console.err).print(text, style=style, markup=False,
                                                                                 highlight=False)

    def run(self, job: Job, run: RunDir, events, resumed: bool) -> dict:
        """Consume one run's events while showing them. Returns its "done" event."""
        name = f"[{self.done + 1}/{self.total}] {job.problem.id} {job.method} seed {job.seed}"
        self.line(f"{name} -> {run.path}" + (" (resuming)" if resumed else ""))
        t0 = last = time.perf_counter()
        task = None
        done = None
        for ev in events:
            if ev["type"] == "start" and self.live is not None:
                task = self.live.add_task(f"  {job.method} s{job.seed}", total=ev["budget"],
                                          completed=ev["attempts_used"])
            elif ev["type"] == "step":
                if task is not None:
                    self.live.update(task, completed=ev["attempts_used"])
                elif time.perf_counter() - last > HEARTBEAT_S:
                    last = time.perf_counter()
                    self.line(f"    attempts {ev['attempts_used']}/{ev['budget']}, best tests "
                              f"{ev['best_so_far']}/{ev['n_tests']}, {last - t0:.0f}s")
            elif ev["type"] == "done":
                done = ev
        if task is not None:
            self.live.remove_task(task)
        self.done += 1
        if self.live is not None:
            self.live.update(self.runs_task, completed=self.done)
        secs = time.perf_counter() - t0
        if done["method"] == "best-of-k":
            self.line(f"{name}: {done['n_correct']}/{done['n_samples']} samples correct ({secs:.0f}s)")
        elif done["solved"]:
            self.line(f"{name}: solved at attempt {done['discovery_index']} ({secs:.0f}s)", style="green")
        else:
            self.line(f"{name}: not solved in {done['attempts_used']} attempts ({secs:.0f}s)")
        return done
