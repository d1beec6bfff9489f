"""Problem files: the schema of `problems/*.yaml`, loading and validation.

A problem file describes one task (the statement shown to the model) and how to verify an answer
(one of four verifier kinds). It holds no hyperparameters: those live in `config.py`.
The schema is documented, with a worked example per verifier kind, in problems/README.md.

    problem = load_problem("problems/two_sum.yaml")   # raises ProblemError listing every mistake

Reading is strict, so a bad file fails here, before any model loads, and never later in the verifier:
at most 8 MB (SDPO_MAX_PROBLEM_MB raises it), a regular file (a FIFO is refused, not waited on), UTF-8,
and YAML limited to JSON-like data by `yamldata.load` (no duplicate keys, dates or custom tags; at
most 64 levels deep; bounded alias expansion). Each such mistake is one `file: [line N:] what (fix)` line.
Validation is then done by pydantic; its errors are rewritten as `file: field: what is wrong (fix)`
lines so a user sees all mistakes of a file at once (the first 10). `load_problem` raises only
ProblemError (and ConfigError for a bad SDPO_MAX_PROBLEM_MB), never RecursionError, OSError and the like.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import yamldata
from .errors import ConfigError, ProblemError
from .yamldata import show

DEFAULT_MAX_MB = 8
MAX_MB_ENV = "SDPO_MAX_PROBLEM_MB"


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as `hiden: true` must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Per-test limits for code verifiers (the paper's code environment used 6 s + slack, 1 GiB)."""

    time_s: float = Field(6.0, gt=0, le=600, allow_inf_nan=False, description="CPU seconds per test")
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
    float_tolerance: float | None = Field(None, ge=0, allow_inf_nan=False,
                                          description="compare numeric tokens with this abs/rel tolerance")


class FunctionTest(_Strict):
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    expected: Any
    hidden: bool = False

    @field_validator("args", "kwargs", "expected")
    @classmethod
    def _json_data(cls, v: Any) -> Any:
        # The verifier sends the call to the sandbox and reads the result back as JSON: refuse here,
        # at load time, what it could not send (a YAML file cannot hold such values; Python callers can).
        try:
            json.dumps(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"not JSON data ({e})") from None
        return v


class FunctionVerifier(_Strict):
    """A named function (or `class Solution` method) called with arguments, or assertion test code."""

    kind: Literal["function"]
    name: str = Field(description="function name, or method name of `class Solution`")
    tests: list[FunctionTest] = Field(default_factory=list)
    test_code: str | None = Field(None, description="HumanEval-style code defining check(candidate)")
    float_tolerance: float | None = Field(None, ge=0, allow_inf_nan=False)
    preamble: str | None = Field(
        None, description="code run in the solution's namespace before it, e.g. the imports a judge provides")

    @field_validator("test_code", "preamble")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        # Both run in the sandbox with every attempt: code that does not even parse fails every
        # attempt for a reason the model cannot fix, so it is the file's mistake, reported now.
        if v is not None:
            _check_python(v)
        return v

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError(f"{show(v)} is not a Python identifier")
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
    tolerance: float = Field(1e-6, ge=0, allow_inf_nan=False, description="relative/absolute tolerance for match: number")
    extract: ExtractRule = "auto"

    @field_validator("answer", mode="before")
    @classmethod
    def _scalar_answer(cls, v: Any) -> Any:
        # Checked before pydantic's str|int|float union, which would report three errors for one
        # value, and turn `answer: yes` (a YAML boolean) into 1.
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"give the answer as text or a number, not {show(v)} (quote it in YAML)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "AnswerVerifier":
        if self.resolved_match == "number" and _parse_number(str(self.answer)) is None:
            raise ValueError(f"match is 'number' but answer {show(self.answer)} is not a number")
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
    timeout_s: float = Field(30.0, gt=0, le=3600, allow_inf_nan=False)

    @field_validator("command")
    @classmethod
    def _no_nul(cls, v: list[str]) -> list[str]:
        if any("\0" in arg for arg in v):
            raise ValueError("an argument holds a NUL character, which no program argument can (remove it)")
        return v


