"""The candidate's side of a `function` problem: runs INSIDE the sandbox, next to the reply's code.

    python -I runner.py      (files beside it: wire.py, preamble.py, solution.py)

It holds no test, no expected value and no verdict: it only calls the candidate with the arguments it
is sent and sends back what came out, as plain data. Everything the reply's code can do here (print,
exit, patch builtins, write to any descriptor) can at most change the value reported for the call it
is running; the judge, another process, decides what that value is worth.

Protocol (one line each; sdpo reads fd 1 of this process, its original stdout):
    out  H                       started, before any reply code runs
    out  L | E                   preamble and solution loaded | failed (traceback on stderr)
    in   {"args": [..], "kwargs": {..}}       one call, tagged (wire.py)
    out  R<tagged JSON> | E      the return value | an exception (traceback on stderr)
The reply's own prints go to stderr (fd 1 is re-pointed there), and stdin reads end at once (EOF), as
for a program run on an empty input. preamble.py (the verifier's `preamble`, may be empty) runs in the
solution's namespace first, without shifting the solution's line numbers. A `class Solution` method
gets a new instance per call, as on LeetCode.
"""

import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder out
import wire  # noqa: E402

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(4300)

_requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
_results = os.fdopen(os.dup(1), "w", encoding="utf-8")
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.dup2(2, 1)
os.close(_null)
sys.stdout = sys.stderr


def _send(line: str) -> None:
    sys.stderr.flush()  # debug output of this call reaches its pipe before the result does
    _results.write(line + "\n")
    _results.flush()


def _failed() -> None:
    traceback.print_exc()
    _send("E")


def _load():
    ns = {"__name__": "solution"}
    for name in ("preamble.py", "solution.py"):
        with open(name, encoding="utf-8") as f:
            exec(compile(f.read(), os.path.abspath(name), "exec"), ns)
    return ns


def _target(ns: dict, name: str):
    sol = ns.get("Solution")
    if isinstance(sol, type) and hasattr(sol, name):
        return lambda: getattr(sol(), name)
    if callable(ns.get(name)):
        return lambda: ns[name]
    raise NameError(f"function {name!r} is not defined (define `def {name}(...)` or a `class Solution` method)")


def main() -> None:
    _send("H")
    try:
        target = _target(_load(), sys.argv[1])
    except BaseException:
        _failed()
        return
    _send("L")
    for line in _requests:
        try:
            req = json.loads(line)
            args, kwargs = wire.decode(req["args"]), wire.decode(req["kwargs"])
            value = target()(*args, **kwargs)
        except BaseException:
            _failed()
            continue
        try:
            out = "R" + wire.dumps(wire.encode(value))
        except (wire.WireError, ValueError) as e:
            what = str(e) if isinstance(e, wire.WireError) else "an integer too large to send back"
            print(f"TypeError: the function returned {what}; return None, bool, int, float, str, bytes "
                  "or list / tuple / dict / set / frozenset of them", file=sys.stderr)
            out = "E"
        _send(out)


main()
