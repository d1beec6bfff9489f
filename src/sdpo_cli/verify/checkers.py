"""Problem kinds -> sandbox runs -> `Verdict`s.

Who decides a verdict: always a process that holds no code from the reply.
  stdio    each test case is one sandbox run of the reply (as in the paper's code environment);
           sdpo compares its stdout. The exit code can only fail a test.
  function per reply, a judge process and a candidate process (calls.py): the judge runs the tests
           and compares; the candidate only answers calls with plain data.
  answer   sdpo extracts and compares (regex matching under a timeout).
  command  the user's judge program, in a sandbox of its own (judge_view): it gets the extracted
           payload on stdin and as the file `answer.txt` (its last argument), can read the problem's
           folder and the folders its command names, and decides by its exit code (0 = pass); what
           it prints is the feedback. The reply's code never runs there unless the judge runs it
           itself (then the judge must contain it: its sandbox can read the problem folder).
All runs of a batch go to one thread pool with as many workers as usable cores (one job per stdio
test, per function reply, per command reply). The threads only wait on child processes, so the GIL is
no bottleneck.

Comparison rules:
  stdio    line by line, ignoring trailing whitespace on each line and trailing blank lines; with
           `float_tolerance`, numeric tokens compare with math.isclose(rel_tol=abs_tol=tolerance).
  function the JSON-normalised return value (tuples -> lists, sets -> sorted lists) equals `expected`
           (same tolerance rule for floats); assertion tests pass when the assertion holds.
  answer   exact (whitespace-trimmed), number (tolerance), or regex fullmatch.
  command  the judge's exit code 0 means pass; its output is the feedback.

Hidden tests are refused (SandboxRefused) where the sandbox cannot hide the problem file from the
reply (`sandbox.hides_files()` is false: no bubblewrap and no unshare as root).
"""

from __future__ import annotations

import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import regex

from ..extract import TIMEOUT_S, extract_answer, extract_code, parse_number
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
    SandboxRefused,
    TestOutcome,
    Verdict,
)
from .sandbox import Limits as SandboxLimits
from .sandbox import hides_files, isolation, run_program, run_python

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

    location reads "  <source line>\\nLine N in f (Solution.py)" (LeetCode style, as in the paper's
    feedback); "" if the error did not happen in solution.py (e.g. inside a library).
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


def failure_fields(status: str, returncode: int | None, stderr: str, lim: SandboxLimits) -> dict:
    """Outcome fields (status, error, location, debug) of a program or call that did not finish
    normally; `status` as the sandbox reports it (timeout, memory, output_limit, error)."""
    debug = stderr[-3000:]
    if status == "timeout":
        return {"status": TIME_LIMIT, "debug": debug}
    if status == "memory":
        return {"status": MEMORY_LIMIT, "error": "MemoryError: memory limit exceeded", "debug": debug}
    if status == "output_limit":
        return {"status": OUTPUT_LIMIT, "error": "Output limit exceeded", "debug": debug}
    error, location = parse_traceback(stderr)
    rc = returncode or 0
    signal = -rc if rc < 0 else rc - 128 if rc > 128 else 0  # bwrap and sh report a signal as 128 + its number
    if signal and not stderr.strip():
        error = f"Process killed by signal {signal} (stack overflow or crash)"
    kind = MEMORY_LIMIT if error.startswith("MemoryError") else RUNTIME_ERROR
    return {"status": kind, "error": error, "location": location, "debug": debug}


def _failed_run(res, idx: int, hidden: bool, shown_input: str, lim: SandboxLimits) -> TestOutcome | None:
    """An outcome for a run that did not finish normally, else None."""
    if res.status == "ok":
        return None
    fields = failure_fields(res.status, res.returncode, res.stderr, lim)
    return TestOutcome(index=idx, hidden=hidden, input=shown_input, time_s=res.wall_s, **fields)


# --------------------------------------------------------------------------------------------------
# Comparisons


def _lines(s: str) -> list[str]:
    return [ln.rstrip() for ln in s.replace("\r\n", "\n").rstrip().split("\n")]


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
            fa, fb = parse_number(a), _parse_number(b)
            ok = math.isclose(fa, fb, rel_tol=tol, abs_tol=tol) if fa is not None and fb is not None else a == b
            if not ok:
                return False
    return True


# --------------------------------------------------------------------------------------------------
# One test case = one job (a closure run in the pool)


def _stdio_job(code: str, v: StdioVerifier, idx: int, lim: SandboxLimits):
    t = v.tests[idx]

    def run() -> TestOutcome:
        res = run_python(code, stdin=t.input, limits=lim)
        bad = _failed_run(res, idx, t.hidden, t.input, lim)
        if bad:
            return bad
        ok = stdout_matches(res.stdout, t.output, v.float_tolerance)
        return TestOutcome(index=idx, status=PASSED if ok else WRONG_ANSWER, hidden=t.hidden, input=t.input,
                           output=res.stdout, expected=t.output, debug=res.stderr, time_s=res.wall_s)

    return run


