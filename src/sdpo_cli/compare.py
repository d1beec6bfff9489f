"""`sdpo compare`: SDPO against best-of-k and multi-turn on the same problems, budget and settings.

    comparisons/<name>/
      compare.yaml          what is compared: problem ids, methods, seeds, samples, multi-turn
                            variant/window, and the one resolved SolveConfig every run uses
      problems/<id>.yaml    copies of the problem files (the comparison is self-contained)
      runs/<run dirs>       one normal run directory per (problem, method, seed), see runs.py
      report.json, curves.csv, discovery.png[, discovery_problems.png]   written by report.py

Per problem: best-of-k once (n samples, first seed), then for every seed an SDPO run and a
multi-turn run. Every method uses the same model, backend, sampling settings and budget (attempts are counted alike):
the resolved config is fixed when the comparison is created, and `--resume` refuses to change it.
`--resume` continues the comparison in `--out`: finished runs are skipped, unfinished ones resumed
from their checkpoint, and new seeds, baselines or problems given on the command line are added.

Owns: the comparison directory and planning its runs as runner.Jobs. Does not own: running them
(runner.py, in-process or on Ray), the methods (trainer.py, baselines.py), the numbers and plots
(report.py), rendering (render.py) or flag parsing (cli.py).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import yaml

from .config import EXECUTION_KNOBS, SolveConfig, make_config
from .errors import ConfigError, ProblemError, RunDataError
from .report import SPEC_FILE
from .runner import Job, existing_runs, finished
from .runs import atomic_write

BASELINES = ("best-of-k", "multi-turn")
DEFAULT_SEEDS = 5  # the paper's seeds per question


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


def prepare(problem_paths: list[Path], *, out: Path | None, resume: bool, baselines: list[str] | None,
            seeds: int | None, samples: int | None, variant: str | None, window_tokens: int | None,
            cfg: SolveConfig, given: set[str]) -> tuple[Path, dict, list]:
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
        cfg: the resolved configuration (defaults < config file < flags), used by every run.
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
    from .runner import refusals

    if lines := refusals(new_problems):
        raise ProblemError("\n".join(lines), lines=lines)

    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR: the comparison directory to continue")
        spec = load_spec(out)
        if lines := refusals(_load_problems([out / "problems" / f"{pid}.yaml" for pid in spec["problem_ids"]])):
            raise ProblemError("\n".join(lines), lines=lines)
        saved = spec["config"]
        new = cfg.to_dict()
        conflicts = [f"--{k.replace('_', '-')}: this comparison uses {saved.get(k)!r}, not {new[k]!r}"
                     for k in sorted(given) if k not in EXECUTION_KNOBS and new[k] != saved.get(k)]
        for name, key, value in (("--samples", "samples", samples), ("--variant", "variant", variant),
                                 ("--window-tokens", "window_tokens", window_tokens)):
            if value is not None and value != spec[key]:
                conflicts.append(f"{name}: this comparison uses {spec[key]!r}, not {value!r}")
        if conflicts:
            lines = [c + " (all runs of a comparison share one setting; start a new --out)" for c in conflicts]
            raise ConfigError("; ".join(lines), lines=lines)
        for k in EXECUTION_KNOBS:  # where and how fast it runs, not what it computes
            if k in given:
                spec["config"][k] = new[k]
        base = saved["seed"]
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
    """compare.yaml of a comparison directory, checked (RunDataError when missing or damaged)."""
    path = Path(out) / SPEC_FILE
    if not path.is_file():
        raise RunDataError(f"{out}: not a comparison directory (no {SPEC_FILE}); give the --out of an earlier "
                           "`sdpo compare`")
    from . import yamldata

    try:
        spec = yamldata.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yamldata.YamlDataError):
        spec = None
    keys = {"problem_ids": list, "methods": list, "seeds": list, "samples": int, "variant": str, "config": dict}
    if not isinstance(spec, dict) or any(not isinstance(spec.get(k), t) for k, t in keys.items()):
        raise RunDataError(f"{path}: damaged (needs {', '.join(keys)}); restore it, or start a new comparison")
    try:
        make_config(spec["config"], source=str(path))
    except ConfigError as e:
        raise RunDataError(f"{path}: {e.lines[0]}; restore it, or start a new comparison") from None
    return spec


def plan_jobs(out: Path, spec: dict, problems: list) -> tuple[list[Job], int]:
    """Every run of the comparison that is not finished yet, in the order they are run, and how many
    are finished already.

    best-of-k for every problem (one run each: it does not depend on the seed), then multi-turn for
    every problem and seed (consecutive jobs, which the runner samples together, one batched call per
    turn), then SDPO problem by problem, seed by seed. Runs are named `<problem>_<method>_s<seed>` below
    `out/runs`: a job finds its own run again on resume.
    """
    base = SolveConfig.model_validate(spec["config"])
    options = {"best-of-k": {"n_samples": spec["samples"]},
               "multi-turn": {"variant": spec["variant"], "window_tokens": spec.get("window_tokens")}}

    def job(problem, method: str, seed: int) -> Job:
        return Job(problem, method, base.replace(seed=seed), runs_root=out / "runs", stamp=False,
                   options=options.get(method, {}))

    jobs = [job(p, "best-of-k", spec["seeds"][0]) for p in problems if "best-of-k" in spec["methods"]]
    if "multi-turn" in spec["methods"]:
        jobs += [job(p, "multi-turn", seed) for p in problems for seed in spec["seeds"]]
    jobs += [job(p, "sdpo", seed) for p in problems for seed in spec["seeds"]]
    index = existing_runs(out / "runs")
    todo = [j for j in jobs if not (j.key in index and finished(index[j.key]))]
    for j in todo:  # an unfinished run will be resumed: check its files now, before anything runs
        if j.key in index:
            index[j.key].check_resumable()
    return todo, len(jobs) - len(todo)
