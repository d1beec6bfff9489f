"""The text the model reads: verifier feedback, the SDPO teacher prompt, the multi-turn prompt.

Pure string functions, pinned by golden-string tests (tests/test_feedback.py).

Feedback follows the official code environment's `format_test_feedback` (lasgroup/SDPO,
verl/utils/reward_score/feedback/code.py), LeetCode style:
  * a runtime error (the first one): exception, offending line, last executed input;
  * else a time limit exceeded (the first one), with its input and the program's debug output;
  * else (no gradable code) the format message, or "Truncated Attempt" when generation hit the limit;
  * else up to two wrong answers, shortest (input + output) first, as Input / Output / Expected and the
    program's debug output.
Caps, as there: an input shows its first 8 lines, each cut at 250 characters ("..." appended), then
"... (N more lines)"; output and expected 250 characters; debug output its FIRST 10 lines of at most
300 characters, then "... (N more lines)"; the whole text is cut hard at 2000 characters.

Departures, and why:
  * Memory and output limits are reported like runtime errors, under their own titles (the official
    sandbox turns both into errors).
  * The debug output of a crashed run is not shown: ours is the program's stderr, which holds the
    traceback the Runtime Error block already shows.
  * Hidden tests: their inputs, outputs and expected values never appear (like the official feedback,
    which shows only the tests it ran). But when every visible test passes and only hidden ones fail,
    the official rules would give EMPTY feedback, and an empty feedback means no teacher signal for the
    attempt (the official `_collect_feedback` masks it). Only then we add one counts-only line, "Hidden
    Tests: passed X of Y (...). Hidden test inputs are not shown.", so the teacher learns the attempt
    is wrong without learning anything about the hidden tests.
"""

from __future__ import annotations

from .verify import (
    FORMAT_ERROR,
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    RUNTIME_ERROR,
    TIME_LIMIT,
    TRUNCATED,
    WRONG_ANSWER,
    TestOutcome,
    Verdict,
)

MAX_CHARS = 2000  # the whole feedback, cut hard (no ellipsis)
MAX_INPUT_CHARS, MAX_INPUT_LINES = 250, 8  # per input line; lines shown
MAX_VALUE_CHARS = 250  # output, expected, the error message
MAX_DEBUG_LINES, MAX_DEBUG_LINE_CHARS = 10, 300

FORMAT_MESSAGE = "Incorrect Format: Put your code inside a ```python ... ``` block."
TRUNCATED_MESSAGE = (
    "Truncated Attempt: Your previous response was too long and truncated because it reached the maximum "
    "response length. Try again with a shorter response."
)

# SDPO teacher prompt: the values the official code loads (verl/trainer/config/actor/actor.yaml
# reprompt_template / solution_template / feedback_template; YAML `|-` blocks, which win over the
# dataclass defaults in verl/workers/config/actor.py).
REPROMPT_TEMPLATE = "{prompt}{solution}{feedback}\n\nCorrectly solve the original question."
SOLUTION_TEMPLATE = "\nCorrect solution:\n\n{successful_previous_attempt}"
FEEDBACK_TEMPLATE = "\nThe following is feedback from your unsuccessful earlier attempt:\n\n{feedback_raw}"


def _cut(text: str, chars: int) -> str:
    """The official `_truncate_str`: the first `chars` characters, then "..." when anything was cut."""
    return text if len(text) <= chars else text[:chars] + "..."


def _input(text: str) -> str:
    """The first MAX_INPUT_LINES lines, each cut at MAX_INPUT_CHARS, then "... (N more lines)"."""
    lines = text.splitlines()
    shown = [_cut(ln, MAX_INPUT_CHARS) for ln in lines[:MAX_INPUT_LINES]]
    if len(lines) > MAX_INPUT_LINES:
        shown.append(f"... ({len(lines) - MAX_INPUT_LINES} more lines)")
    return "\n".join(shown)


