"""Problem files: schema validation with file/field errors, the shipped examples load, and limits on input.

The limits part feeds each hostile or malformed file to `load_problem` and checks the one error line
(file, line or field, what is wrong, the fix); the YAML-level ones run with libyaml's parser and with
PyYAML's pure-Python one. tests/INPUTS.md tabulates the same classes as seen from the CLI.
"""

import json
import os
import threading
from pathlib import Path

import pytest
import yaml

from sdpo_cli import yamldata
from sdpo_cli.errors import ConfigError, ProblemError
from sdpo_cli.problem import Problem, find_problems, load_problem

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


# --------------------------------------------------------------------------------------------------
# Limits on input: every bad file is one ProblemError line naming the file and the line, never a
# RecursionError, MemoryError, OSError or a value that breaks the verifier later.

HEAD = "id: x\ntitle: t\nprompt: q\n"
FUNCTION = HEAD + "verifier:\n  kind: function\n  name: f\n  tests:\n  - {args: %s, expected: 1}\n"


@pytest.fixture(params=["libyaml", "pure-python"])
def parser(request, monkeypatch):
    """Run the test with libyaml's event parser and with PyYAML's pure-Python one."""
    if request.param == "libyaml":
        if yamldata._LIBYAML is None:
            pytest.skip("PyYAML was built without libyaml")
    else:
        monkeypatch.setattr(yamldata, "_LIBYAML", None)
    return request.param


def refused(tmp_path, text, **kw) -> str:
    """The one error line load_problem gives for `text` (str or bytes)."""
    p = tmp_path / "p.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ProblemError) as e:
        load_problem(p, **kw)
    assert len(e.value.lines) == 1 and "\n" not in e.value.lines[0], e.value.lines
    assert e.value.lines[0].startswith(f"{p}: ")
    return e.value.lines[0]


def test_duplicate_key_is_refused_at_any_depth(tmp_path, parser):
    # Before: the second `tests:` list silently replaced the first, and its hidden test was dropped.
    text = HEAD + "verifier:\n  kind: stdio\n  tests: [{output: '1', hidden: true}]\n  tests: [{output: '2'}]\n"
    assert refused(tmp_path, text).endswith("line 7: the key 'tests' is repeated (first on line 6); keep one of them")
    assert "the key 'output' is repeated" in refused(tmp_path, HEAD + "verifier: {kind: stdio, tests: [{output: '1', output: '2'}]}\n")
    assert "line 2: the key 'id' is repeated" in refused(tmp_path, "id: x\nid: y\n")


@pytest.mark.parametrize("value", ["2024-01-01", "2001-12-14t21:59:43.10-05:00", "2002-12-14 21:59:43.10 -5"])
def test_dates_are_refused_with_quote_it(tmp_path, parser, value):
    line = refused(tmp_path, FUNCTION % f"[{value}]")
    assert f"line 8: '{value}' reads as a date, which is not plain data (quote it to keep it as text)" in line
    p = tmp_path / "q.yaml"
    p.write_text(FUNCTION % f"['{value}']")
    assert load_problem(p).verifier.tests[0].args == [value]


@pytest.mark.parametrize("value, tag", [("!!binary aGVsbG8=", "!!binary"), ("!!set {a, b}", "!!set"),
                                        ("!!omap [a: 1]", "!!omap"), ("!!pairs [a: 1]", "!!pairs"),
                                        ("!!timestamp '2024-01-01'", "!!timestamp"), ("!mytag 1", "!mytag"),
                                        ("!!python/object/apply:os.system ['true']", "!!python/object/apply:os.system"),
                                        ("!!python/name:os.system ''", "!!python/name:os.system")])
def test_non_json_tags_are_refused(tmp_path, parser, value, tag):
    line = refused(tmp_path, FUNCTION % f"[{value}]")
    assert f"line 8: the tag '{tag}' is not plain data" in line


