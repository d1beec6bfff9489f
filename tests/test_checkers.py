"""Verifiers end to end through the real sandbox: each kind, each failure mode, parallel batches."""

from pathlib import Path

import pytest

from sdpo_cli.problem import Problem, load_problem
from sdpo_cli.verify import verify, verify_many

ROOT = Path(__file__).resolve().parents[1]


def code(src: str) -> str:
    return f"Here is my solution.\n```python\n{src}\n```\n"


@pytest.fixture(scope="module")
def stdio():
    return load_problem(ROOT / "problems/stdio_second_largest.yaml")


def test_stdio_pass_ignores_trailing_whitespace(stdio):
    v = verify(stdio, code("n=int(input()); xs=sorted(set(map(int,input().split())))\nprint(str(xs[-2] if len(xs)>1 else -1) + '   \\n\\n')"))
    assert v.passed and v.n_passed == v.n_total == 5 and v.feedback == ""


def test_stdio_runtime_error_names_line_and_input(stdio):
    v = verify(stdio, code("n = int(input())\nxs = list(map(int, input().split()))\nprint(xs[5])"))
    assert not v.passed and v.status == "runtime_error"
    assert v.feedback.startswith("Runtime Error\nIndexError: list index out of range\n  print(xs[5])\nLine 3 in <module> (Solution.py)")
    assert "Last Executed Input\n" in v.feedback


def test_time_limit(stdio):
    p = stdio.model_copy(update={"limits": stdio.limits.model_copy(update={"time_s": 0.5})})
    v = verify(p, code("while True: pass"))
    assert v.status == "time_limit" and v.feedback.startswith("Time Limit Exceeded\n\nLast Executed Input\n")


def test_format_error_and_truncation(stdio):
    assert verify(stdio, "I don't know how to code this.").feedback.startswith("Incorrect Format")
    assert verify(stdio, "```python\nprint(1", truncated=True).feedback.startswith("Truncated Attempt")


def test_float_tolerance():
    p = Problem.model_validate({"id": "f", "title": "t", "prompt": "q", "verifier": {
        "kind": "stdio", "float_tolerance": 1e-3, "tests": [{"input": "", "output": "0.3333 2\n"}]}})
    assert verify(p, code("print(1/3, 2)")).passed
    assert not verify(p, code("print(0.34, 2)")).passed


def test_function_class_solution_and_plain_function():
    p = load_problem(ROOT / "problems/function_two_sum.yaml")
    cls = "class Solution:\n    def twoSum(self, nums, target):\n        return [i for i in range(len(nums)) for j in range(i+1, len(nums)) if nums[i]+nums[j]==target][:1] + [j for i in range(len(nums)) for j in range(i+1, len(nums)) if nums[i]+nums[j]==target][:1]"
    assert verify(p, code(cls)).passed
    fn = "def twoSum(nums, target):\n    print('debug line')\n    return (0, 1)"  # tuple == list after JSON
    v = verify(p, code(fn))
    assert v.n_passed == 2 and "Debug Output\ndebug line" in v.feedback
    assert "Hidden Tests" not in v.feedback and "[1, 5, 9, -2]" not in v.feedback  # a visible test failed


def test_function_missing_name_is_a_runtime_error():
    p = load_problem(ROOT / "problems/function_two_sum.yaml")
    v = verify(p, code("def other(): pass"))
    assert v.status == "runtime_error" and "NameError: function 'twoSum' is not defined" in v.feedback


def test_assertions_are_split_into_cases():
    p = load_problem(ROOT / "problems/function_running_max.yaml")
    assert p.n_tests == 4
    v = verify(p, code("def running_max(xs):\n    return sorted(xs)"))
    assert v.n_passed == 1 and v.n_total == 4  # only [] passes
    assert "Input\nassert candidate([5, 4, 3]) == [5, 5, 5]\n\nOutput\n[3, 4, 5]\n\nExpected\n[5, 5, 5]" in v.feedback


def test_unsplittable_check_runs_whole():
    p = Problem.model_validate({"id": "c", "title": "t", "prompt": "q", "verifier": {"kind": "function", "name": "sq",
        "test_code": "def check(candidate):\n    for i in range(5):\n        assert candidate(i) == i * i\n"}})
    assert p.n_tests == 1
    assert verify(p, code("def sq(x): return x*x")).passed
    v = verify(p, code("def sq(x): return x+x"))
    assert v.status == "wrong_answer" and "assert candidate(i) == i * i" in v.feedback