def _debug(text: str) -> str:
    """"Debug Output" and the FIRST MAX_DEBUG_LINES lines (each cut), or "" when there is none."""
    lines = text.strip().split("\n")
    if not text.strip():
        return ""
    shown = [_cut(ln, MAX_DEBUG_LINE_CHARS) for ln in lines[:MAX_DEBUG_LINES]]
    if len(lines) > MAX_DEBUG_LINES:
        shown.append(f"... ({len(lines) - MAX_DEBUG_LINES} more lines)")
    return "Debug Output\n" + "\n".join(shown)


def _error_block(o: TestOutcome) -> str:
    title = {
        RUNTIME_ERROR: "Runtime Error",
        MEMORY_LIMIT: "Memory Limit Exceeded",
        OUTPUT_LIMIT: "Output Limit Exceeded",
        TIME_LIMIT: "Time Limit Exceeded",
    }[o.status]
    parts = [title]
    if o.status != TIME_LIMIT:
        detail = "\n".join(x for x in (_cut(o.error, MAX_VALUE_CHARS), o.location) if x)
        if detail:
            parts[0] += "\n" + detail
    parts.append("Last Executed Input\n" + _input(o.input))
    if o.status == TIME_LIMIT and _debug(o.debug):
        parts.append(_debug(o.debug))
    return "\n\n".join(parts)


def _wrong_block(o: TestOutcome) -> str:
    parts = [f"Test Case {o.index + 1}: Wrong Answer", "Input\n" + _input(o.input)]
    if o.output or o.expected:
        parts += ["Output\n" + _cut(o.output.rstrip("\n"), MAX_VALUE_CHARS),
                  "Expected\n" + _cut(o.expected.rstrip("\n"), MAX_VALUE_CHARS)]
    if _debug(o.debug):
        parts.append(_debug(o.debug))
    return "\n\n".join(parts)


def _hidden_summary(v: Verdict) -> str:
    hidden = [o for o in v.tests if o.hidden]
    failed = [o for o in hidden if not o.passed]
    if not failed:
        return ""
    kinds: dict[str, int] = {}
    for o in failed:
        kinds[o.status.replace("_", " ")] = kinds.get(o.status.replace("_", " "), 0) + 1
    how = ", ".join(f"{k}: {n}" for k, n in kinds.items())
    return (f"Hidden Tests: passed {len(hidden) - len(failed)} of {len(hidden)} ({how}). "
            "Hidden test inputs are not shown.")


def feedback_text(verdict: Verdict, problem) -> str:
    """The feedback the model reads for `verdict` ("" when it passed). See the module docstring."""
    if verdict.passed:
        return ""
    kind = problem.kind
    if verdict.status in (FORMAT_ERROR, TRUNCATED):
        if verdict.status == TRUNCATED:
            return TRUNCATED_MESSAGE
        if kind == "answer" or (kind == "command" and problem.verifier.send == "answer"):
            from .extract import format_hint

            return "Incorrect Format: " + format_hint(problem.verifier.extract)
        return FORMAT_MESSAGE
    if kind == "command":
        return (verdict.message or "The judge rejected the answer (it printed nothing).")[:MAX_CHARS]
    if kind == "answer":
        # Never reveal the expected answer (the official math feedback states correctness only).
        return f"Wrong Answer\n\nYour final answer was: {verdict.answer}\nThat answer is not correct."[:MAX_CHARS]

    visible = [o for o in verdict.tests if not o.hidden and not o.passed]
    blocks: list[str] = []
    for status in (RUNTIME_ERROR, MEMORY_LIMIT, OUTPUT_LIMIT, TIME_LIMIT):
        first = next((o for o in visible if o.status == status), None)
        if first:
            blocks = [_error_block(first)]
            break
    if not blocks:
        wrong = [o for o in visible if o.status == WRONG_ANSWER]
        wrong.sort(key=lambda o: (len(o.input) + len(o.output), o.index))  # shortest first, as the official
        blocks = [_wrong_block(o) for o in wrong[:2]]
    if not blocks:  # only hidden tests failed: counts only (see "Departures" above)
        blocks = [_hidden_summary(verdict)]
    return "\n\n".join(blocks)[:MAX_CHARS]