def test_json_tags_and_yaml_1_1_scalars_still_load(tmp_path, parser):
    p = tmp_path / "p.yaml"
    p.write_text(FUNCTION % "[!!str 12, !!int '7', !!float 1, 0x1F, 012, 1_000, 1:30, .nan, -.inf, yes, ~, =]")
    args = load_problem(p).verifier.tests[0].args
    assert args[:7] == ["12", 7, 1.0, 31, 10, 1000, 90] and args[7] != args[7] and args[8] == float("-inf")
    assert args[9:] == [True, None, "="]


@pytest.mark.parametrize("opening", ["[", "{a: ", "- ", "!!seq ["])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path, parser, opening):
    line = refused(tmp_path, opening * 100_000)
    assert "line 1: lists/mappings nested more than 64 levels deep (flatten the data)" in line


def test_depth_cap_is_exact(parser):
    assert yamldata.load("a: " + "[" * 63 + "]" * 63)["a"]  # the top mapping and 63 lists: 64 levels
    with pytest.raises(yamldata.YamlDataError, match="line 1: lists/mappings nested more than 64 levels deep"):
        yamldata.load("a: " + "[" * 64 + "]" * 64)
    assert yamldata.load("[[1]]", max_depth=2) == [[1]]
    with pytest.raises(yamldata.YamlDataError, match="more than 1 levels"):
        yamldata.load("[[1]]", max_depth=1)


def test_alias_bombs_and_recursive_aliases_are_refused(tmp_path, parser):
    laughs = "meta:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"  {b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
    assert "aliases expand to more than 1,000,000 values" in refused(tmp_path, HEAD + laughs)
    assert "line 4: the alias *a refers to a list/mapping that contains it" in refused(tmp_path, HEAD + "meta: &a [*a]\n")
    assert "the alias *b has no anchor &b before it" in refused(tmp_path, HEAD + "meta: *b\n")
    assert "line 5: the anchor &x is defined twice (first on line 4); rename one" in refused(
        tmp_path, HEAD + "system: &x a\ntitle2: &x b\n")
    deep = "meta:\n  a: &a " + "[" * 40 + "]" * 40 + "\n  b: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    assert "the alias *a nests lists/mappings more than 64 levels deep" in refused(tmp_path, HEAD + deep)


def test_anchors_aliases_and_merge_keys_still_work(tmp_path, parser):
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + "verifier:\n  kind: stdio\n  tests:\n  - &t {input: '1', output: '1'}\n  - *t\n"
                 "  - {<<: *t, hidden: true}\n  - {<<: *t, output: '2'}\n")
    tests = load_problem(p).verifier.tests
    assert [(t.input, t.output, t.hidden) for t in tests] == [("1", "1", False), ("1", "1", False),
                                                              ("1", "1", True), ("1", "2", False)]


@pytest.mark.parametrize("key, reads_as", [("1", "a number (1)"), ("on", "a boolean (True)"),
                                           ("null", "null (None)"), ("1.5", "a number (1.5)")])
def test_mapping_keys_must_be_text(tmp_path, parser, key, reads_as):
    # `args: [{1: 2}]` would reach the function as {"1": 2} after the trip through JSON.
    line = refused(tmp_path, FUNCTION % f"[{{{key}: 2}}]")
    assert f"line 8: the key '{key}' reads as {reads_as}, not text (quote it to keep it as text)" in line
    assert "a mapping key is a list, not text" in refused(tmp_path, FUNCTION % "[{[1]: 2}]")


def test_huge_integers_are_refused(tmp_path, parser):
    assert "an integer of more than 4300 digits" in refused(tmp_path, FUNCTION % f"[{'9' * 5000}]")
    assert "an integer of more than 4300 digits" in refused(tmp_path, FUNCTION % f"[0x{'f' * 5000}]")
    p = tmp_path / "q.yaml"
    p.write_text(FUNCTION % f"[{'9' * 4000}, '{'9' * 5000}']")
    assert load_problem(p).verifier.tests[0].args[0] == int("9" * 4000)


