"""Problem files: the schema of `problems/*.yaml`, loading and validation.

A problem file describes one task (the statement shown to the model) and how to verify an answer
(one of four verifier kinds). It holds no hyperparameters: those live in `config.py`.
The schema is documented, with a worked example per verifier kind, in problems/README.md.

    problem = load_problem("problems/two_sum.yaml")   # raises ProblemError listing every mistake

Validation is done by pydantic; its errors are rewritten as `file: field: what is wrong (fix)` lines so a
user sees all mistakes of a file at once.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ProblemError


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as `hiden: true` must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Per-test limits for code verifiers (the paper's code environment used 6 s + slack, 1 GiB)."""

    time_s: float = Field(6.0, gt=0, le=600, description="CPU seconds per test")
    memory_mb: int = Field(1024, ge=32, le=65536, description="address-space limit per test")
    output_kb: int = Field(1024, ge=1, le=1 << 20, description="cap on captured stdout/stderr per test")


class StdioTest(_Strict):
    input: str = ""
    output: str
    hidden: bool = False


class StdioVerifier(_Strict):
    """Programs read stdin and write stdout (LiveCodeBench's "stdin" tests)."""

    kind: Literal["stdio"]
    tests: list[StdioTest] = Field(min_length=1)
    float_tolerance: float | None = Field(None, ge=0, description="compare numeric tokens with this abs/rel tolerance")


class FunctionTest(_Strict):
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    expected: Any
    hidden: bool = False


class FunctionVerifier(_Strict):
    """A named function (or `class Solution` method) called with arguments, or assertion test code."""

    kind: Literal["function"]
    name: str = Field(description="function name, or method name of `class Solution`")
    tests: list[FunctionTest] = Field(default_factory=list)
    test_code: str | None = Field(None, description="HumanEval-style code defining check(candidate)")
    float_tolerance: float | None = Field(None, ge=0)
    preamble: str | None = Field(
        None, description="code run in the solution's namespace before it, e.g. the imports a judge provides")

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError(f"{v!r} is not a Python identifier")
        return v

    @model_validator(mode="after")
    def _some_tests(self) -> "FunctionVerifier":
        if not self.tests and not self.test_code:
            raise ValueError("needs `tests` (a list of {args, expected}) or `test_code` (defining check(candidate))")
        return self


ExtractRule = Literal["auto", "boxed", "answer_line", "last_number"]


class AnswerVerifier(_Strict):
    """A final answer extracted from the response and compared with `answer`."""

    kind: Literal["answer"]
    answer: str | int | float
    match: Literal["auto", "exact", "number", "regex"] = "auto"
    tolerance: float = Field(1e-6, ge=0, description="relative/absolute tolerance for match: number")
    extract: ExtractRule = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> "AnswerVerifier":
        if self.resolved_match == "number" and _parse_number(str(self.answer)) is None:
            raise ValueError(f"match is 'number' but answer {self.answer!r} is not a number")
        if self.match == "regex":
            try:
                re.compile(str(self.answer))
            except re.error as e:
                raise ValueError(f"answer is not a valid regex: {e}") from None
        return self

    @property
    def resolved_match(self) -> str:
        if self.match != "auto":
            return self.match
        return "number" if _parse_number(str(self.answer)) is not None else "exact"


class CommandVerifier(_Strict):
    """A user-supplied judge program: gets the answer on stdin and as a file path (last argument)."""

    kind: Literal["command"]
    command: list[str] = Field(min_length=1, description="argv; relative paths resolve against the problem file")
    send: Literal["code", "answer", "response"] = Field(
        "code", description="what the judge receives: the extracted code block, the extracted answer, or the whole response"
    )
    extract: ExtractRule = "auto"
    timeout_s: float = Field(30.0, gt=0, le=3600)


Verifier = Annotated[
    Union[StdioVerifier, FunctionVerifier, AnswerVerifier, CommandVerifier], Field(discriminator="kind")
]