def reprompt(prompt: str, *, feedback: str | None = None, solution: str | None = None) -> str:
    """The SDPO self-teacher's user message (the official reprompt: `ray_trainer.py` builds it from the
    three templates above).

    A successful attempt of the same batch (`solution`) is used as a demonstration, and feedback is
    then dropped (environment_feedback_only_without_solution). The student's own attempt never goes in.
    """
    sol = SOLUTION_TEMPLATE.format(successful_previous_attempt=solution) if solution else ""
    fb = FEEDBACK_TEMPLATE.format(feedback_raw=feedback) if feedback and not solution else ""
    return REPROMPT_TEMPLATE.format(prompt=prompt, solution=sol, feedback=fb)


MULTITURN_HEADER = "The following is feedback from your unsuccessful earlier attempt:"


def multiturn_prompt(question: str, feedbacks: list[str]) -> str:
    """The multi-turn baseline's `feedback_only` user message (the official baseline_multiturn/multiturn.py):
    all past feedback, oldest first, joined by blank lines under ONE header; past attempts are not kept."""
    if not feedbacks:
        return question
    return f"{question}\n\n{MULTITURN_HEADER}\n\n" + "\n\n".join(feedbacks) + "\n\nCorrectly solve the original question."



# --------------------------------------------------------------------------------------------------
# Multi-turn baseline: the `attempt_and_feedback` chat and the FIFO token window

MULTITURN_SUFFIX = "\n\nCorrectly solve the original question."


def multiturn_prompt_attempt_and_feedback(question: str, attempts: list[str], feedbacks: list[str]) -> list[dict[str, str]]:
    """The multi-turn baseline's `attempt_and_feedback` chat (the paper's ablated variant, Fig. 19 right).

    A real conversation: the question, then for each past turn the assistant's attempt and a user
    message holding that attempt's feedback under the header, ending with the same instruction as
    `feedback_only`. As in the official baseline, attempts and feedback stay paired (the window
    drops both together).

    Args:
        question: the problem statement (the student's user message).
        attempts: past responses, oldest first.
        feedbacks: their feedback strings, same length as `attempts`.

    Returns:
        chat messages (no system message; callers prepend the problem's own).
    """
    if len(attempts) != len(feedbacks):
        raise ValueError(f"need one feedback per attempt, got {len(attempts)} attempts and {len(feedbacks)} feedbacks")
    messages = [{"role": "user", "content": question}]
    for attempt, fb in zip(attempts, feedbacks):
        messages.append({"role": "assistant", "content": attempt})
        messages.append({"role": "user", "content": f"{MULTITURN_HEADER}\n\n{fb}{MULTITURN_SUFFIX}"})
    return messages


def trim_window(n_items: int, prompt_tokens, limit: int | None, start: int = 0) -> int:
    """First history item to keep so the prompt fits `limit` tokens, dropping the oldest first (FIFO).

    The official baseline pops the oldest feedback (and its attempt) while the templated prompt is
    longer than the window; because dropped items never come back, the window only moves forward,
    so the search starts at the previous `start`. If even the bare question is too long, every item
    is dropped (the baseline still asks the question).

    Args:
        n_items: history length (past turns).
        prompt_tokens: `prompt_tokens(lo)` = token count of the prompt that keeps items[lo:].
        limit: window in tokens; None = unlimited.
        start: the window's current first item (0 on the first turn).

    Returns:
        the new first item, in [start, n_items].
    """
    if limit is None:
        return start
    while start < n_items and prompt_tokens(start) > limit:
        start += 1
    return start
