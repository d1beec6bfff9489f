"""Forged replies: replies that try to get a verdict of "passed" without solving the problem.

Pure data (no sdpo imports), shared by tests/test_redteam.py and bench/bench_redteam.py, which also
runs them against an older checkout to show which ones used to pass. Each attack is
(id, problem key, reply text); `PROBLEMS` maps the keys to problem dicts (or to files in problems/),
`CORRECT` to a reply that does solve the problem. Every attack's own "solution" is wrong, so a pass
is a forged pass.
"""

from __future__ import annotations

import json

FN_CHECK = {  # HumanEval style whole check(candidate): a loop cannot be split into cases
    "id": "rt-check", "title": "t", "prompt": "q",
    "verifier": {"kind": "function", "name": "running_max", "test_code": (
        "def check(candidate):\n"
        "    for xs, want in [([1, 3, 2], [1, 3, 3]), ([5, 4, 3], [5, 5, 5]), ([], [])]:\n"
        "        assert candidate(xs) == want\n")}}
REGEX = {"id": "rt-regex", "title": "t", "prompt": "q",
         "verifier": {"kind": "answer", "answer": "(?i)paris", "match": "regex"}}
PROBLEMS = {
    "fn_asserts": "problems/function_running_max.yaml",  # split into one case per assertion
    "fn_check": FN_CHECK,
    "fn_calls": "problems/function_two_sum.yaml",  # args / expected tests, class Solution, one hidden
    "stdio": "problems/stdio_second_largest.yaml",
    "answer": "problems/answer_arith.yaml",  # 20
    "answer_regex": REGEX,
    "command": "problems/command_palindrome.yaml",
}


def fence(code: str) -> str:
    return f"Here is my solution.\n```python\n{code.strip()}\n```\n"


RUNNING_MAX = ("def running_max(numbers):\n    out, best = [], None\n    for x in numbers:\n"
               "        best = x if best is None else max(best, x)\n        out.append(best)\n    return out\n")
TWO_SUM = ("class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
           "        for j, x in enumerate(nums):\n            if target - x in seen:\n"
           "                return [seen[target - x], j]\n            seen[x] = j\n")
SECOND = ("n = int(input())\nxs = sorted(set(map(int, input().split())), reverse=True)\n"
          "print(xs[1] if len(xs) > 1 else -1)\n")
CORRECT = {
    "fn_asserts": fence(RUNNING_MAX), "fn_check": fence(RUNNING_MAX), "fn_calls": fence(TWO_SUM),
    "stdio": fence(SECOND), "answer": "Answer: 20", "answer_regex": "Answer: Paris", "command": "Answer: babbbab",
}

# Pieces the function attacks combine. The old harness (one process: reply + assertions + verdict)
# kept its verdict writer `_emit`, its duplicated stdout (fd 3) and the test description `call` in
# `__main__`; the new runner has `_send` and its result descriptor. The attacks try both.
_PASS = '{"pass": true, "result": null, "output": "", "expected": ""}'
_FORGE = f"""
import os, sys, __main__
def _forge():
    for fd in range(3, 12):
        for line in ({_PASS!r}, "R[]", "L"):
            try:
                os.write(fd, (line + "\\n").encode())
            except OSError:
                pass
    for name, arg in (("_emit", {{"pass": True}}), ("_send", "R[]")):
        f = getattr(__main__, name, None)
        if callable(f):
            try:
                f(arg)
            except Exception:
                pass
"""
_WRONG = "def running_max(numbers):\n    return list(numbers)\n"


def _fn(body: str) -> str:
    return fence(body)