class Problem(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    title: str
    prompt: str = Field(min_length=1)
    system: str | None = None
    reference: str | None = Field(None, description="a known-correct answer (code or final answer)")
    limits: Limits = Limits()
    verifier: Verifier
    meta: dict[str, Any] = Field(default_factory=dict, description="free-form: source, measured base pass rate, ...")
    # Set by load_problem, not by the file.
    path: Path | None = Field(None, exclude=True)

    @property
    def kind(self) -> str:
        return self.verifier.kind

    @property
    def n_tests(self) -> int:
        v = self.verifier
        if isinstance(v, (StdioVerifier,)):
            return len(v.tests)
        if isinstance(v, FunctionVerifier):
            if v.tests:
                return len(v.tests)
            from .verify.assertions import split_check  # local: only needed for test_code problems

            return len(split_check(v.test_code or "", v.name)) or 1  # unsplittable: one whole check()
        return 1

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def messages(self) -> list[dict[str, str]]:
        """The student's chat: optional system message, then the statement as the user message."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": self.prompt}]


def _parse_number(s: str) -> float | None:
    s = s.strip().replace(",", "")
    frac = re.fullmatch(r"(-?\d+)\s*/\s*(\d+)", s)
    if frac and int(frac.group(2)) != 0:
        return int(frac.group(1)) / int(frac.group(2))
    try:
        x = float(s)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------------------------------
# Loading

_HINTS = {
    "missing": "add it",
    "extra_forbidden": "remove it or check its spelling (see problems/README.md)",
    "union_tag_invalid": "use one of: stdio, function, answer, command",
    "union_tag_not_found": "add `kind:` (stdio, function, answer or command)",
    "string_type": "give a string (quote it in YAML)",
    "list_type": "give a YAML list",
    "too_short": "give at least one",
}


def _format_errors(path: Path, err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"]).replace(".[", "[")
        # Drop pydantic's discriminator tag from the path (verifier.stdio.tests -> verifier.tests).
        loc = re.sub(r"^verifier\.(stdio|function|answer|command)", "verifier", loc)
        msg = e["msg"].removeprefix("Value error, ")
        hint = _HINTS.get(e["type"])
        lines.append(f"{path}: {loc or '(top level)'}: {msg}" + (f" ({hint})" if hint else ""))
    return lines


def load_problem(path: str | Path) -> Problem:
    """Read and validate one problem file.

    Raises:
        ProblemError: the file is missing, is not YAML, or fails the schema; `.lines` lists every
            mistake as `file: field: what is wrong (fix)`.
    """
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: no such problem file (check the path; `sdpo problems DIR` lists problems)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(parse)"
        raise ProblemError(f"{path}: {where}: not valid YAML: {getattr(e, 'problem', e)} (fix the YAML syntax)") from None
    except UnicodeDecodeError:
        raise ProblemError(f"{path}: not a UTF-8 text file (save it as UTF-8)") from None
    if not isinstance(data, dict):
        raise ProblemError(f"{path}: (top level): expected a mapping with id, title, prompt, verifier (see problems/README.md)")
    try:
        problem = Problem.model_validate(data)
    except ValidationError as e:
        lines = _format_errors(path, e)
        raise ProblemError("\n".join(lines), lines=lines) from None
    return problem.model_copy(update={"path": path})


def find_problems(target: str | Path) -> list[Path]:
    """Problem files in a directory (sorted, *.yaml / *.yml, non-recursive), or the file itself."""
    target = Path(target)
    if target.is_dir():
        return sorted(p for p in target.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [target]


# --------------------------------------------------------------------------------------------------
# Self-check replies (`sdpo check`): the reference must pass and an obviously wrong reply must fail.


def _answer_reply(answer: str, rule: str) -> str:
    return {"boxed": f"\\boxed{{{answer}}}", "last_number": answer}.get(rule, f"Answer: {answer}")


def _code_reply(code: str) -> str:
    return code if "```" in code else f"```python\n{code.rstrip()}\n```"


def reference_response(problem: Problem) -> str | None:
    """The problem's `reference` written as a model reply (code fenced, answers in the extract format)."""
    if problem.reference is None:
        return None
    v = problem.verifier
    if isinstance(v, AnswerVerifier) or (isinstance(v, CommandVerifier) and v.send == "answer"):
        return _answer_reply(problem.reference.strip(), v.extract)
    if isinstance(v, CommandVerifier) and v.send == "response":
        return problem.reference
    return _code_reply(problem.reference)


def wrong_response(problem: Problem) -> str:
    """A reply that is clearly wrong but well-formed, so the verifier must reject it with feedback."""
    v = problem.verifier
    if isinstance(v, AnswerVerifier) or (isinstance(v, CommandVerifier) and v.send == "answer"):
        wrong = "-987654321.5" if isinstance(v, AnswerVerifier) and v.resolved_match == "number" else "sdpo-wrong-answer"
        return _answer_reply(wrong, v.extract)
    if isinstance(v, FunctionVerifier):
        return _code_reply(f"def {v.name}(*args, **kwargs):\n    return None")
    if isinstance(v, CommandVerifier) and v.send == "response":
        return "This reply is deliberately wrong."
    return _code_reply("print('sdpo: deliberately wrong output')")