def test_function_preamble_runs_before_the_reply_without_shifting_its_lines():
    spec = {"id": "c", "title": "t", "prompt": "q", "verifier": {"kind": "function", "name": "first",
            "tests": [{"args": [[3, 1]], "expected": 3}, {"args": [[]], "expected": None}]}}
    reply = code("def first(xs: List[int]) -> Optional[int]:\n    return xs[0] if xs else None")
    bare = verify(Problem.model_validate(spec), reply)
    assert bare.status == "runtime_error" and "NameError: name 'List' is not defined" in bare.feedback
    spec["verifier"]["preamble"] = "from typing import *\nfrom collections import deque\n"
    p = Problem.model_validate(spec)
    assert verify(p, reply).passed
    # The reply's own definitions win, and its tracebacks still point at its own line numbers.
    v = verify(p, code("deque = None\ndef first(xs):\n    return deque(xs)"))
    assert v.status == "runtime_error" and "TypeError: 'NoneType' object is not callable" in v.feedback
    assert "Line 3 in first" in v.feedback
    # The preamble is in scope for `test_code` problems too.
    p = Problem.model_validate({"id": "c", "title": "t", "prompt": "q", "verifier": {
        "kind": "function", "name": "sq", "preamble": "import math\n",
        "test_code": "def check(candidate):\n    assert candidate(3) == 9\n"}})
    assert verify(p, code("def sq(x):\n    return int(math.pow(x, 2))")).passed


def test_answer_kinds():
    num = Problem.model_validate({"id": "a", "title": "t", "prompt": "q", "verifier": {"kind": "answer", "answer": "0.5"}})
    assert verify(num, "so the answer is \\boxed{1/2}").passed
    assert verify(num, "Answer: 0.5000001").passed
    wrong = verify(num, "Answer: 0.6")
    assert not wrong.passed and "0.5" not in wrong.feedback
    rx = Problem.model_validate({"id": "r", "title": "t", "prompt": "q",
                                 "verifier": {"kind": "answer", "answer": "(?i)paris", "match": "regex"}})
    assert verify(rx, "Answer: PARIS").passed


def test_command_judge_gets_answer_and_its_output_is_feedback():
    p = load_problem(ROOT / "problems/command_palindrome.yaml")
    assert verify(p, "Answer: bbabab b").passed is False
    assert verify(p, "Answer: abbbbba").passed
    v = verify(p, "Answer: aaaaaaa")
    assert v.status == "judge_failed" and v.feedback == "Your word 'aaaaaaa' is not valid: it has only 0 b's."


def test_hostile_code_in_a_batch_does_not_break_the_others(stdio):
    good = code("n=int(input()); xs=sorted(set(map(int,input().split())))\nprint(xs[-2] if len(xs)>1 else -1)")
    bombs = [code("x = bytearray(4 * 1024**3)"), code("import os\nwhile True: os.fork()"), code("print('x' * 10**9)")]
    vs = verify_many(stdio.model_copy(update={"limits": stdio.limits.model_copy(update={"time_s": 1})}),
                     [(b, False) for b in bombs] + [(good, False)])
    assert [v.passed for v in vs] == [False, False, False, True]
    assert all(v.feedback for v in vs[:3])


# --------------------------------------------------------------------------------------------------
# function problems: judge and candidate in separate processes (verify/calls.py)


def test_one_call_hitting_a_limit_fails_only_its_own_test():
    p = Problem.model_validate({"id": "c", "title": "t", "prompt": "q", "limits": {"time_s": 1}, "verifier": {
        "kind": "function", "name": "f", "tests": [{"args": [i], "expected": i} for i in range(4)]}})
    v = verify(p, code("import os\ndef f(n):\n    if n == 1:\n        while True: pass\n"
                       "    if n == 2:\n        os._exit(3)\n    return n"))
    assert [t.status for t in v.tests] == ["passed", "time_limit", "runtime_error", "passed"]
    assert v.feedback.startswith("Runtime Error\nThe program exited")  # exit code 3 is only a failure