FUNCTION_ATTACKS = [
    # The seven, against the old single-process harness:
    ("fd_write_then_exit", "fn_asserts", _fn(_FORGE + "_forge()\nos._exit(0)\n")),
    ("emit_helper_then_exit", "fn_asserts", _fn(_FORGE + "def running_max(numbers):\n    _forge()\n    os._exit(0)\n")),
    ("rewrite_test_in_memory", "fn_asserts", _fn(
        "import __main__\nc = getattr(__main__, 'call', None)\n"
        "if isinstance(c, dict):\n    c.update(mode='assert', stmt='pass', left='1', right='1')\n" + _WRONG)),
    ("always_equal_object", "fn_asserts", _fn(
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        "    def __repr__(self):\n        return '[5, 5, 5]'\n"
        "def running_max(numbers):\n    return Anything()\n")),
    ("patch_builtins_bool", "fn_asserts", _fn("import builtins\nbuiltins.bool = lambda *a: True\n" + _WRONG)),
    ("patch_json_dumps", "fn_asserts", _fn(
        "import json\n_dumps = json.dumps\n"
        "def dumps(o, *a, **k):\n    if isinstance(o, dict):\n        o = {**o, 'pass': True}\n    return _dumps(o, *a, **k)\n"
        "json.dumps = dumps\n" + _WRONG)),
    ("excepthook_writes_pass", "fn_asserts", _fn(
        _FORGE + "def hook(*a):\n    _forge()\n    os._exit(0)\nsys.excepthook = hook\n"
        "def running_max(numbers):\n    raise ValueError('boom')\n")),
    # More ways in:
    ("atexit_writes_pass", "fn_asserts", _fn(
        _FORGE + "import atexit\natexit.register(lambda: (_forge(), os._exit(0)))\n"
        "def running_max(numbers):\n    raise ValueError('boom')\n")),
    ("list_subclass_equal_to_all", "fn_asserts", _fn(
        "class L(list):\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
        "def running_max(numbers):\n    return L()\n")),
    ("int_subclass_elements", "fn_asserts", _fn(
        "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def running_max(numbers):\n    return [I(0) for _ in numbers]\n")),
    ("expected_value_from_memory", "fn_asserts", _fn(
        "import gc, __main__\n"
        "def running_max(numbers):\n"
        "    c = getattr(__main__, 'call', None)\n"
        "    if isinstance(c, dict) and 'right' in c:\n        return eval(c['right'])\n"
        "    for o in gc.get_objects():\n"
        "        if isinstance(o, dict) and 'expected' in o and o.get('args') == [numbers]:\n"
        "            return o['expected']\n"
        "    return list(numbers)\n")),
    ("fake_verdict_prints", "fn_asserts", _fn(
        "import sys\nprint('{\"pass\": true}')\nprint('{\"done\": []}', file=sys.stderr)\nprint('R[5, 5, 5]')\n" + _WRONG)),
    ("background_writer", "fn_asserts", _fn(
        _FORGE + "import threading, time\n"
        "def spam():\n    while True:\n        _forge()\n        time.sleep(0.01)\n"
        "threading.Thread(target=spam, daemon=True).start()\n" + _WRONG)),
    ("forged_wire_data", "fn_asserts", _fn(
        "import os\ndef running_max(numbers):\n"
        "    for line in ('R{\"t\": {\"x\": 1}}', 'R' + '[' * 5000 + ']' * 5000, 'R' + '9' * 6000, 'R{\"d\": [[[1], 2]]}'):\n"
        "        os.write(3, (line + '\\n').encode())\n    os._exit(0)\n")),
    ("exit_zero_without_answer", "fn_asserts", _fn("import sys\ndef running_max(numbers):\n    sys.exit(0)\n")),
    ("kill_everything", "fn_asserts", _fn(
        "import os, signal\ndef running_max(numbers):\n"
        "    for pid in (os.getppid(), 1, -1):\n        try:\n            os.kill(pid, signal.SIGKILL)\n"
        "        except OSError:\n            pass\n    return list(numbers)\n")),
    # The whole-check (unsplit) form and the args/expected form:
    ("check_emit_then_exit", "fn_check", _fn(_FORGE + "def running_max(numbers):\n    _forge()\n    os._exit(0)\n")),
    ("check_atexit", "fn_check", _fn(
        _FORGE + "import atexit\natexit.register(lambda: (_forge(), os._exit(0)))\n"
        "def running_max(numbers):\n    raise AssertionError('no')\n")),
    ("calls_always_equal", "fn_calls", _fn(
        "class Anything(list):\n    def __eq__(self, other):\n        return True\n"
        "class Solution:\n    def twoSum(self, nums, target):\n        return Anything([0, 1])\n")),
    ("calls_fd_write", "fn_calls", _fn(
        _FORGE + "class Solution:\n    def twoSum(self, nums, target):\n        _forge()\n        os._exit(0)\n")),
]

# Walks the folders where checkouts and problem files usually live and answers from the file that
# holds this call's arguments or this run's input (a visible or hidden test alike).
_WALK = """
import ast, json, os, re
def _walk_for(needle):
    for root in ('/work', '/home', '/srv', '/opt', '/tmp', '/root'):
        for top, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in ('.venv', '.git', 'site-packages', 'node_modules')
                       and top.count('/') < 5]
            for name in names:
                if name.endswith(('.yaml', '.yml')):
                    try:
                        text = open(os.path.join(top, name), errors='replace').read()
                    except OSError:
                        continue
                    i = text.find(needle)
                    if i >= 0:
                        return text[i + len(needle):]
"""
FUNCTION_ATTACKS.append(("calls_problem_file_by_walk", "fn_calls", _fn(
    _WALK + "class Solution:\n    def twoSum(self, nums, target):\n"
    "        rest = _walk_for('args: ' + json.dumps([nums, target]) + ', expected: ')\n"
    "        return ast.literal_eval(rest[:rest.index(']') + 1]) if rest else [0, 0]\n")))

OTHER_ATTACKS = [
    ("stdio_problem_file_by_walk", "stdio", fence(
        _WALK + "import sys\ndata = sys.stdin.read()\n"
        "rest = _walk_for('input: ' + json.dumps(data) + ', output: ')\n"
        "print(ast.literal_eval(rest[:rest.index('\"', 1) + 1]) if rest else 0, end='')\n")),
    ("stdio_exit_code_zero_no_output", "stdio", fence("import os\nos._exit(0)\n")),
    ("stdio_fake_pass_lines", "stdio", fence(
        "import sys\nprint('passed 5/5')\nprint('{\"pass\": true}', file=sys.stderr)\nraise SystemExit(0)\n")),
    ("stdio_kill_parent", "stdio", fence(
        "import os, signal\nfor pid in (os.getppid(), 1, -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n        pass\nprint(3)\n")),
    ("answer_nan", "answer", "Answer: nan"),
    ("answer_infinity", "answer", "Answer: inf"),
    ("answer_overflow", "answer", "Answer: 1e999"),
    ("answer_huge_fraction", "answer", "Answer: " + "9" * 5000 + "/1"),
    ("answer_two_numbers", "answer", "Answer: 19 or 21"),
    ("answer_empty_box", "answer", "\\boxed{}"),
    ("regex_alternation_in_reply", "answer_regex", "Answer: paris|london"),
    ("regex_prefix", "answer_regex", "Answer: Paris, France"),
    ("command_shell_injection", "command", "Answer: $(exit 0); babbbab"),
    ("command_second_line", "command", "Answer: aaaaaaa\nbabbbab"),
]

ATTACKS = FUNCTION_ATTACKS + OTHER_ATTACKS


def problem_json(key: str, root) -> str:
    """The problem as a JSON string (inline dicts) or its path under `root` (files)."""
    spec = PROBLEMS[key]
    return json.dumps(spec) if isinstance(spec, dict) else str(root / spec)
