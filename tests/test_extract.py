"""Extraction rules: longest fenced block; boxed / Answer: line / last number."""

from sdpo_cli.extract import extract_answer, extract_code


def test_longest_block_wins_and_tag_is_optional():
    text = "intro\n```python\nx = 1\n```\nmore\n```\nprint('longer block')\n```\n"
    assert extract_code(text) == "print('longer block')\n"


def test_no_block_and_unterminated_block():
    assert extract_code("just prose, no code") is None
    assert extract_code("```python\nprint(1)\n") is None  # cut off mid-block


def test_boxed_with_nested_braces():
    assert extract_answer(r"so \boxed{\frac{1}{2}} done", "auto") == r"\frac{1}{2}"


def test_answer_line_takes_the_last_and_strips_markdown():
    text = "Answer: 3\nwait, recount\n**Answer:** 20."
    assert extract_answer(text, "auto") == "20"


def test_last_number_fallback_and_rules_are_exclusive():
    assert extract_answer("I think it is 1,234 apples", "auto") == "1234"
    assert extract_answer("I think it is 7", "boxed") is None
    assert extract_answer("Answer: seven", "last_number") is None
