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

    results, worst = [], 0
    for path in _expand(problems):
        r = check_problem(path)
        results.append(r)
        worst = max(worst, r["exit_code"])
        if as_json:
            continue
        if r["errors"]:
            for line in r["errors"]:
                console.error(line)
            continue
        mark = "[green]ok[/]" if r["ok"] else "[red]FAIL[/]"
        console.err.print(f"{mark} {path}: {r['summary']}")
        if r.get("wrong_feedback"):
            console.err.print("   feedback for a wrong answer:", style="dim")
            console.err.print("   " + r["wrong_feedback"].replace("\n", "\n   "), style="dim", markup=False)
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
        colour = "green" if v.passed else "red"
        console.err.print(f"[{colour}]{v.status.replace('_', ' ')}[/] {v.n_passed}/{v.n_total} tests passed")
        if v.feedback:
            console.out.print(v.feedback, markup=False)
    raise typer.Exit(0 if v.passed else 1)


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