def test_control_characters_lone_surrogates_and_second_documents_are_refused(tmp_path, parser):
    assert "line 3: the control character U+0001 is not allowed" in refused(tmp_path, "id: x\ntitle: t\nprompt: a\x01\n")
    assert "line 2: the control character U+0000" in refused(tmp_path, "id: x\n# \x00\n")
    line = refused(tmp_path, HEAD + 'system: "\\ud800"\n')
    assert "line 4:" in line and ("lone surrogate \\ud800" in line or "invalid Unicode character escape" in line)
    assert "line 4: a second YAML document (`---`)" in refused(tmp_path, HEAD + "---\nid: y\n")


def test_yaml_syntax_error_names_the_line(tmp_path, parser):
    assert "line 2: not valid YAML:" in refused(tmp_path, "id: x\ntitle: a: b\nprompt: q\n")
    assert "line 5: not valid YAML:" in refused(tmp_path, HEAD + "verifier: {kind: stdio\n")


def test_size_cap_default_flag_and_env(tmp_path, monkeypatch):
    p = tmp_path / "p.yaml"
    with open(p, "wb") as f:  # sparse: 8 MB + 1 byte without writing them
        f.truncate((8 << 20) + 1)
    # Refused by its size before parsing: parsed, its NUL bytes would give a control-character error.
    with pytest.raises(ProblemError, match=r"p.yaml: larger than the 8 MB limit for problem files "
                                           r"\(shrink the tests, or raise the limit with SDPO_MAX_PROBLEM_MB=N\)"):
        load_problem(p)
    small = tmp_path / "small.yaml"
    small.write_text(HEAD + "verifier: {kind: answer, answer: 3}\n" + "#" * 2000 + "\n")
    with pytest.raises(ProblemError, match="larger than the 1,024-byte limit"):
        load_problem(small, max_bytes=1 << 10)
    assert load_problem(small, max_bytes=1 << 20).id == "x"
    monkeypatch.setenv("SDPO_MAX_PROBLEM_MB", "0.0005")
    with pytest.raises(ProblemError, match="larger than the 524-byte limit"):
        load_problem(small)
    monkeypatch.setenv("SDPO_MAX_PROBLEM_MB", "lots")
    with pytest.raises(ConfigError, match=r"SDPO_MAX_PROBLEM_MB='lots': not a positive number of megabytes"):
        load_problem(small)


def test_not_utf8_names_the_line_and_a_bom_is_fine(tmp_path):
    line = refused(tmp_path, HEAD.encode() + b"system: caf\xe9\n")
    assert line.endswith("line 4: not UTF-8 text (byte 0xe9 at offset 36; save the file as UTF-8)")
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + (HEAD + "verifier: {kind: answer, answer: 3}\n").encode())
    assert load_problem(p).id == "x"


@pytest.mark.parametrize("text, says", [("", "empty file"), ("  \n\n", "empty file"),
                                        ("# just a comment\n", "found nothing but comments"),
                                        ("- id: x\n", "found list [{'id': 'x'}]"),
                                        ("just text\n", "found str 'just text'"),
                                        ("{}\n", "found an empty mapping"),
                                        ("budget: 4\nlr: 0.001\n", "found keys ['budget', 'lr']")])
def test_empty_and_non_mapping_files(tmp_path, text, says):
    line = refused(tmp_path, text)
    assert says in line and "problems/README.md" in line


def test_directory_device_and_fifo_are_refused_without_blocking(tmp_path):
    with pytest.raises(ProblemError, match="a directory, not a problem file"):
        load_problem(tmp_path)
    with pytest.raises(ProblemError, match=r"not a regular file \(a pipe, socket or device\)"):
        load_problem("/dev/null")
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    errors = []
    reader = threading.Thread(target=lambda: errors.append(pytest.raises(ProblemError, load_problem, fifo)),
                              daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "load_problem blocked on a FIFO that has no writer"
    assert "not a regular file" in str(errors[0].value)


def test_find_problems_lists_broken_entries_so_they_are_reported(tmp_path):
    (tmp_path / "good.yaml").write_text(HEAD + "verifier: {kind: answer, answer: 3}\n")
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "gone.yaml")
    os.mkfifo(tmp_path / "pipe.yml")
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    paths = find_problems(tmp_path)
    assert [p.name for p in paths] == ["dangling.yaml", "good.yaml", "pipe.yml"]
    outcomes = []
    for p in paths:
        try:
            outcomes.append(load_problem(p).id)
        except ProblemError as e:
            outcomes.append(e.lines[0].split(": ", 1)[1])
    assert outcomes[0].startswith("no such problem file") and outcomes[1] == "x"
    assert outcomes[2].startswith("not a regular file")