Verifier = Annotated[
    Union[StdioVerifier, FunctionVerifier, AnswerVerifier, CommandVerifier], Field(discriminator="kind")
]


class Problem(_Strict):
    # The id names run directories (`<time>_<id>_<method>_s<seed>`), so it must fit in a file name.
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    title: str
    prompt: str = Field(min_length=1)
    system: str | None = None
    reference: str | None = Field(None, description="a known-correct answer (code or final answer)")
    limits: Limits = Limits()
    verifier: Verifier
    meta: dict[str, Any] = Field(default_factory=dict, description="free-form: source, measured base pass rate, ...")
    # Set by load_problem, not by the file.
    path: Path | None = Field(None, exclude=True)

    @field_validator("meta")
    @classmethod
    def _known_meta(cls, v: dict[str, Any]) -> dict[str, Any]:
        rate = v.get("base_pass_rate")  # shown by `sdpo problems` as a percentage
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1):
            raise ValueError(f"base_pass_rate must be a number from 0 to 1, not {show(rate)}")
        return v

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


def _check_python(src: str) -> None:
    try:
        compile(src, "<problem file>", "exec", ast.PyCF_ONLY_AST)
    except SyntaxError as e:
        raise ValueError(f"not valid Python ({f'line {e.lineno}: ' if e.lineno else ''}{e.msg})") from None
    except (ValueError, RecursionError, MemoryError) as e:  # NUL bytes; absurd nesting
        raise ValueError(f"not valid Python ({type(e).__name__}: {show(str(e), 80)})") from None


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


MAX_ERROR_LINES = 10
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _loc_part(p: Any) -> str:
    if isinstance(p, int):
        return f"[{p}]"
    # A key from the file that is not a plain name (a newline, an escape sequence, a very long key)
    # is shown quoted and cut, so one mistake stays one line.
    return str(p) if _PLAIN_KEY.fullmatch(str(p)) and len(str(p)) <= 40 else show(str(p))


