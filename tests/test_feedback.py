"""Golden strings for the feedback, the SDPO teacher prompt and the multi-turn prompt."""

from sdpo_cli.feedback import FORMAT_MESSAGE, TRUNCATED_MESSAGE, feedback_text, multiturn_prompt, reprompt
from sdpo_cli.problem import Problem
from sdpo_cli.verify import TestOutcome, Verdict

STDIO = Problem.model_validate({"id": "p", "title": "t", "prompt": "q",
                                "verifier": {"kind": "stdio", "tests": [{"input": "", "output": ""}]}})
ANSWER = Problem.model_validate({"id": "p", "title": "t", "prompt": "q", "verifier": {"kind": "answer", "answer": 20}})


def verdict(*tests, status="wrong_answer"):
    tests = list(tests)
    return Verdict(passed=False, status=status, n_passed=sum(t.passed for t in tests), n_total=len(tests), tests=tests)


def test_wrong_answers_two_shortest_first():
    v = verdict(
        TestOutcome(0, "wrong_answer", input="1 2 3 4 5 6\n", output="9\n", expected="21\n"),
        TestOutcome(1, "passed", input="1\n", output="1\n", expected="1\n"),
        TestOutcome(2, "wrong_answer", input="2\n5 5\n", output="5\n", expected="10\n"),
        TestOutcome(3, "wrong_answer", input="7 7 7 7 7 7 7 7 7 7\n", output="0\n", expected="70\n"),
    )
    assert feedback_text(v, STDIO) == (
        "Test Case 3: Wrong Answer\n\nInput\n2\n5 5\n\nOutput\n5\n\nExpected\n10\n\n"
        "Test Case 1: Wrong Answer\n\nInput\n1 2 3 4 5 6\n\nOutput\n9\n\nExpected\n21"
    )


def test_runtime_error_beats_wrong_answer_and_shows_line_and_input():
    v = verdict(
        TestOutcome(0, "wrong_answer", input="1\n", output="0\n", expected="1\n"),
        TestOutcome(1, "runtime_error", input="3\n1 2 3\n", error="IndexError: list index out of range",
                    location="  print(xs[5])\nLine 2 in <module> (Solution.py)"),
        status="runtime_error",
    )
    assert feedback_text(v, STDIO) == (
        "Runtime Error\nIndexError: list index out of range\n  print(xs[5])\nLine 2 in <module> (Solution.py)"
        "\n\nLast Executed Input\n3\n1 2 3"
    )


def test_time_limit_shows_input_and_debug_output():
    v = verdict(TestOutcome(0, "time_limit", input="10\n"), status="time_limit")
    assert feedback_text(v, STDIO) == "Time Limit Exceeded\n\nLast Executed Input\n10"
    v = verdict(TestOutcome(0, "time_limit", input="10\n", debug="step 1\nstep 2\n"), status="time_limit")
    assert feedback_text(v, STDIO) == "Time Limit Exceeded\n\nLast Executed Input\n10\n\nDebug Output\nstep 1\nstep 2"


def test_hidden_failures_are_not_mentioned_when_a_visible_test_fails():
    """As the official feedback: only the failing tests it shows; hidden ones add nothing."""
    v = verdict(
        TestOutcome(0, "wrong_answer", input="1\n", output="2\n", expected="1\n"),
        TestOutcome(1, "wrong_answer", hidden=True, input="SECRET-INPUT", output="x", expected="SECRET-EXPECTED"),
    )
    assert feedback_text(v, STDIO) == "Test Case 1: Wrong Answer\n\nInput\n1\n\nOutput\n2\n\nExpected\n1"


def test_hidden_tests_give_counts_only():
    v = verdict(
        TestOutcome(0, "passed", input="1\n", output="1\n", expected="1\n"),
        TestOutcome(1, "wrong_answer", hidden=True, input="SECRET-INPUT", output="x", expected="SECRET-EXPECTED"),
        TestOutcome(2, "passed", hidden=True, input="SECRET2"),
    )
    text = feedback_text(v, STDIO)
    assert text == "Hidden Tests: passed 1 of 2 (wrong answer: 1). Hidden test inputs are not shown."
    assert "SECRET" not in text


def test_format_and_truncated():
    fmt = Verdict(passed=False, status="format_error", n_passed=0, n_total=1)
    trunc = Verdict(passed=False, status="truncated", n_passed=0, n_total=1, truncated=True)
    assert feedback_text(fmt, STDIO) == FORMAT_MESSAGE == "Incorrect Format: Put your code inside a ```python ... ``` block."
    assert feedback_text(trunc, STDIO) == TRUNCATED_MESSAGE
    assert feedback_text(fmt, ANSWER) == "Incorrect Format: End your response with a final line `Answer: <your answer>`."


def test_answer_feedback_never_reveals_the_answer():
    v = Verdict(passed=False, status="wrong_answer", n_passed=0, n_total=1, answer="19",
                tests=[TestOutcome(0, "wrong_answer", hidden=True, output="19")])
    text = feedback_text(v, ANSWER)
    assert text == "Wrong Answer\n\nYour final answer was: 19\nThat answer is not correct."
    assert "20" not in text


def test_caps_as_the_official_format_test_feedback():
    long_in = "\n".join(str(i) * (300 if i == 0 else 1) for i in range(50))
    v = verdict(TestOutcome(0, "wrong_answer", input=long_in, output="y" * 1000, expected="z" * 1000,
                            debug="\n".join(f"line {i}" for i in range(15))))
    text = feedback_text(v, STDIO)
    # Input: the first 8 lines, each cut at 250 characters ("..." appended), then how many are left.
    assert "Input\n" + "0" * 250 + "...\n1\n2\n3\n4\n5\n6\n7\n... (42 more lines)\n\nOutput" in text
    assert "Output\n" + "y" * 250 + "...\n\nExpected\n" + "z" * 250 + "...\n" in text
    # Debug output: the FIRST 10 lines, then how many are left.
    assert text.endswith("Debug Output\n" + "\n".join(f"line {i}" for i in range(10)) + "\n... (5 more lines)")


def test_long_debug_lines_and_the_hard_total_cut():
    v = verdict(*[TestOutcome(i, "wrong_answer", input="x" * 200, output="y" * 249, expected="z",
                              debug="\n".join("d" * 500 for _ in range(12))) for i in range(2)])
    text = feedback_text(v, STDIO)
    assert "d" * 300 + "...\n" in text and "d" * 301 not in text
    assert len(text) == 2000 and not text.endswith("...")  # cut hard at 2000, no ellipsis


def test_passed_gives_empty_feedback():
    assert feedback_text(Verdict(passed=True, status="passed", n_passed=1, n_total=1), STDIO) == ""


def test_reprompt_golden_feedback_and_demo():
    assert reprompt("Q?", feedback="Time Limit Exceeded") == (
        "Q?\nThe following is feedback from your unsuccessful earlier attempt:\n\nTime Limit Exceeded"
        "\n\nCorrectly solve the original question."
    )
    # A demonstration suppresses the feedback (environment_feedback_only_without_solution).
    assert reprompt("Q?", feedback="ignored", solution="```python\nprint(1)\n```") == (
        "Q?\nCorrect solution:\n\n```python\nprint(1)\n```\n\nCorrectly solve the original question."
    )


def test_multiturn_prompt_golden():
    assert multiturn_prompt("Q?", []) == "Q?"
    assert multiturn_prompt("Q?", ["fb one", "fb two"]) == (
        "Q?\n\nThe following is feedback from your unsuccessful earlier attempt:\n\nfb one\n\nfb two"
        "\n\nCorrectly solve the original question."
    )
