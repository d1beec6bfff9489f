"""LiveCodeBench code-generation release files -> `stdio` or `function` problems (the paper's benchmark).

Owns reading a `code_generation_lite` JSONL file the user already has (the LiveCodeBench release format: one row per
problem with question_title, question_content, platform, question_id, contest_id, contest_date,
starter_code, difficulty, public_test_cases, private_test_cases, metadata) and converting its rows.
Nothing is downloaded: the Hugging Face copy of the benchmark is the user's to fetch.

    result = load("test6.jsonl", since="2025-02-01", until="2025-04-30", difficulty=["hard"])

Conversion, following the paper's setup (Sec. 4: public tests give feedback, private tests judge):
  * "stdin" tests -> `stdio` verifier; "functional" tests -> `function` verifier on
    `metadata.func_name`, called on `class Solution` when the reply defines one (our harness does that,
    SDPO's own does not); a functional input is one JSON value per line, one line per argument, and
    the output is the JSON of the return value.
  * Public tests are visible (their failures are shown as feedback); private tests are `hidden: true`
    (only their pass counts reach the feedback), so solving means passing the private tests too.
  * Functional problems get the grader's import block as the verifier's `preamble`
    (importers.JUDGE_PREAMBLE), so `List` or `deque` need no import, as in the official grader. Stdin
    problems run as plain scripts without it (a departure: the grader prefixes them too).
  * The prompt is SDPO's CODE_PROMPT around the statement, plus the starter code for functional
    problems (with the typing import it uses written out) or LiveCodeBench's stdin instruction.
  * time limit 6 s per test, as the SDPO loader sets (`TIME_LIMIT = 6`).
`private_test_cases` is either plain JSON or base64(zlib(pickle(json string))); the pickle is read
with an unpickler that cannot import anything, so a hostile file cannot run code when imported.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import re
import zlib
from datetime import date
from pathlib import Path

from ..errors import ConfigError, ProblemError
from . import JUDGE_PREAMBLE, ImportResult, Imported, Skipped, parse_choices, parse_ids, safe_id

DIFFICULTIES = ("easy", "medium", "hard")
PLATFORMS = ("leetcode", "codeforces", "atcoder")
REQUIRED = ("question_title", "question_content", "platform", "question_id", "contest_date", "starter_code",
            "difficulty", "public_test_cases", "private_test_cases", "metadata")
TIME_LIMIT_S = 6.0

# SDPO's prompt for LiveCodeBench (lasgroup/SDPO data/utils/livecodebench.py, data/format/prompts.py CODE_PROMPT).
CODE_PROMPT = (
    "You are a coding expert. You will be given a coding problem, and you need to write a correct Python program "
    "that matches the specification and passes all tests. The time limit is 1 second. You may start by outlining "
    "your thought process. In the end, please provide the complete code in a code block enclosed with ```.\n\n"
    "{problem}"
)
# LiveCodeBench's own instruction for stdin problems (lcb_runner/prompts/code_generation.py).
STDIN_FORMAT = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test "
                "on the sample inputs).")
_TYPING = ("List", "Dict", "Tuple", "Set", "Optional", "Deque", "DefaultDict", "Counter", "Union", "Any")


class _NoImports(pickle.Unpickler):
    """Unpickles plain data only: any class or function reference is refused (no code can run)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


class Unsupported(Exception):
    """This row cannot be converted; the message is the skip reason."""


def decode_tests(field: str) -> list[dict]:
    """Test cases from a `public_test_cases` / `private_test_cases` value (JSON or base64+zlib+pickle)."""
    text = field.strip()
    if not text:
        return []
    if not text.startswith("["):
        try:
            raw = zlib.decompress(base64.b64decode(text, validate=True))
            text = _NoImports(io.BytesIO(raw)).load()
        except Exception:  # any garbage in an untrusted field only skips this row
            raise Unsupported("test cases not decodable (expected JSON or base64 of zlib of pickle)") from None
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise Unsupported("test cases not decodable (pickle is not a JSON string)")
    try:
        tests = json.loads(text)
    except json.JSONDecodeError:
        raise Unsupported("test cases not JSON") from None
    if not isinstance(tests, list) or not all(isinstance(t, dict) and "input" in t and "output" in t for t in tests):
        raise Unsupported("test cases lack input/output")
    return tests


