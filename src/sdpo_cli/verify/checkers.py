"""Problem kinds -> sandbox runs -> `Verdict`s.

Each test case of each reply is one sandbox run (as in the paper's code environment, SPEC §2.3);
all runs of a batch go to one thread pool with as many workers as usable cores, so 16 replies x 20
tests keep both cores busy. The threads only wait on child processes, so the GIL is no bottleneck.

Comparison rules:
  stdio    line by line, ignoring trailing whitespace on each line and trailing blank lines; with
           `float_tolerance`, numeric tokens compare with math.isclose(rel_tol=abs_tol=tolerance).
  function the JSON-normalised return value (tuples -> lists, sets -> sorted lists) equals `expected`
           (same tolerance rule for floats); assertion tests pass when the assertion holds.
  answer   exact (whitespace-trimmed), number (tolerance), or regex fullmatch.
  command  the judge's exit code 0 means pass; its output is the feedback.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..extract import extract_answer, extract_code
from ..problem import AnswerVerifier, CommandVerifier, FunctionVerifier, Problem, StdioVerifier, _parse_number
from . import (
    FORMAT_ERROR,
    JUDGE_FAILED,
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    PASSED,
    RUNTIME_ERROR,
    TIME_LIMIT,
    TRUNCATED,
    WRONG_ANSWER,
    TestOutcome,
    Verdict,
)
from .assertions import split_check
from .sandbox import Limits as SandboxLimits
from .sandbox import interpreter, run_program, run_python

HARNESS_SRC = (Path(__file__).parent / "harness.py").read_text(encoding="utf-8")
_STATUS_PRIORITY = [RUNTIME_ERROR, MEMORY_LIMIT, OUTPUT_LIMIT, TIME_LIMIT, WRONG_ANSWER]
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        workers = int(os.environ.get("SDPO_VERIFY_WORKERS", 0)) or len(os.sched_getaffinity(0))
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sdpo-verify")
    return _POOL


def _sandbox_limits(problem: Problem) -> SandboxLimits:
    lim = problem.limits
    return SandboxLimits(time_s=lim.time_s, memory_mb=lim.memory_mb, output_bytes=lim.output_kb * 1024)


# --------------------------------------------------------------------------------------------------
# Reading a failed run


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<fn>\S+))?')


def parse_traceback(stderr: str) -> tuple[str, str]:
    """(error, location) from a Python traceback: "Exc: msg" and the last frame in the candidate's code.

    location reads "  <source line>\\nLine N in f (Solution.py)" (LeetCode style, SPEC §2.3); "" if the
    error did not happen in solution.py (e.g. inside a library).
    """
    lines = stderr.rstrip().splitlines()
    error = ""
    for ln in reversed(lines):
        if ln and not ln.startswith((" ", "\t")) and not ln.startswith("Traceback"):
            error = ln.strip()
            break
    location = ""
    for i, ln in enumerate(lines):
        m = _FRAME.match(ln)
        if m and m.group("file").endswith("solution.py"):
            src = lines[i + 1].strip() if i + 1 < len(lines) and not _FRAME.match(lines[i + 1]) else ""
            if src.startswith(("^", "~")) or src == error:
                src = ""
            where = f"Line {m.group('line')} in {m.group('fn') or '<module>'} (Solution.py)"
            location = (f"  {src}\n" if src else "") + where
    return error or "Process exited with an error", location


def _failed_run(res, idx: int, hidden: bool, shown_input: str) -> TestOutcome | None:
    """An outcome for a run that did not finish normally, else None."""
    base = dict(index=idx, hidden=hidden, input=shown_input, time_s=res.wall_s, debug=res.stderr[-3000:])
    if res.status == "timeout":
        return TestOutcome(status=TIME_LIMIT, **base)
    if res.status == "memory":
        return TestOutcome(status=MEMORY_LIMIT, error="MemoryError: memory limit exceeded", **base)
    if res.status == "output_limit":
        return TestOutcome(status=OUTPUT_LIMIT, error="Output limit exceeded", **base)
    if res.status != "ok":
        error, location = parse_traceback(res.stderr)
        if "RecursionError" in error or (not res.stderr.strip() and res.returncode and res.returncode < 0):
            error = error if "RecursionError" in error else f"Process killed by signal {-res.returncode} (stack overflow or crash)"
        if error.startswith("MemoryError"):
            return TestOutcome(status=MEMORY_LIMIT, error=error, location=location, **base)
        return TestOutcome(status=RUNTIME_ERROR, error=error, location=location, **base)
    return None


# --------------------------------------------------------------------------------------------------
# Comparisons


def _lines(s: str) -> list[str]:
    return [ln.rstrip() for ln in s.replace("\r\n", "\n").rstrip().split("\n")]


def _close(a, b, tol: float | None) -> bool:
    if tol is None:
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    return a == b


def stdout_matches(actual: str, expected: str, tol: float | None = None) -> bool:
    got, want = _lines(actual), _lines(expected)
    if tol is None:
        return got == want
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        gt, wt = g.split(), w.split()
        if len(gt) != len(wt):
            return False
        for a, b in zip(gt, wt):
            fa, fb = _parse_number(a), _parse_number(b)
            ok = math.isclose(fa, fb, rel_tol=tol, abs_tol=tol) if fa is not None and fb is not None else a == b
            if not ok:
                return False
    return True


def _json_norm(x):
    return json.loads(json.dumps(x))


# --------------------------------------------------------------------------------------------------
# One test case = one job (a closure run in the pool)


def _stdio_job(code: str, v: StdioVerifier, idx: int, lim: SandboxLimits):
    t = v.tests[idx]

    def run() -> TestOutcome:
        res = run_python(code, stdin=t.input, limits=lim)
        bad = _failed_run(res, idx, t.hidden, t.input)
        if bad:
            return bad
        ok = stdout_matches(res.stdout, t.output, v.float_tolerance)
        return TestOutcome(index=idx, status=PASSED if ok else WRONG_ANSWER, hidden=t.hidden, input=t.input,
                           output=res.stdout, expected=t.output, debug=res.stderr, time_s=res.wall_s)

    return run


def _call_repr(name: str, args: list, kwargs: dict) -> str:
    parts = [json.dumps(a) for a in args] + [f"{k}={json.dumps(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _harness(code: str, call: dict, lim: SandboxLimits, preamble: str | None):
    files = {"solution.py": code, "harness.py": HARNESS_SRC, "call.json": json.dumps(call),
             "preamble.py": preamble or ""}
    return run_program([interpreter(), "-I", "harness.py"], files=files, limits=lim)


def _result_line(stdout: str) -> dict | None:
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _function_job(code: str, v: FunctionVerifier, idx: int, lim: SandboxLimits):
    t = v.tests[idx]
    shown = _call_repr(v.name, t.args, t.kwargs)

    def run() -> TestOutcome:
        res = _harness(code, {"mode": "call", "name": v.name, "args": t.args, "kwargs": t.kwargs}, lim, v.preamble)
        bad = _failed_run(res, idx, t.hidden, shown)
        if bad:
            return bad
        out = _result_line(res.stdout)
        if out is None or "result" not in out:
            return TestOutcome(index=idx, status=RUNTIME_ERROR, hidden=t.hidden, input=shown,
                               error="The function's result could not be read back", debug=res.stderr, time_s=res.wall_s)
        got, want = out["result"], _json_norm(t.expected)
        ok = _close(got, want, v.float_tolerance)
        return TestOutcome(index=idx, status=PASSED if ok else WRONG_ANSWER, hidden=t.hidden, input=shown,
                           output=json.dumps(got), expected=json.dumps(want), debug=res.stderr, time_s=res.wall_s)

    return run


def _assertion_job(code: str, v: FunctionVerifier, idx: int, call: dict | None, lim: SandboxLimits):
    shown = call["show"] if call else "check(candidate)"
    harness_call = ({k: c for k, c in call.items() if k != "show"} if call else {"mode": "check", "test_code": v.test_code})
    harness_call["name"] = v.name

    def run() -> TestOutcome:
        res = _harness(code, harness_call, lim, v.preamble)
        if res.status == "error" and "AssertionError" in res.stderr and call is None:
            # Unsplit check(): show the failing assertion's source line (test code is compiled from a
            # string, so the traceback has only its line number).
            nums = re.findall(r'File "test.py", line (\d+)', res.stderr)
            src = (v.test_code or "").splitlines()
            line = src[int(nums[-1]) - 1].strip() if nums and int(nums[-1]) <= len(src) else shown
            return TestOutcome(index=idx, status=WRONG_ANSWER, input=line, time_s=res.wall_s)
        bad = _failed_run(res, idx, False, shown)
        if bad:
            return bad
        out = _result_line(res.stdout) or {}
        ok = out.get("pass") is True
        return TestOutcome(index=idx, status=PASSED if ok else WRONG_ANSWER, input=shown,
                           output=out.get("output", ""), expected=out.get("expected", ""),
                           debug=res.stderr, time_s=res.wall_s)

    return run


def _answer_outcome(v: AnswerVerifier, answer: str) -> TestOutcome:
    want = str(v.answer)
    match = v.resolved_match
    if match == "number":
        a, b = _parse_number(answer), _parse_number(want)
        ok = a is not None and math.isclose(a, b, rel_tol=v.tolerance, abs_tol=v.tolerance)
    elif match == "regex":
        ok = re.fullmatch(want, answer.strip()) is not None
    else:
        ok = answer.strip() == want.strip()
    # The expected answer is never put into the outcome: feedback must not reveal it.
    return TestOutcome(index=0, status=PASSED if ok else WRONG_ANSWER, hidden=True, output=answer)


def _resolve_command(problem: Problem, argv: list[str]) -> list[str]:
    out = []
    for a in argv:
        p = problem.base_dir / a
        out.append(str(p.resolve()) if not os.path.isabs(a) and p.exists() else a)
    return out


def _command_job(problem: Problem, v: CommandVerifier, payload: str):
    def run() -> tuple[TestOutcome, str]:
        argv = _resolve_command(problem, v.command) + ["answer.txt"]
        lim = SandboxLimits(time_s=v.timeout_s, memory_mb=max(problem.limits.memory_mb, 2048),
                            output_bytes=problem.limits.output_kb * 1024)
        readable = (str(problem.base_dir.resolve()),) + tuple(os.path.dirname(a) for a in argv if os.path.isabs(a))
        res = run_program(argv, stdin=payload, files={"answer.txt": payload}, limits=lim, readable=readable)
        text = (res.stdout + ("\n" + res.stderr if res.stderr.strip() else "")).strip()
        if res.status == "timeout":
            text = f"The judge timed out after {v.timeout_s:g} s.\n{text}".strip()
        ok = res.status == "ok"
        return TestOutcome(index=0, status=PASSED if ok else WRONG_ANSWER, output=text, time_s=res.wall_s), text

    return run


# --------------------------------------------------------------------------------------------------
# Verdicts


def _verdict(outcomes: list[TestOutcome], answer: str, truncated: bool, t0: float, message: str = "") -> Verdict:
    outcomes.sort(key=lambda o: o.index)
    n_pass = sum(o.passed for o in outcomes)
    failing = {o.status for o in outcomes if not o.passed}
    status = PASSED if not failing else next(s for s in _STATUS_PRIORITY if s in failing)
    return Verdict(passed=not failing, status=status, n_passed=n_pass, n_total=len(outcomes), tests=outcomes,
                   answer=answer, truncated=truncated, time_s=time.perf_counter() - t0, message=message)


def _format_verdict(problem: Problem, truncated: bool, message: str) -> Verdict:
    return Verdict(passed=False, status=TRUNCATED if truncated else FORMAT_ERROR, n_passed=0,
                   n_total=problem.n_tests, truncated=truncated, message=message)


def check_replies(problem: Problem, replies: list[tuple[str, bool]]) -> list[Verdict]:
    """Verify every (response, truncated) reply of `problem`; see verify.verify_many."""
    from ..feedback import feedback_text

    v = problem.verifier
    lim = _sandbox_limits(problem)
    t0 = time.perf_counter()
    plans: list = []  # per reply: a Verdict (decided without running) or (answer, [futures])
    for response, truncated in replies:
        if isinstance(v, AnswerVerifier):
            answer = extract_answer(response, v.extract)
            plans.append(_format_verdict(problem, truncated, "") if answer is None
                         else _verdict([_answer_outcome(v, answer)], answer, truncated, t0))
            continue
        if isinstance(v, CommandVerifier):
            payload = (response if v.send == "response" else
                       extract_code(response) if v.send == "code" else extract_answer(response, v.extract))
            if payload is None:
                plans.append(_format_verdict(problem, truncated, ""))
            else:
                plans.append((payload, truncated, [_pool().submit(_command_job(problem, v, payload))]))
            continue
        code = extract_code(response)
        if code is None:
            plans.append(_format_verdict(problem, truncated, ""))
            continue
        if isinstance(v, StdioVerifier):
            jobs = [_stdio_job(code, v, i, lim) for i in range(len(v.tests))]
        elif v.tests:
            jobs = [_function_job(code, v, i, lim) for i in range(len(v.tests))]
        else:
            calls = split_check(v.test_code or "", v.name) or [None]
            jobs = [_assertion_job(code, v, i, c, lim) for i, c in enumerate(calls)]
        plans.append((code, truncated, [_pool().submit(j) for j in jobs]))

    verdicts = []
    for plan in plans:
        if isinstance(plan, Verdict):
            verdict = plan
        else:
            answer, truncated, futures = plan
            results = [f.result() for f in futures]
            if isinstance(v, CommandVerifier):
                outcome, text = results[0]
                verdict = _verdict([outcome], answer, truncated, t0, message=text)
                if not verdict.passed:
                    verdict.status = JUDGE_FAILED
            else:
                verdict = _verdict(results, answer, truncated, t0)
        verdict.feedback = feedback_text(verdict, problem)
        verdicts.append(verdict)
    return verdicts
