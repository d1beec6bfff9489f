"""One runner for every job: plan, claim a run directory, execute, stream typed events.

    jobs = [Job(problem, "sdpo", cfg, runs_root=Path("runs"))]           # `sdpo solve` = a one-method plan
    jobs = compare.plan_jobs(out, spec, problems)                         # `sdpo compare` = a grid
    for event in run_jobs(jobs):                     # in-process (default): one model load, jobs in order
        render(event)
    for event in ray_runner.run_jobs_ray(jobs, address=None):  # the same plan on a Ray cluster
        render(event)

A job is (problem, method, seed, config) plus where its run directory lives. The runner claims the
directory atomically (mkdir; an existing unfinished run of the same job is resumed from its
checkpoint) and calls the method's own loop (trainer.sdpo, baselines.best_of_k, baselines.multi_turn),
which yields events.Start / Step / Done. Everything a job needs travels with it, so a Ray worker on
another node runs exactly what the in-process runner would.

Owns: Job, claiming, dispatching to a method, the in-process loop. Does not own: the methods, loading
(session.py), rendering (render.py) or Ray (ray_runner.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .events import JobKey
from .runs import RunDir

METHODS = ("sdpo", "best-of-k", "multi-turn")


@dataclass(frozen=True)
class Job:
    """One run to make: `problem` by `method` with `config` (a resolved SolveConfig; its seed is the job's).

    Attributes:
        runs_root: where a new run directory is claimed.
        run: an existing run directory to resume (e.g. `sdpo solve --resume DIR`), or None.
        stamp: name new run directories with the UTC time (solve), or `<problem>_<method>_s<seed>` (a
            comparison, which holds at most one run per job and finds it again by that key).
        options: method options: best-of-k `n_samples`; multi-turn `variant`, `window_tokens`.
    """

    problem: object  # problem.Problem
    method: str
    config: object  # config.SolveConfig
    runs_root: Path
    run: Path | None = None
    stamp: bool = True
    options: dict = field(default_factory=dict)

    @property
    def key(self) -> JobKey:
        return JobKey(self.problem.id, self.method, self.config.seed)


def claim(job: Job) -> tuple[RunDir, bool]:
    """The job's run directory and whether it resumes one: the given run, an unfinished run of the same
    job below runs_root (comparisons), or a newly created one (an atomic mkdir)."""
    if job.run is not None:
        return RunDir(Path(job.run)), True
    if not job.stamp:
        found = existing_runs(job.runs_root).get(job.key)
        if found is not None:
            return found, True
    run = RunDir.create(job.runs_root, job.problem, job.method, job.config.seed, job.config.to_dict(), stamp=job.stamp)
    return run, False


def existing_runs(root: Path) -> dict[JobKey, RunDir]:
    """JobKey -> its run directory below `root`; a finished run wins over an unfinished duplicate."""
    from .runs import find_runs

    found: dict[JobKey, RunDir] = {}
    for run in find_runs(root) if Path(root).is_dir() else []:
        h = run.header
        key = JobKey(h["problem_id"], h["method"], int(h["seed"]))
        old = found.get(key)
        if old is None or not finished(old):
            found[key] = run
    return found


def finished(run: RunDir) -> bool:
    return (run.summary() or {}).get("status") in ("solved", "exhausted")


def batchable(a: Job, b: Job) -> bool:
    """Can `a` and `b` run as one batched unit? Multi-turn chains with the same settings but the seed (of
    one or several problems): each turn samples every chain's next reply in one call
    (baselines.multi_turn_chains)."""
    return (a.method == b.method == "multi-turn" and a.options == b.options
            and a.config.replace(seed=0) == b.config.replace(seed=0))


def group_jobs(jobs: list[Job]) -> list[list[Job]]:
    """The plan as units of execution: consecutive batchable jobs together, every other job alone."""
    groups: list[list[Job]] = []
    for job in jobs:
        if groups and batchable(groups[-1][0], job):
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


def execute(group: list[Job], session, claimed: list[tuple[RunDir, bool]]) -> Iterator:
    """The method loop of one unit (a job, or batched multi-turn chains): yields its events."""
    from . import baselines, trainer

    job = group[0]
    cfg, problem = job.config, job.problem
    if job.method == "multi-turn":
        return baselines.multi_turn_chains(
            [(j.problem, j.config, run, resume) for j, (run, resume) in zip(group, claimed)], session,
            variant=job.options.get("variant", "feedback_only"), window_tokens=job.options.get("window_tokens"))
    assert len(group) == 1, "only multi-turn jobs are batched"
    run, resume = claimed[0]
    if job.method == "sdpo":
        return trainer.sdpo(problem, cfg, session, run, resume=resume)
    if job.method == "best-of-k":
        return baselines.best_of_k(problem, cfg, session, run, job.options.get("n_samples"), resume=resume)
    raise ValueError(f"unknown method {job.method!r}")


def run_jobs(jobs: list[Job], *, session=None) -> Iterator:
    """Run `jobs` in order in this process, loading a model only when a job needs a different one.

    Args:
        jobs: the plan.
        session: an already loaded session to use (tests pass a tiny in-process model); None loads
            what each job's config names (once, reused while the model/backend/device/dtype agree).

    Yields:
        every job's events in turn. A RunError of one job stops the plan (the run is saved and resumable).
    """
    from .events import Note
    from .session import load_session, session_key

    for group in group_jobs(jobs):
        cfg = group[0].config
        if session is None or (session.key is not None and session.key != session_key(cfg)):
            yield Note(f"loading model {cfg.model} ({cfg.backend} backend, {cfg.device}) ...")
            session = load_session(cfg)
        yield from execute(group, session, [claim(job) for job in group])


# --------------------------------------------------------------------------------------------------
# Planning `sdpo solve` (validates everything; writes nothing and loads no model)


def refusals(problems) -> list[str]:
    """One line per problem this machine's sandbox cannot verify safely (e.g. hidden tests without
    filesystem isolation), so a plan stops before a model loads or a run directory is written."""
    from .verify import refusal

    return [f"{p.path or p.id}: {why}" for p in problems if (why := refusal(p))]


@dataclass
class SolvePlan:
    jobs: list[Job]
    finished: list[dict]  # summaries of runs that are already finished (skipped, reported again)
    notes: list[str]


def plan_solve(problem_paths: list[Path], resume: list[Path], cfg, runs_dir: Path, *,
               skip_solved: bool = False) -> SolvePlan:
    """The jobs of `sdpo solve`: one SDPO run per problem file, plus the runs to resume.

    Every input is checked here, before anything is written or loaded: problem files (all their
    mistakes), resume targets (run directories, or folders of them, checked by
    RunDir.check_resumable, their problem and saved configuration), and the device each job needs.

    Raises:
        ProblemError / ConfigError / RunDataError (exit code 2), naming the file and the fix.
    """
    from .config import fill_auto, make_config
    from .errors import ConfigError, ProblemError, RunDataError
    from .problem import load_problem
    from .runs import RunDir, find_runs, solved_problem_ids, unfinished_runs

    jobs: list[Job] = []
    finished_runs: list[dict] = []
    notes: list[str] = []
    for target in resume:
        target = Path(target)
        if not target.exists():
            raise RunDataError(f"--resume {target}: no such directory (give a run directory, or a folder of runs)")
        if not target.is_dir():
            raise RunDataError(f"--resume {target}: not a directory (give a run directory made by `sdpo solve`, "
                               "or a folder of them)")
        if (target / "config.yaml").exists():
            runs = [RunDir.open(target)]
        else:
            if not find_runs(target):
                raise RunDataError(f"--resume {target}: no run directories in it (no config.yaml here or below); "
                                   "give a run directory made by `sdpo solve`, or a folder of them")
            runs = unfinished_runs(target)
            if not runs:
                notes.append(f"{target}: no unfinished runs to resume")
        for run in runs:
            head = run.header
            if head["method"] != "sdpo":
                raise RunDataError(f"{run.path}: a {head['method']} run, not an SDPO run; continue it with "
                                   "`sdpo compare --resume --out COMPARISON_DIR`")
            if (run.summary() or {}).get("status") in ("solved", "exhausted"):
                notes.append(f"{run.path}: already finished ({run.summary()['status']}); nothing to resume")
                finished_runs.append(run.summary())
                continue
            run.check_resumable()
            problem = load_problem(run.problem_file)
            if problem.id != head["problem_id"]:
                raise RunDataError(f"{run.path}: problem.yaml has id {problem.id!r} but the run was made for "
                                   f"{head['problem_id']!r}; put the original problem back, or start a new run")
            job_cfg = fill_auto(make_config(head["config"], source=str(run.path / "config.yaml")))
            jobs.append(Job(problem, "sdpo", job_cfg, runs_root=run.path.parent, run=run.path))

    errors, loaded = [], []
    for path in problem_paths:
        try:
            loaded.append(load_problem(path))
        except ProblemError as e:
            errors += e.lines
    errors += refusals([job.problem for job in jobs] + loaded)
    if errors:
        raise ProblemError("\n".join(errors), lines=errors)
    if loaded and cfg is None:
        raise ConfigError("internal: problems to solve but no configuration")
    done = solved_problem_ids(runs_dir) if skip_solved and loaded else {}
    for p in loaded:
        if p.id in done:
            notes.append(f"{p.id}: already solved in {done[p.id]['run']}; skipped")
            finished_runs.append(done[p.id])
            continue
        jobs.append(Job(p, "sdpo", cfg, runs_root=runs_dir))
    return SolvePlan(jobs, finished_runs, notes)
