"""Verification: a model's reply -> `Verdict` (passed?, per-test outcomes, the feedback text).

    verdict = verify(problem, response_text, truncated=False)
    verdicts = verify_many(problem, [(text, truncated), ...])   # all tests of all replies in parallel

Layers, bottom up: `sandbox.py` runs untrusted programs and knows nothing about problems;
`wire.py` carries plain data across the sandbox wall; `runner.py` and `judge.py` are the two sides
of a `function` problem (the reply's process and the process that decides), which `calls.py` connects;
`checkers.py` turns a problem's tests into sandbox runs and outcomes; `feedback.py` (one level up)
renders a Verdict as the text the model reads. A discovery requires passing ALL tests, hidden ones
included; hidden tests only ever contribute counts to the feedback. No verdict is ever decided in a
process that runs the reply's code, and nothing the reply prints or exits with can make a test pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import SdpoError

# Test outcome statuses, in the order the feedback gives them priority (the paper's code environment).
PASSED = "passed"
RUNTIME_ERROR = "runtime_error"
TIME_LIMIT = "time_limit"
MEMORY_LIMIT = "memory_limit"
OUTPUT_LIMIT = "output_limit"
WRONG_ANSWER = "wrong_answer"

# Verdict statuses beyond the test ones.
FORMAT_ERROR = "format_error"  # no code block / no final answer found
TRUNCATED = "truncated"  # generation hit the length limit (and nothing gradable came out)
JUDGE_FAILED = "judge_failed"  # a `command` judge rejected the answer


class SandboxRefused(SdpoError):
    """This machine's sandbox cannot keep the problem's hidden tests from the reply (exit code 2)."""

    exit_code = 2


@dataclass
class TestOutcome:
    """One test case of one attempt. Text fields are already capped for display."""

    __test__ = False  # not a pytest class

    index: int
    status: str
    hidden: bool = False
    input: str = ""  # stdin, or the call / assertion shown to the model
    output: str = ""  # what the program printed or returned
    expected: str = ""
    error: str = ""  # "ExcType: message"
    location: str = ""  # "Line 3 in solve (Solution.py)" plus the source line, when known
    debug: str = ""  # stderr / prints of a function under test
    time_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASSED


@dataclass
class Verdict:
    """The result of verifying one reply.

    `status` is PASSED, the first failing test status by priority, FORMAT_ERROR, TRUNCATED or
    JUDGE_FAILED. `feedback` is the text the model reads ("" when passed).
    """

    passed: bool
    status: str
    n_passed: int
    n_total: int
    tests: list[TestOutcome] = field(default_factory=list)
    feedback: str = ""
    answer: str | None = None  # the extracted code / final answer that was graded
    truncated: bool = False
    time_s: float = 0.0
    message: str = ""  # verifier-level detail (judge output, format hint)

    def to_dict(self) -> dict:
        return asdict(self)


def verify(problem, response: str, *, truncated: bool = False) -> Verdict:
    """Verify one reply against `problem` (see module docstring)."""
    return verify_many(problem, [(response, truncated)])[0]


def verify_many(problem, replies: list[tuple[str, bool]]) -> list[Verdict]:
    """Verify several replies of one problem; their test runs share one worker pool (all cores).

    Raises:
        SandboxRefused: the problem has hidden tests that the sandbox here cannot hide (see
            `refusal`); check before a long run.
    """
    from .checkers import check_replies

    return check_replies(problem, replies)


def refusal(problem) -> str | None:
    """Why `problem` cannot be verified on this machine (one line), or None. Cheap: no sandbox runs."""
    from .checkers import hidden_tests_refusal

    return hidden_tests_refusal(problem)
