"""The judge of a `function` problem: runs in its OWN sandbox, which holds no code from the reply.

    python -I judge.py       (wire.py beside it; the job arrives on stdin)

Everything that decides a verdict happens here: the problem's setup and assertions, HumanEval's
`check(candidate)`, expected values, float tolerance, the comparison. `candidate` is a proxy: calling
it sends the arguments to sdpo, which runs the call in the candidate's sandbox (runner.py) and sends
back either the return value as tagged plain data (wire.py, decoded here into builtin objects) or
how the call failed. A failed call raises CandidateFailed, a BaseException, so test code that
catches `Exception` cannot turn a crash into a pass.

Protocol (JSON lines; this process's original stdout is the channel, test code's prints go to stderr):
    in   {"name": f, "max_bytes": n, "tests": [{"args", "kwargs", "expected"}], "tolerance": x}
         or {"name": f, "max_bytes": n, "asserts": [{"mode", "setup", "left", "right" | "stmt"}]}
         or {"name": f, "max_bytes": n, "check": test_code}
    out  {"call": {"args": tagged, "kwargs": tagged}}
    in   {"ok": "<the runner's R line without the R>", "debug": s}
         or {"fail": {"status", "error", "location", "debug"}}
    out  {"done": [{"status", "output", "expected", "error", "location", "debug", "time_s", ...}]}
         one outcome per test, in order.
"""

import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder out
import wire  # noqa: E402

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(4300)

_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr
_in = sys.stdin
_DEBUG_CHARS = 16000


class CandidateFailed(BaseException):
    """A call of the candidate did not return a value (error, limit, unreadable result)."""

    def __init__(self, info: dict):
        super().__init__(info.get("error", ""))
        self.info = info


def _send(obj) -> None:
    _out.write(json.dumps(obj) + "\n")
    _out.flush()


class Candidate:
    """Stands in for the reply's function: each call is a round trip to the candidate's sandbox."""

    def __init__(self, name: str, max_bytes: int):
        self.__name__ = name
        self.max_bytes = max_bytes
        self.debug = ""

    def __call__(self, *args, **kwargs):
        try:
            req = {"args": wire.encode(list(args)), "kwargs": wire.encode(dict(kwargs))}
        except wire.WireError as e:
            raise CandidateFailed({"status": "runtime_error",
                                   "error": f"Judge error: the test passes {e} to the function, "
                                            "which cannot be sent to the sandbox"}) from None
        _send({"call": req})
        reply = json.loads(_in.readline())
        self.debug = (self.debug + reply.get("debug", ""))[-_DEBUG_CHARS:]
        if "fail" in reply:
            raise CandidateFailed(reply["fail"])
        try:
            return wire.decode(wire.loads(reply["ok"], self.max_bytes))
        except wire.WireError as e:
            raise CandidateFailed({"status": "runtime_error",
                                   "error": f"The function's result could not be read back: {e}"}) from None


def _failure(e: CandidateFailed) -> dict:
    info = e.info
    return {"status": info.get("status", "runtime_error"), "error": info.get("error", ""),
            "location": info.get("location", ""), "debug": info.get("debug", "")}


def _test_error() -> dict:
    """An exception raised by the test code itself (e.g. indexing the None a wrong reply returned)."""
    lines = traceback.format_exc().rstrip().splitlines()
    return {"status": "runtime_error", "error": lines[-1] if lines else "Error"}


def _run(candidate: Candidate, test) -> dict:
    """One test: `test()` returns the outcome fields; failures of the call or the test code are caught."""
    candidate.debug = ""
    t0 = time.perf_counter()
    try:
        out = test()
    except CandidateFailed as e:
        out = _failure(e)
    except Exception:
        out = _test_error()
    out.setdefault("debug", candidate.debug)
    out["time_s"] = time.perf_counter() - t0
    return out


def _calls(job: dict, candidate: Candidate) -> list[dict]:
    tol = job.get("tolerance")

    def one(t):
        got = wire.normalise(candidate(*t["args"], **t["kwargs"]))
        want = json.loads(json.dumps(t["expected"]))
        ok = wire.close(got, want, tol)
        return {"status": "passed" if ok else "wrong_answer", "output": json.dumps(got), "expected": json.dumps(want)}

    return [_run(candidate, lambda t=t: one(t)) for t in job["tests"]]


def _asserts(job: dict, candidate: Candidate) -> list[dict]:
    def one(a):
        env = {"candidate": candidate, job["name"]: candidate, "__name__": "tests"}
        exec(compile(a.get("setup", ""), "test.py", "exec"), env)
        if a["mode"] == "assert_eq":
            left = eval(compile(a["left"], "test.py", "eval"), env)
            right = eval(compile(a["right"], "test.py", "eval"), env)
            ok = bool(left == right)
            return {"status": "passed" if ok else "wrong_answer", "output": repr(left), "expected": repr(right)}
        try:
            exec(compile(a["stmt"], "test.py", "exec"), env)
        except AssertionError:
            return {"status": "wrong_answer"}
        return {"status": "passed"}

    return [_run(candidate, lambda a=a: one(a)) for a in job["asserts"]]


def _check(job: dict, candidate: Candidate) -> list[dict]:
    """HumanEval's check(candidate) run whole: a failing assertion is shown by its source line."""
    src = job["check"]

    def one():
        env = {"candidate": candidate, job["name"]: candidate, "__name__": "tests"}
        try:
            exec(compile(src, "test.py", "exec"), env)
            env["check"](candidate)
        except AssertionError:
            tb = traceback.extract_tb(sys.exc_info()[2])
            lines = [f.lineno for f in tb if f.filename == "test.py" and f.lineno]
            text = src.splitlines()
            line = text[lines[-1] - 1].strip() if lines and lines[-1] <= len(text) else "check(candidate)"
            return {"status": "wrong_answer", "input": line, "debug": ""}
        return {"status": "passed"}

    return [_run(candidate, one)]


def main() -> None:
    job = json.loads(_in.readline())
    candidate = Candidate(job["name"], job["max_bytes"])
    run = _calls if "tests" in job else _asserts if "asserts" in job else _check
    _send({"done": run(job, candidate)})


main()