def _format_errors(path: Path, err: ValidationError) -> list[str]:
    lines = []
    errors = err.errors()
    for e in errors[:MAX_ERROR_LINES]:
        loc = ".".join(_loc_part(p) for p in e["loc"]).replace(".[", "[")
        # Drop pydantic's discriminator tag from the path (verifier.stdio.tests -> verifier.tests).
        loc = re.sub(r"^verifier\.(stdio|function|answer|command)", "verifier", loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "union_tag_invalid":  # pydantic's message repeats the file's value verbatim
            msg = f"unknown kind {show(e.get('ctx', {}).get('tag'))}"
        hint = _HINTS.get(e["type"])
        lines.append(f"{path}: {loc or '(top level)'}: {msg}" + (f" ({hint})" if hint else ""))
    if len(errors) > MAX_ERROR_LINES:
        lines.append(f"{path}: ... and {len(errors) - MAX_ERROR_LINES} more mistakes (fix these first)")
    return lines


def max_problem_bytes() -> int:
    """The size cap for one problem file: SDPO_MAX_PROBLEM_MB megabytes (MiB), default 8."""
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        mb = math.nan
    if not (math.isfinite(mb) and mb > 0):
        raise ConfigError(f"{MAX_MB_ENV}={show(raw)}: not a positive number of megabytes (e.g. {MAX_MB_ENV}=64)")
    return max(1, int(mb * (1 << 20)))


def _read_text(path: Path, max_bytes: int) -> str:
    """The file's text, read without blocking (a FIFO or device is refused, not waited on) and capped."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ProblemError(f"{path}: no such problem file (check the path; `sdpo problems DIR` lists problems)") from None
    except PermissionError:
        raise ProblemError(f"{path}: permission denied (make the problem file readable)") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise ProblemError(f"{path}: cannot open ({getattr(e, 'strerror', None) or e}; check the path)") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ProblemError(f"{path}: a directory, not a problem file (give a .yaml file; "
                               "`sdpo problems DIR` lists a folder)")
        if not stat.S_ISREG(mode):
            raise ProblemError(f"{path}: not a regular file (a pipe, socket or device); give a .yaml problem file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        try:
            data = f.read(max_bytes + 1)  # one byte past the cap tells, without reading a huge file
        except OSError as e:
            raise ProblemError(f"{path}: cannot read ({e.strerror or e}; check the file)") from None
    if len(data) > max_bytes:
        limit = f"{max_bytes / (1 << 20):g} MB" if max_bytes >= 1 << 20 else f"{max_bytes:,}-byte"
        raise ProblemError(f"{path}: larger than the {limit} limit for problem files "
                           f"(shrink the tests, or raise the limit with {MAX_MB_ENV}=N)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ProblemError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}; "
                           "save the file as UTF-8)") from None
    return text.removeprefix("\ufeff")  # a UTF-8 byte order mark is harmless


def load_problem(path: str | Path, *, max_bytes: int | None = None) -> Problem:
    """Read and validate one problem file.

    The file is read as strict YAML (`yamldata.load`: plain JSON-like data, no duplicate keys, at most
    64 levels deep) and capped at `max_bytes` (default: `max_problem_bytes()`, 8 MB).

    Raises:
        ProblemError: the file is missing, unreadable, too big, not strict YAML, or fails the schema;
            `.lines` lists every schema mistake as `file: field: what is wrong (fix)`, any other
            problem as one `file: line N: what is wrong (fix)` line.
        ConfigError: SDPO_MAX_PROBLEM_MB is set to something that is not a positive number.
    """
    path = Path(path)
    limit = max_problem_bytes() if max_bytes is None else max_bytes
    try:
        text = _read_text(path, limit)
        if not text.strip():
            raise ProblemError(f"{path}: empty file (a problem file is a mapping with id, title, prompt, verifier; "
                               "see problems/README.md)")
        try:
            data = yamldata.load(text)
        except yamldata.YamlDataError as e:
            raise ProblemError(f"{path}: " + (f"line {e.line}: " if e.line else "") + e.reason) from None
        if not isinstance(data, dict):
            what = "nothing but comments" if data is None else f"{type(data).__name__} {show(data)}"
            raise ProblemError(f"{path}: (top level): expected a mapping with id, title, prompt, verifier, "
                               f"found {what} (see problems/README.md)")
        if not data.keys() & {"id", "title", "prompt", "verifier"}:  # not a problem file at all: one line
            found = f"keys {show(list(data), 60)}" if data else "an empty mapping"
            raise ProblemError(f"{path}: (top level): expected a mapping with id, title, prompt, verifier, "
                               f"found {found} (see problems/README.md)")
        try:
            problem = Problem.model_validate(data)
        except ValidationError as e:
            lines = _format_errors(path, e)
            raise ProblemError("\n".join(lines), lines=lines) from None
    except (MemoryError, RecursionError) as e:
        raise ProblemError(f"{path}: too large or too deeply nested to load ({type(e).__name__}); "
                           "make the file smaller") from None
    return problem.model_copy(update={"path": path})


def find_problems(target: str | Path) -> list[Path]:
    """Problem files in a directory (sorted, *.yaml / *.yml, non-recursive), or the file itself.

    Every entry with a problem-file suffix is listed except folders, so a dangling link or a FIFO is
    reported by `load_problem` instead of silently left out.
    """
    target = Path(target)
    if target.is_dir():
        try:
            return sorted(p for p in target.iterdir() if p.suffix in (".yaml", ".yml") and not p.is_dir())
        except OSError as e:
            raise ProblemError(f"{target}: cannot list the folder ({e.strerror or e})") from None
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
