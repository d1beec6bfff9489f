"""Split HumanEval-style `check(candidate)` test code into one test per assertion.

HumanEval's tests are a function `check(candidate)` whose body is mostly `assert candidate(..) == ..`.
Run as one unit, the first failing assertion hides all the others and the model learns only "failed".
When the body is a flat list of statements, each `assert` becomes its own test case, preceded by the
non-assert statements above it (imports, helper assignments). `assert A == B` is evaluated side by side
so the feedback can show Output (A) and Expected (B). Bodies with loops or branches cannot be split and
run whole as a single test (`split_check` returns []).
"""

from __future__ import annotations

import ast


def split_check(test_code: str, name: str) -> list[dict]:
    """One judge test per assertion of `check`, or [] when the test code cannot be split.

    Each item: {"mode": "assert_eq" | "assert", "setup": src, "left"/"right" or "stmt": src, "show": src}
    where "show" is the assertion's source, the Input shown in feedback.
    """
    try:
        tree = ast.parse(test_code)
    except SyntaxError:
        return []
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1:
        return []
    check = checks[0]
    if not check.args.args:
        return []
    arg = check.args.args[0].arg
    # Module-level statements other than check() (METADATA, imports, helpers) are kept as setup.
    module_setup = [ast.get_source_segment(test_code, n) for n in tree.body if n is not check]
    setup: list[str] = [f"{arg} = candidate"] + [s for s in module_setup if s]
    calls: list[dict] = []
    for stmt in check.body:
        src = ast.get_source_segment(test_code, stmt) or ""
        if isinstance(stmt, ast.Assert):
            if isinstance(stmt.test, ast.Constant) and stmt.test.value:
                continue  # `assert True, "..."`: always passes, not a test
            item = {"setup": "\n".join(setup), "show": src}
            t = stmt.test
            if isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq):
                item.update(mode="assert_eq", left=ast.get_source_segment(test_code, t.left),
                            right=ast.get_source_segment(test_code, t.comparators[0]))
            else:
                item.update(mode="assert", stmt=src)
            calls.append(item)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign, ast.Expr, ast.FunctionDef, ast.Pass)):
            if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):  # skip docstrings
                setup.append(src)
        else:
            return []  # loops, ifs, with-blocks: order-dependent, run the check whole
    return calls
