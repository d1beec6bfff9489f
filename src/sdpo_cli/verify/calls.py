"""`function` problems: per attempt, a judge process and a candidate process, with sdpo in between.

    outcomes = run_function_tests(problem, code, limits)     # one TestOutcome per test

    sdpo ──job──▶ judge.py (own sandbox: test code, expected values, comparisons; no reply code)
         ◀─call── ...
    sdpo ──call─▶ runner.py + the reply (own sandbox, own uid: no test data)
         ◀─value or failure
    sdpo ──value▶ judge.py ... ◀─outcomes── judge.py

sdpo only moves lines between the two and enforces the limits of each call: its CPU time (read from
/proc, `time_s`), wall clock (2 * time_s + 1), output (`output_bytes` for the returned value and for
the reply's prints), memory (RLIMIT_AS). A call that hits a limit or crashes the process ends only its
own test; the candidate is started again for the next call. Start-up (loading the reply) has the
same limits; if it fails, every test fails with that error and nothing is restarted. The candidate
process serves all calls of the attempt, so the module loads once and module-level state carries
over from call to call (a `class Solution` is instantiated per call). Nothing the candidate prints or
returns reaches the judge except as the one value of the call it answers, and its exit code decides
nothing: a crash is a failed test.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import time
from pathlib import Path

from ..problem import FunctionVerifier, Problem
from . import PASSED, RUNTIME_ERROR, TestOutcome
from .assertions import split_check
from .sandbox import Limits, Sandbox, classify, cpu_seconds, interpreter, spawn

_HERE = Path(__file__).parent
_SOURCES = {name: (_HERE / name).read_bytes() for name in ("runner.py", "judge.py", "wire.py")}
_START_S = 30.0  # sandbox start-up (ours, not the reply's): bwrap, the interpreter, runner.py
_JUDGE_STEP_S = 60.0  # the judge's own work between two calls (test code is small)
_JUDGE_OUTPUT = 64 << 20
_DEBUG_TAIL = 3000


class _Stream:
    """A non-blocking pipe read into a capped buffer."""

    def __init__(self, f, cap: int):
        self.f, self.fd, self.cap = f, f.fileno(), cap
        os.set_blocking(self.fd, False)
        self.buf = bytearray()
        self.eof = self.over = False

    def line(self) -> bytes | None:
        i = self.buf.find(b"\n")
        if i < 0:
            return None
        out = bytes(self.buf[:i])
        del self.buf[: i + 1]
        return out

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


class _Pipes:
    """Everything one attempt reads and writes, multiplexed in the calling thread (no helper threads,
    so a process started here gets its parent-death signal from a thread that outlives it)."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.pending: dict[int, memoryview] = {}

    def add(self, stream: _Stream) -> _Stream:
        self.sel.register(stream.fd, selectors.EVENT_READ, stream)
        return stream

    def drop(self, *streams: _Stream) -> None:
        for s in streams:
            if s.fd in self.sel.get_map():
                self.sel.unregister(s.fd)

    def write(self, f, data: bytes) -> None:
        fd = f.fileno()
        os.set_blocking(fd, False)
        self.pending[fd] = memoryview(data)
        self._flush(fd)

    def _flush(self, fd: int) -> None:
        view = self.pending.get(fd)
        try:
            while view:
                view = view[os.write(fd, view):]
        except BlockingIOError:
            pass
        except OSError:  # the reader is gone; it shows up as EOF on its output
            view = None
        key = self.sel.get_map().get(fd)
        if view:
            self.pending[fd] = view
            if key is None:
                self.sel.register(fd, selectors.EVENT_WRITE, None)
        else:
            self.pending.pop(fd, None)
            if key is not None and key.data is None:
                self.sel.unregister(fd)

    def forget_writes(self, f) -> None:
        fd = f.fileno()
        self.pending.pop(fd, None)
        key = self.sel.get_map().get(fd)
        if key is not None and key.data is None:
            self.sel.unregister(fd)

    def pump(self, timeout: float) -> None:
        for key, events in self.sel.select(timeout=max(timeout, 0)):
            if key.data is None:
                self._flush(key.fd)
                continue
            s: _Stream = key.data
            try:
                chunk = os.read(s.fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                s.eof = True
                self.sel.unregister(s.fd)
                continue
            room = s.cap - len(s.buf)
            if len(chunk) > room:
                s.over = True
            s.buf += chunk[: max(room, 0)]

    def close(self) -> None:
        self.sel.close()


class _Candidate:
    """The reply's process (runner.py), started on demand and again after a call killed it."""

    def __init__(self, code: str, preamble: str | None, name: str, lim: Limits, n_calls: int, pipes: _Pipes):
        self.files = {"runner.py": _SOURCES["runner.py"], "wire.py": _SOURCES["wire.py"], "solution.py": code,
                      "preamble.py": preamble or ""}
        self.name, self.lim, self.pipes = name, lim, pipes
        # RLIMIT_CPU is only a backstop here: each call's CPU time is watched through /proc.
        self.rlimits = Limits(time_s=lim.time_s * (n_calls + 1), memory_mb=lim.memory_mb,
                              output_bytes=lim.output_bytes)
        self.box: Sandbox | None = None
        self.pid: int | None = None
        self.broken: dict | None = None  # the start-up failure, repeated for every call

    def _start(self) -> dict | None:
        """Start runner.py and load the reply; a failure dict if that did not work."""
        try:
            self.box = spawn([interpreter(), "-I", "runner.py", self.name], files=self.files,
                             limits=self.rlimits, stdin=None)
        except OSError as e:
            return {"status": RUNTIME_ERROR, "error": f"could not start the sandbox: {e}"}
        self.out = self.pipes.add(_Stream(self.box.proc.stdout, self.lim.output_bytes + 64))
        self.err = self.pipes.add(_Stream(self.box.proc.stderr, self.lim.output_bytes))
        hello = self._reply(time.monotonic() + _START_S, None)
        if hello != b"H":
            self.broken = hello if isinstance(hello, dict) else self._protocol_error()
            self.stop()
            return self.broken
        self.pid = self.box.program_pid()
        loaded = self._reply(time.monotonic() + self.lim.wall_s, self._cpu())
        if loaded == b"L":
            return None
        if isinstance(loaded, dict):
            self.broken = loaded
        else:
            self.broken = self._exception() if loaded == b"E" else self._protocol_error()
        self.stop()
        return self.broken

    def _cpu(self) -> float | None:
        return cpu_seconds(self.pid) if self.pid else None

    def call(self, request: dict) -> dict:
        """One call: {"ok": payload, "debug": text} or {"fail": {...}} (see judge.py)."""
        if self.broken:
            return {"fail": self.broken}
        if self.box is not None:
            self.pipes.pump(0)
            if self.out.buf:  # lines nobody asked for: a fresh process, so no answer lands on a later call
                self.stop()
        if self.box is None:
            failed = self._start()
            if failed:
                return {"fail": failed}
        self.err.take()
        self.pipes.write(self.box.proc.stdin, (json.dumps(request) + "\n").encode())
        got = self._reply(time.monotonic() + self.lim.wall_s, self._cpu())
        if isinstance(got, dict):
            self.stop()
            return {"fail": got}
        debug = self._debug()
        if got.startswith(b"R"):
            return {"ok": got[1:].decode("utf-8", errors="replace"), "debug": debug}
        if got == b"E":
            return {"fail": self._exception(debug)}
        self.stop()
        return {"fail": self._protocol_error()}

    def _reply(self, deadline: float, cpu0: float | None) -> bytes | dict:
        """The next line from the runner, or a failure dict (time, output, exit)."""
        while True:
            line = self.out.line()
            if line is not None:
                return line
            if self.out.over or self.err.over:
                return self._limit("output_limit")
            if self.out.eof:
                return self._ended()
            now = time.monotonic()
            cpu = self._cpu()
            if now >= deadline or (cpu0 is not None and cpu is not None and cpu - cpu0 > self.lim.time_s):
                return self._limit("timeout")
            self.pipes.pump(min(0.1, deadline - now))

    def _debug(self) -> str:
        self.pipes.pump(0)  # the runner flushed stderr before it wrote the result line
        return self.err.take().decode("utf-8", errors="replace")

    def _limit(self, status: str) -> dict:
        from .checkers import failure_fields

        debug = self._debug()
        self.stop()
        return failure_fields(status, None, debug, self.lim)

    def _ended(self) -> dict:
        """The runner exited mid-call (os._exit, a crash, a signal)."""
        from .checkers import failure_fields

        deadline = time.monotonic() + 2
        while not self.err.eof and time.monotonic() < deadline:
            self.pipes.pump(0.05)
        debug = self.err.take().decode("utf-8", errors="replace")
        rc, cpu = self.stop()
        status = classify(rc, debug, self.rlimits, cpu)
        fields = failure_fields("error" if status == "ok" else status, rc, debug, self.lim)
        if status in ("ok", "error") and fields["error"] == "Process exited with an error":
            # sys.exit / os._exit in the function: whatever the code, no value came back
            fields["error"] = f"The program exited (code {rc}) before the function returned"
        return fields

    def _exception(self, debug: str | None = None) -> dict:
        from .checkers import failure_fields

        return failure_fields("error", 1, self._debug() if debug is None else debug, self.lim)

    @staticmethod
    def _protocol_error() -> dict:
        return {"status": RUNTIME_ERROR, "error": "The function's result could not be read back"}

    def stop(self) -> tuple[int | None, float]:
        if self.box is None:
            return None, 0.0
        self.pipes.forget_writes(self.box.proc.stdin)
        self.pipes.drop(self.out, self.err)
        self.box.close()
        rc, cpu = self.box.returncode, self.box.cpu_s
        self.box = self.pid = None
        return rc, cpu


def _job(v: FunctionVerifier, lim: Limits) -> tuple[dict, list[str]]:
    """The judge's job and the Input shown per test."""
    base = {"name": v.name, "max_bytes": lim.output_bytes + 64}
    if v.tests:
        tests = [{"args": t.args, "kwargs": t.kwargs, "expected": t.expected} for t in v.tests]
        shown = [_call_repr(v.name, t.args, t.kwargs) for t in v.tests]
        return {**base, "tests": tests, "tolerance": v.float_tolerance}, shown
    asserts = split_check(v.test_code or "", v.name)
    if asserts:
        return ({**base, "asserts": [{k: c for k, c in a.items() if k != "show"} for a in asserts]},
                [a["show"] for a in asserts])
    return {**base, "check": v.test_code or ""}, ["check(candidate)"]


def _call_repr(name: str, args: list, kwargs: dict) -> str:
    parts = [json.dumps(a) for a in args] + [f"{k}={json.dumps(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def run_function_tests(problem: Problem, code: str, lim: Limits) -> list[TestOutcome]:
    """Every test of a `function` problem against one reply's code (see the module docstring)."""
    v = problem.verifier
    job, shown = _job(v, lim)
    n = len(shown)
    hidden = [t.hidden for t in v.tests] if v.tests else [False] * n
    pipes = _Pipes()
    cand = _Candidate(code, v.preamble, v.name, lim, n, pipes)
    judge_lim = Limits(time_s=max(30.0, 2.0 * n), memory_mb=max(lim.memory_mb, 1024), output_bytes=_JUDGE_OUTPUT)
    judge: Sandbox | None = None
    t0 = time.perf_counter()

    def failed(error: str) -> list[TestOutcome]:  # every test, when the judge itself went wrong
        return [TestOutcome(index=i, status=RUNTIME_ERROR, hidden=hidden[i], input=shown[i], error=error,
                            time_s=time.perf_counter() - t0) for i in range(n)]

    try:
        judge = spawn([interpreter(), "-I", "judge.py"], limits=judge_lim, stdin=None,
                      files={"judge.py": _SOURCES["judge.py"], "wire.py": _SOURCES["wire.py"]})
        out = pipes.add(_Stream(judge.proc.stdout, _JUDGE_OUTPUT))
        err = pipes.add(_Stream(judge.proc.stderr, 1 << 20))
        pipes.write(judge.proc.stdin, (json.dumps(job) + "\n").encode())
        results = None
        while results is None:
            deadline = time.monotonic() + _JUDGE_STEP_S
            line = out.line()
            while line is None and not out.eof and not out.over and time.monotonic() < deadline:
                pipes.pump(min(0.5, deadline - time.monotonic()))
                line = out.line()
            if line is None:
                last = err.take().decode("utf-8", errors="replace").strip().splitlines()[-1:]
                return failed(f"Judge error: {last[0] if last else 'it stopped answering'}")
            try:
                msg = json.loads(line)
                results, call = msg.get("done"), msg.get("call")
            except (ValueError, AttributeError) as e:
                return failed(f"Judge error: unreadable message ({e})")
            if results is None:
                if not isinstance(call, dict):
                    return failed("Judge error: a message that is neither a call nor the results")
                pipes.write(judge.proc.stdin, (json.dumps(cand.call(call)) + "\n").encode())
    except OSError as e:
        return failed(f"Judge error: could not start the sandbox: {e}")
    finally:
        cand.stop()
        if judge is not None:
            judge.close()
        pipes.close()
    if not isinstance(results, list) or len(results) != n or not all(isinstance(r, dict) for r in results):
        return failed(f"Judge error: its results do not match the {n} tests")
    return [_outcome(i, r, shown[i], hidden[i]) for i, r in enumerate(results)]


def _outcome(i: int, r: dict, shown: str, hidden: bool) -> TestOutcome:
    status = r.get("status", RUNTIME_ERROR)
    debug = str(r.get("debug", ""))
    if status != PASSED:
        debug = debug[-_DEBUG_TAIL:]
    t = r.get("time_s", 0.0)
    return TestOutcome(index=i, status=status, hidden=hidden, input=str(r.get("input", shown)),
                       output=str(r.get("output", "")), expected=str(r.get("expected", "")),
                       error=str(r.get("error", "")), location=str(r.get("location", "")), debug=debug,
                       time_s=t if isinstance(t, float) and math.isfinite(t) else 0.0)
