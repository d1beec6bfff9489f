"""Pull the gradable part out of a model's whole reply. Pure string functions.

Code (stdio / function verifiers, as the official extract_code in verl/utils/reward_score/feedback/code.py): the LONGEST fenced block, with or without a language
tag. An unterminated last fence (a reply cut off mid-block) does not count: that reply is a format
error or, when generation hit the length limit, a truncated attempt.

Final answers (answer verifier), rule `auto` tries in order:
  1. the last `\\boxed{...}` (balanced braces),
  2. the last line starting with `Answer:` / `Final answer:` (case-insensitive; markdown ** stripped),
  3. the last number in the reply.
`boxed`, `answer_line` and `last_number` use only that one rule.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
_ANSWER_LINE = re.compile(r"^\W*(?:final\s+answer|answer)\s*(?:is)?\s*[:=]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")


def extract_code(response: str) -> str | None:
    """The longest fenced code block of `response`, or None when there is none."""
    blocks = [m.group(2) for m in _FENCE.finditer(response)]
    if not blocks:
        return None
    return max(blocks, key=len)


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    while start != -1:
        i, depth = start + len("\\boxed{"), 1
        j = i
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            return text[i : j - 1].strip()
        start = text.rfind("\\boxed{", 0, start)
    return None


def extract_answer(response: str, rule: str = "auto") -> str | None:
    """The final answer of `response` by `rule` (see module docstring), or None when none is found."""
    if rule in ("auto", "boxed"):
        boxed = _last_boxed(response)
        if boxed is not None or rule == "boxed":
            return boxed
    if rule in ("auto", "answer_line"):
        lines = _ANSWER_LINE.findall(response)
        if lines:
            ans = lines[-1].strip().strip("*").strip()
            return ans.rstrip(".").strip() or None
        if rule == "answer_line":
            return None
    if rule in ("auto", "last_number"):
        nums = _NUMBER.findall(response)
        return nums[-1].replace(",", "") if nums else None
    raise ValueError(f"unknown extract rule {rule!r}")


def format_hint(rule: str) -> str:
    """How the model should write its final answer under `rule` (used in format-error feedback)."""
    return {
        "auto": "End your response with a final line `Answer: <your answer>`.",
        "answer_line": "End your response with a final line `Answer: <your answer>`.",
        "boxed": "Put your final answer inside \\boxed{...}.",
        "last_number": "End your response with the final number.",
    }[rule]