def test_a_reply_that_fails_to_load_fails_every_test_the_same_way():
    p = load_problem(ROOT / "problems/function_running_max.yaml")
    v = verify(p, code("def running_max(xs):\n    return xs\nraise ValueError('at import')"))
    assert {t.status for t in v.tests} == {"runtime_error"} and {t.error for t in v.tests} == {"ValueError: at import"}
    assert "Line 3 in <module> (Solution.py)" in v.feedback


def test_return_values_cross_as_plain_data_only():
    p = Problem.model_validate({"id": "c", "title": "t", "prompt": "q", "verifier": {"kind": "function", "name": "f",
        "test_code": "def check(candidate):\n    assert candidate(1) == (1, {2: {3.5}}, b'x', frozenset({None}))\n"
                     "    assert candidate(2) != candidate(1)\n    assert type(candidate(1)[0]) is int\n"}})
    good = "def f(n):\n    return (n, {2: {3.5}}, b'x', frozenset({None})) if n == 1 else float('nan')"
    assert verify(p, code(good)).passed
    v = verify(p, code("import fractions\ndef f(n):\n    return fractions.Fraction(n)"))
    assert v.status == "runtime_error" and "returned an object of type Fraction" in v.feedback


def test_module_state_carries_over_between_calls_but_solution_is_fresh():
    p = load_problem(ROOT / "problems/function_two_sum.yaml")
    reply = ("calls = []\nclass Solution:\n    def __init__(self):\n        self.used = False\n"
             "    def twoSum(self, nums, target):\n        assert not self.used\n        self.used = True\n"
             "        calls.append(1)\n        return [0, 1] if len(calls) == 1 else [len(calls), 0]")
    v = verify(p, code(reply))
    assert [t.status for t in v.tests] == ["passed", "wrong_answer", "wrong_answer", "wrong_answer"]


def test_wire_round_trip_and_hostile_data():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from sdpo_cli.verify import wire

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
    hashable = st.recursive(scalars, lambda c: st.tuples(c, c) | st.frozensets(c, max_size=3), max_leaves=8)
    values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.tuples(c, c) | st.sets(hashable, max_size=3)
                          | st.dictionaries(hashable, c, max_size=3), max_leaves=12)

    @settings(max_examples=200, deadline=None)
    @given(values)
    def round_trip(x):
        y = wire.decode(wire.loads(wire.dumps(wire.encode(x)), 1 << 20))
        assert y == x and type(y) is type(x)

    round_trip()
    assert repr(wire.decode(wire.loads(wire.dumps(wire.encode([float("nan"), float("-inf")])), 99))) == "[nan, -inf]"
    for bad in ('{"t": 1}', '{"x": []}', '{"d": [[[1], 2]]}', '{"s": [[1]]}', '[' * 5000 + ']' * 5000, "9" * 5000,
                '{"b": "zz"}', '{"t": [], "d": []}', "not json"):
        with pytest.raises(wire.WireError):
            wire.decode(wire.loads(bad, 1 << 20))
    with pytest.raises(wire.WireError, match="larger than"):
        wire.loads("[" + "1," * 100 + "1]", 100)

    class Sneaky(int):
        def __eq__(self, other):
            return True

    for value, what in [(Sneaky(1), "an object of type Sneaky"), ([[]] * 0 + [list()], None)]:
        if what:
            with pytest.raises(wire.WireError, match=what):
                wire.encode(value)
    loop: list = []
    loop.append(loop)
    with pytest.raises(wire.WireError, match="contains itself"):
        wire.encode(loop)


def test_a_broken_test_fails_its_case_and_never_passes():
    """Test code that raises (a helper the problem forgot) is that case's runtime error, not a crash."""
    p = Problem.model_validate({"id": "c", "title": "t", "prompt": "q", "verifier": {"kind": "function", "name": "sq",
        "test_code": "def check(candidate):\n    assert candidate(2) == 4\n    assert helper(candidate(3))\n"}})
    v = verify(p, code("def sq(x):\n    return x * x"))
    assert [t.status for t in v.tests] == ["passed", "runtime_error"]
    assert v.tests[1].error == "NameError: name 'helper' is not defined"
