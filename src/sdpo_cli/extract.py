"""Pull the gradable part out of a model's whole reply. Pure string functions.

Code (stdio / function verifiers, as the official extract_code in verl/utils/reward_score/feedback/
code.py): the LONGEST fenced block, with or without a language tag. An unterminated last fence (a reply
cut off mid-block) does not count: that reply is a format error or, when generation hit the length
limit, a truncated attempt.

Final answers (answer verifier), rule `auto` tries in order:
  1. the last `\\boxed{...}` (balanced braces),
  2. the last line starting with `Answer:` / `Final answer:` (case-insensitive; markdown ** stripped),
  3. the last number in the reply.
`boxed`, `answer_line` and `last_number` use only that one rule.

Model text is hostile input to these functions too. The patterns are written to run in linear time
(no nested or adjacent quantifiers that can trade characters), `\\boxed{` is matched in one pass,
and every match runs under the `regex` package's timeout (`TIMEOUT_S`): a reply that still makes a
pattern slow raises `TimeoutError` instead of stalling the verifier.
"""

from __future__ import annotations

import math

import regex

TIMEOUT_S = 2.0  # per pattern and reply
_FENCE = regex.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```", regex.DOTALL | regex.MULTILINE)
_ANSWER_LINE = regex.compile(r"^[^\w\n]*(?:final\s+answer|answer)\s*(?:is\s*)?[:=]\s*([^\n]*)",
                             regex.IGNORECASE | regex.MULTILINE)
_NUMBER = regex.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_FRACTION = regex.compile(r"(-?\d+)\s*/\s*(\d+)")


def extract_code(response: str) -> str | None:
    """The longest fenced code block of `response`, or None when there is none."""
    blocks = [m.group(2) for m in _FENCE.finditer(response, timeout=TIMEOUT_S)]
    if not blocks:
        return None
    return max(blocks, key=len)


def _last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` whose braces close. One pass over the text: a box that
    does not close before `end` cannot be closed by an earlier one either, so earlier boxes are
    scanned only up to where the later one started."""
    end = len(text)
    start = text.rfind("\\boxed{")
    while start != -1:
        i, depth = start + len("\\boxed{"), 1
        j = i
        while j < end and depth:
            c = text[j]
            depth += 1 if c == "{" else -1 if c == "}" else 0
            j += 1
        if depth == 0:
            return text[i : j - 1].strip()
        end = start
        start = text.rfind("\\boxed{", 0, start)
    return None


def extract_answer(response: str, rule: str = "auto") -> str | None:
    """The final answer of `response` by `rule` (see module docstring), or None when none is found."""
    if rule in ("auto", "boxed"):
        boxed = _last_boxed(response)
        if boxed is not None or rule == "boxed":
            return boxed
    if rule in ("auto", "answer_line"):
        lines = _ANSWER_LINE.findall(response, timeout=TIMEOUT_S)
        if lines:
            ans = lines[-1].strip().strip("*").strip()
            return ans.rstrip(".").strip() or None
        if rule == "answer_line":
            return None
    if rule in ("auto", "last_number"):
        nums = _NUMBER.findall(response, timeout=TIMEOUT_S)
        return nums[-1].replace(",", "") if nums else None
    raise ValueError(f"unknown extract rule {rule!r}")


def parse_number(text: str, max_chars: int = 400) -> float | None:
    """A model's numeric answer ("1,234", "-3/4", "2.5e3") as a finite float, else None.

    Safe on hostile text: long strings are not numbers, and integers too large for a float (which
    `int(a) / int(b)` would raise on) are None."""
    s = text.strip().replace(",", "")
    if len(s) > max_chars:
        return None
    frac = _FRACTION.fullmatch(s, timeout=TIMEOUT_S)
    try:
        if frac:
            den = int(frac.group(2))
            return int(frac.group(1)) / den if den else None
        x = float(s)
    except (ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def format_hint(rule: str) -> str:
    """How the model should write its final answer under `rule` (used in format-error feedback)."""
    return {
        "auto": "End your response with a final line `Answer: <your answer>`.",
        "answer_line": "End your response with a final line `Answer: <your answer>`.",
        "boxed": "Put your final answer inside \\boxed{...}.",
        "last_number": "End your response with the final number.",
    }[rule]