def encode_private(tests: list[dict]) -> str:
    """The inverse of decode_tests for private tests: base64(zlib(pickle(json string))), LCB's encoding."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode("ascii")


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a release file (JSON lines, or one JSON array). Raises ProblemError naming the bad line."""
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: no such file (give a LiveCodeBench code_generation_lite release file, "
                           "e.g. test6.jsonl)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ProblemError(f"{path}: not a UTF-8 text file (give the .jsonl release file, not an archive)") from None
    rows: list[tuple[int, object]] = []
    if text.lstrip().startswith("["):
        try:
            rows = list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as e:
            raise ProblemError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ProblemError(f"{path}: line {n}: not valid JSON ({e.msg}); expected one problem per line") from None
    if not rows:
        raise ProblemError(f"{path}: empty file (expected one LiveCodeBench problem per line)")
    for n, row in rows:
        missing = [k for k in REQUIRED if not isinstance(row, dict) or k not in row]
        if missing:
            raise ProblemError(f"{path}: line {n}: missing {', '.join(missing)} (not a LiveCodeBench code-generation file)")
    return [row for _, row in rows]


def _parse_date(value: str | None, flag: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: not a date (use YYYY-MM-DD)") from None


def _row_date(row: dict) -> date | None:
    try:
        return date.fromisoformat(str(row["contest_date"])[:10])
    except ValueError:
        return None


def _starter_block(starter: str) -> str:
    """The starter code, preceded by the typing import it relies on (shown so the reply is self-contained)."""
    code = starter.rstrip()
    used = [t for t in _TYPING if re.search(rf"\b{t}\b", code)]
    if used and "import" not in code:
        code = f"from typing import {', '.join(used)}\n\n" + code
    return code


def _prompt(row: dict, functional: bool) -> str:
    problem = row["question_content"].strip()
    if functional and row["starter_code"].strip():
        problem += ("\n\nYour solution should have the following signature: ```python\n"
                    f"{_starter_block(row['starter_code'])}\n```")
    elif not functional:
        problem += "\n\n" + STDIN_FORMAT
    return CODE_PROMPT.format(problem=problem)


def _function_test(t: dict, hidden: bool) -> dict:
    try:
        args = [json.loads(line) for line in t["input"].splitlines() if line.strip()]
        expected = json.loads(t["output"])
    except (json.JSONDecodeError, AttributeError):
        raise Unsupported("functional test is not JSON") from None
    return {"args": args, "expected": expected} | ({"hidden": True} if hidden else {})


def convert(row: dict) -> Imported:
    """One release-file row -> a problem (id `lcb-<question_id>`). Raises Unsupported with the reason."""
    public = decode_tests(row["public_test_cases"])
    private = decode_tests(row["private_test_cases"])
    tests = [(t, False) for t in public] + [(t, True) for t in private]
    if not tests:
        raise Unsupported("no test cases")
    types = {t.get("testtype", "stdin") for t, _ in tests}
    if len(types) != 1 or not types <= {"stdin", "functional"}:
        raise Unsupported(f"unsupported test type {'/'.join(sorted(map(str, types)))}")
    functional = types == {"functional"}
    if functional:
        try:
            meta = json.loads(row["metadata"] or "{}")
        except json.JSONDecodeError:
            raise Unsupported("metadata is not JSON") from None
        name = meta.get("func_name") if isinstance(meta, dict) else None
        if not name or not str(name).isidentifier():
            raise Unsupported("functional problem without metadata.func_name")
        verifier = {"kind": "function", "name": name, "tests": [_function_test(t, h) for t, h in tests],
                    "preamble": JUDGE_PREAMBLE}
    else:
        verifier = {"kind": "stdio", "tests": [{"input": str(t["input"]), "output": str(t["output"])}
                                               | ({"hidden": True} if h else {}) for t, h in tests]}
    qid = str(row["question_id"])
    pid = "lcb-" + safe_id(qid)
    data = {
        "id": pid,
        "title": str(row["question_title"]),
        "prompt": _prompt(row, functional),
        "limits": {"time_s": TIME_LIMIT_S},
        "verifier": verifier,
        "meta": {
            "source": "livecodebench",
            "source_id": qid,
            "platform": str(row["platform"]),
            "contest_id": str(row.get("contest_id", "")),
            "contest_date": str(row["contest_date"]),
            "difficulty": str(row["difficulty"]).lower(),
            "public_tests": len(public),
            "private_tests": len(private),
        },
    }
    return Imported(pid, data)


def load(path: str | Path, ids: str | None = None, *, since: str | None = None, until: str | None = None,
         difficulty: list[str] | None = None, platform: list[str] | None = None,
         limit: int | None = None) -> ImportResult:
    """Convert the selected rows of a LiveCodeBench release file, in file order.

    Args:
        path: the JSONL release file (e.g. test6.jsonl of livecodebench/code_generation_lite).
        ids: `--ids`: question ids ("abc387_f,3701"); numeric ids also match ranges ("3600-3700").
        since, until: contest_date window, both inclusive, YYYY-MM-DD (the paper's LCBv6 split:
            since 2025-02-01, until 2025-04-30).
        difficulty: easy / medium / hard (any of them).
        platform: leetcode / codeforces / atcoder (any of them).
        limit: stop after this many converted problems.

    Raises:
        ProblemError: the file is missing, not JSON lines, or lacks LiveCodeBench fields.
        ConfigError: a bad date or an unknown --difficulty / --platform value.
    """
    sel = parse_ids(ids)
    lo, hi = _parse_date(since, "--since"), _parse_date(until, "--until")
    diffs = parse_choices(difficulty, DIFFICULTIES, "--difficulty")
    plats = parse_choices(platform, PLATFORMS, "--platform")
    result = ImportResult("livecodebench")
    for row in read_rows(path):
        qid = str(row["question_id"])
        if not sel.matches(int(qid) if qid.isdigit() else None, qid):
            continue
        d = _row_date(row)
        if (lo or hi) and (d is None or (lo and d < lo) or (hi and d > hi)):
            continue
        if diffs and str(row["difficulty"]).lower() not in diffs:
            continue
        if plats and str(row["platform"]).lower() not in plats:
            continue
        if limit is not None and len(result.problems) >= limit:
            break
        try:
            result.problems.append(convert(row))
        except Unsupported as e:
            result.skipped.append(Skipped(qid, str(e)))
    return result