def _function_job(problem: Problem, code: str, lim: SandboxLimits):
    from .calls import run_function_tests

    return lambda: run_function_tests(problem, code, lim)


def _answer_outcome(v: AnswerVerifier, answer: str) -> tuple[TestOutcome, str]:
    """(outcome, message). Model text meets the comparison here, in sdpo: number parsing is bounded
    and a regex match runs under a timeout (a pattern that backtracks badly fails the answer)."""
    want = str(v.answer)
    match = v.resolved_match
    message = ""
    if match == "number":
        a, b = parse_number(answer), _parse_number(want)
        ok = a is not None and math.isclose(a, b, rel_tol=v.tolerance, abs_tol=v.tolerance)
    elif match == "regex":
        try:
            ok = regex.fullmatch(want, answer.strip(), timeout=TIMEOUT_S) is not None
        except TimeoutError:
            ok, message = False, f"the regex judge gave up after {TIMEOUT_S:g} s"
    else:
        ok = answer.strip() == want.strip()
    # The expected answer is never put into the outcome: feedback must not reveal it.
    return TestOutcome(index=0, status=PASSED if ok else WRONG_ANSWER, hidden=True, output=answer), message


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


def has_hidden_tests(problem: Problem) -> bool:
    v = problem.verifier
    return isinstance(v, (StdioVerifier, FunctionVerifier)) and any(t.hidden for t in v.tests)


def hidden_tests_refusal(problem: Problem) -> str | None:
    """Why `problem` cannot be verified here (hidden tests, but the sandbox cannot hide the problem file
    from the reply), or None when it can."""
    if not has_hidden_tests(problem) or hides_files():
        return None
    where = problem.path or problem.id
    return (f"{where}: has hidden tests, but the sandbox here ({isolation()} mode) cannot hide problem files "
            "from the reply's code; install bubblewrap (apt-get install bubblewrap) or run sdpo as root "
            "(unshare), or remove `hidden: true`")


def _extract(fn, *args) -> tuple[str | None, str]:
    """(extracted text or None, message): extraction that times out on hostile text finds nothing."""
    try:
        return fn(*args), ""
    except TimeoutError:
        return None, f"extracting the answer gave up after {TIMEOUT_S:g} s"


def check_replies(problem: Problem, replies: list[tuple[str, bool]]) -> list[Verdict]:
    """Verify every (response, truncated) reply of `problem`; see verify.verify_many.

    Raises:
        SandboxRefused: the problem has hidden tests and this machine's sandbox cannot hide them.
    """
    from ..feedback import feedback_text

    refusal = hidden_tests_refusal(problem)
    if refusal:
        raise SandboxRefused(refusal)
    v = problem.verifier
    lim = _sandbox_limits(problem)
    t0 = time.perf_counter()
    plans: list = []  # per reply: a Verdict (decided without running) or (answer, truncated, [futures], kind)
    for response, truncated in replies:
        if isinstance(v, AnswerVerifier):
            answer, message = _extract(extract_answer, response, v.extract)
            if answer is None:
                plans.append(_format_verdict(problem, truncated, message))
                continue
            outcome, message = _answer_outcome(v, answer)
            plans.append(_verdict([outcome], answer, truncated, t0, message=message))
            continue
        if isinstance(v, CommandVerifier):
            payload, message = (response, "") if v.send == "response" else _extract(
                extract_code, response) if v.send == "code" else _extract(extract_answer, response, v.extract)
            if payload is None:
                plans.append(_format_verdict(problem, truncated, message))
            else:
                plans.append((payload, truncated, [_pool().submit(_command_job(problem, v, payload))], "command"))
            continue
        code, message = _extract(extract_code, response)
        if code is None:
            plans.append(_format_verdict(problem, truncated, message))
            continue
        if isinstance(v, StdioVerifier):
            jobs = [_stdio_job(code, v, i, lim) for i in range(len(v.tests))]
            plans.append((code, truncated, [_pool().submit(j) for j in jobs], "stdio"))
        else:
            plans.append((code, truncated, [_pool().submit(_function_job(problem, code, lim))], "function"))

    verdicts = []
    for plan in plans:
        if isinstance(plan, Verdict):
            verdict = plan
        else:
            answer, truncated, futures, kind = plan
            results = [f.result() for f in futures]
            if kind == "command":
                outcome, text = results[0]
                verdict = _verdict([outcome], answer, truncated, t0, message=text)
                if not verdict.passed:
                    verdict.status = JUDGE_FAILED
            else:
                verdict = _verdict(results[0] if kind == "function" else results, answer, truncated, t0)
        verdict.feedback = feedback_text(verdict, problem)
        verdicts.append(verdict)
    return verdicts
