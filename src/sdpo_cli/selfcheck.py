"""`sdpo check`: is a problem file valid, and does its verifier tell right from wrong?

For each file: validate the schema (every mistake reported), run the `reference` (must pass), run an
obviously wrong but well-formed reply (must fail, with non-empty feedback). Returns plain dicts for
the CLI to render.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ProblemError
from .problem import load_problem, reference_response, wrong_response
from .verify import verify_many


def check_problem(path: Path) -> dict:
    """Check one problem file. `exit_code` is 0 (all good), 1 (verifier misbehaves) or 2 (invalid file)."""
    result = {"file": str(path), "ok": False, "errors": [], "summary": "", "exit_code": 2}
    try:
        problem = load_problem(path)
    except ProblemError as e:
        result["errors"] = e.lines
        return result
    result["id"] = problem.id
    ref = reference_response(problem)
    replies = ([(ref, False)] if ref is not None else []) + [(wrong_response(problem), False)]
    verdicts = verify_many(problem, replies)
    wrong = verdicts[-1]
    problems = []
    if ref is not None:
        good = verdicts[0]
        result["reference"] = {"passed": good.passed, "n_passed": good.n_passed, "n_total": good.n_total}
        if not good.passed:
            problems.append(f"reference FAILS ({good.status}, {good.n_passed}/{good.n_total}): {good.feedback[:300]}")
    if wrong.passed:
        problems.append("a deliberately wrong answer PASSES: the verifier accepts anything")
    elif not wrong.feedback.strip():
        problems.append("a wrong answer fails with EMPTY feedback: the model would learn nothing from it")
    result["wrong_feedback"] = wrong.feedback
    result["ok"] = not problems
    result["exit_code"] = 0 if not problems else 1
    if problems:
        result["summary"] = "; ".join(problems)
    else:
        ref_part = (f"reference passes {verdicts[0].n_passed}/{verdicts[0].n_total}" if ref is not None
                    else "no reference (pass check skipped)")
        result["summary"] = f"{problem.kind}, {ref_part}, wrong answer rejected"
    return result
