"""Problem files: schema validation with file/field errors, and the shipped examples load."""

from pathlib import Path

import pytest

from sdpo_cli.errors import ProblemError
from sdpo_cli.problem import find_problems, load_problem

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_problems_load():
    paths = find_problems(ROOT / "problems")
    kinds = {load_problem(p).kind for p in paths}
    assert kinds >= {"stdio", "function", "answer", "command"}


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ProblemError, match="nope.yaml: no such problem file"):
        load_problem(tmp_path / "nope.yaml")


def test_malformed_yaml_names_the_line(tmp_path):
    p = write(tmp_path, "id: x\nprompt: [unclosed\n")
    with pytest.raises(ProblemError, match=r"p.yaml: line \d+: not valid YAML"):
        load_problem(p)


def test_unknown_verifier_kind(tmp_path):
    p = write(tmp_path, "id: x\ntitle: t\nprompt: q\nverifier: {kind: magic}\n")
    with pytest.raises(ProblemError) as e:
        load_problem(p)
    assert "verifier" in str(e.value) and "stdio, function, answer, command" in str(e.value)


def test_every_error_of_a_file_is_reported_at_once(tmp_path):
    p = write(tmp_path, "id: x\nprompt: q\nhiden: true\nverifier: {kind: stdio, tests: [{input: '1'}]}\n")
    with pytest.raises(ProblemError) as e:
        load_problem(p)
    lines = e.value.lines
    assert any(": title: Field required" in ln for ln in lines)
    assert any(": hiden: Extra inputs are not permitted" in ln for ln in lines)
    assert any(": verifier.tests[0].output: Field required" in ln for ln in lines)
    assert all(ln.startswith(str(p)) for ln in lines)


def test_mistyped_field(tmp_path):
    p = write(tmp_path, "id: x\ntitle: t\nprompt: q\nlimits: {time_s: fast}\nverifier: {kind: answer, answer: 3}\n")
    with pytest.raises(ProblemError, match=r"limits.time_s"):
        load_problem(p)


def test_function_needs_tests_or_test_code(tmp_path):
    p = write(tmp_path, "id: x\ntitle: t\nprompt: q\nverifier: {kind: function, name: f}\n")
    with pytest.raises(ProblemError, match="needs `tests`"):
        load_problem(p)


def test_answer_number_must_parse(tmp_path):
    p = write(tmp_path, "id: x\ntitle: t\nprompt: q\nverifier: {kind: answer, answer: abc, match: number}\n")
    with pytest.raises(ProblemError, match="not a number"):
        load_problem(p)


def test_defaults(tmp_path):
    p = write(tmp_path, "id: x\ntitle: t\nprompt: q\nverifier: {kind: stdio, tests: [{input: '', output: '1'}]}\n")
    prob = load_problem(p)
    assert prob.limits.time_s == 6.0 and prob.limits.memory_mb == 1024
    assert prob.n_tests == 1 and prob.verifier.tests[0].hidden is False
    assert prob.messages() == [{"role": "user", "content": "q"}]
