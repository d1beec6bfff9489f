"""Runs INSIDE the sandbox for `function` problems: load solution.py, call it, print a JSON result.

This file is copied next to the candidate's solution.py and run as `python -I harness.py`; it never
imports sdpo_cli. It reads call.json:
    {"mode": "call", "name": f, "args": [...], "kwargs": {...}}  -> f(*args, **kwargs)
    {"mode": "assert_eq", "name": f, "setup": src, "left": expr, "right": expr}
    {"mode": "assert", "name": f, "setup": src, "stmt": src}
    {"mode": "check", "name": f, "test_code": src}     -> HumanEval check(candidate), unsplit
preamble.py (the verifier's `preamble`, e.g. the imports a judge provides; may be empty) runs first
in the solution's namespace, as if written above the solution without shifting its line numbers.
The result goes to the ORIGINAL stdout as one JSON line; the candidate's own prints are redirected to
stderr so they cannot forge a result (they show up as debug output instead). Exceptions propagate,
so the traceback (with solution.py frames) reaches stderr and the exit code is non-zero.
"""

import json
import os
import sys

_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr


def _norm(x):
    """JSON-friendly canonical form: tuples -> lists, sets -> sorted lists, other objects -> repr."""
    if isinstance(x, (bool, int, float, str)) or x is None:
        return x
    if isinstance(x, (list, tuple)):
        return [_norm(v) for v in x]
    if isinstance(x, (set, frozenset)):
        items = [_norm(v) for v in x]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(x, dict):
        return {str(k): _norm(v) for k, v in x.items()}
    return repr(x)


def _emit(obj):
    _out.write(json.dumps(obj) + "\n")
    _out.flush()


call = json.load(open("call.json", encoding="utf-8"))
ns = {"__name__": "solution"}
with open("preamble.py", encoding="utf-8") as f:
    exec(compile(f.read(), os.path.abspath("preamble.py"), "exec"), ns)
with open("solution.py", encoding="utf-8") as f:
    code = compile(f.read(), os.path.abspath("solution.py"), "exec")
exec(code, ns)

name = call["name"]
sol = ns.get("Solution")
if isinstance(sol, type) and hasattr(sol, name):
    candidate = getattr(sol(), name)
elif callable(ns.get(name)):
    candidate = ns[name]
else:
    raise NameError(f"function {name!r} is not defined (define `def {name}(...)` or a `class Solution` method)")

mode = call["mode"]
if mode == "call":
    _emit({"result": _norm(candidate(*call["args"], **call["kwargs"]))})
else:
    env = {"candidate": candidate, name: candidate, "__name__": "tests"}
    if mode == "check":
        exec(compile(call["test_code"], "test.py", "exec"), env)
        env["check"](candidate)
        _emit({"pass": True})
    else:
        exec(compile(call.get("setup", ""), "test.py", "exec"), env)
        if mode == "assert_eq":
            left = eval(compile(call["left"], "test.py", "eval"), env)
            right = eval(compile(call["right"], "test.py", "eval"), env)
            _emit({"pass": bool(left == right), "output": repr(left), "expected": repr(right)})
        else:
            try:
                exec(compile(call["stmt"], "test.py", "exec"), env)
                _emit({"pass": True})
            except AssertionError:
                _emit({"pass": False})