def test_code_that_does_not_parse_is_refused_at_load(tmp_path):
    body = HEAD + "verifier: {kind: function, name: f, %s}\n"
    assert "verifier.test_code: not valid Python (line 2:" in refused(
        tmp_path, body % "test_code: \"def check(c):\\n    assert c(1 == 1\\n\"")
    assert "verifier.preamble: not valid Python" in refused(
        tmp_path, body % "preamble: \"import os\\0\", tests: [{expected: 1}]")
    deep = "def check(c):\\n    assert c(" + "(" * 5000 + "1" + ")" * 5000 + ") == 1\\n"
    assert "verifier.test_code: not valid Python" in refused(tmp_path, body % f'test_code: "{deep}"')


@pytest.mark.parametrize("body, says", [
    ("verifier: {kind: command, command: [\"judge\\0\"]}", "verifier.command: an argument holds a NUL character"),
    ("verifier: {kind: answer, answer: [1]}", "verifier.answer: give the answer as text or a number, not [1]"),
    ("verifier: {kind: answer, answer: yes}", "verifier.answer: give the answer as text or a number, not True"),
    ("verifier: {kind: answer, answer: 1, tolerance: .nan}", "verifier.tolerance: Input should be a finite number"),
    ("verifier: {kind: stdio, float_tolerance: .inf, tests: [{output: '1'}]}",
     "verifier.float_tolerance: Input should be a finite number"),
    ("limits: {time_s: .nan}\nverifier: {kind: answer, answer: 1}", "limits.time_s: Input should be a finite number"),
    ("meta: {base_pass_rate: high}\nverifier: {kind: answer, answer: 1}",
     "meta: base_pass_rate must be a number from 0 to 1, not 'high'"),
    ("verifier: {kind: \"\\e[31mmagic\"}", "verifier: unknown kind '\\x1b[31mmagic'"),
])
def test_schema_refuses_values_that_would_break_a_run_later(tmp_path, body, says):
    assert says in refused(tmp_path, HEAD + body + "\n")


def test_id_must_fit_in_a_run_directory_name(tmp_path):
    assert "id: String should have at most 128 characters" in refused(
        tmp_path, f"id: {'a' * 129}\ntitle: t\nprompt: q\nverifier: {{kind: answer, answer: 1}}\n")


def test_python_callers_get_the_json_check_too():
    import datetime

    data = {"id": "x", "title": "t", "prompt": "q",
            "verifier": {"kind": "function", "name": "f", "tests": [{"args": [datetime.date(2024, 1, 1)], "expected": 1}]}}
    with pytest.raises(ValueError, match=r"tests\.0\.args\n.*not JSON data \(Object of type date is not JSON serializable"):
        Problem.model_validate(data)


def test_each_schema_error_is_one_line_and_their_number_is_capped(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + 'verifier: {kind: stdio, tests: [{output: "1", "a\\nb": 1}, ' + ", ".join(["5"] * 30) + "]}\n")
    with pytest.raises(ProblemError) as e:
        load_problem(p)
    lines = e.value.lines
    assert len(lines) == 11 and all("\n" not in ln for ln in lines)
    assert "verifier.tests[0].'a\\nb': Extra inputs are not permitted" in lines[0]
    assert lines[-1] == f"{p}: ... and 21 more mistakes (fix these first)"


def test_strict_loader_reads_every_shipped_file_like_safe_load(parser):
    """The parser swap is invisible for valid files: same data as yaml.safe_load, for every YAML file here."""
    files = sorted((ROOT / "problems").rglob("*.yaml"))
    assert len(files) >= 20
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert json.dumps(yamldata.load(text), sort_keys=True) == json.dumps(yaml.safe_load(text), sort_keys=True), f
