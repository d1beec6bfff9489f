"""Fuzzing the CLI with bad problem files: every one is refused with exit 2, a few clear lines, no traceback.

Hypothesis builds each file from a valid problem (one per verifier kind) and one mutation that makes it
invalid by construction: a missing, extra, mistyped or repeated key, deep nesting, a non-JSON tag or a
date, an alias bomb, a non-text key, a huge integer, a file over the size cap, binary junk, control
characters, truncation, a second document, test code that is not Python, a non-mapping top level.
Each file goes through the real entry point (`sdpo_cli.cli.main`, in-process for speed) as `check`,
`verify`, `solve --backend scripted` and, next to a valid file, `problems DIR --json`. The outcome must be:
exit 2, at most 3 output lines, each naming the file, no traceback, and no run directory.

Seeded (derandomize=True) so every run tries the same examples; the example count and time are in
tests/INPUTS.md together with the table of input classes.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import run_cli as sdpo
from sdpo_cli.problem import load_problem

N_EXAMPLES = 250

BASES = {
    "stdio": {"id": "fz-stdio", "title": "Sum", "prompt": "Read two integers and print their sum.",
              "verifier": {"kind": "stdio", "tests": [{"input": "1 2\n", "output": "3"},
                                                      {"input": "5 6\n", "output": "11", "hidden": True}],
                           "float_tolerance": 0.001},
              "limits": {"time_s": 2, "memory_mb": 256}},
    "function": {"id": "fz-function", "title": "Add", "prompt": "Write add(a, b).", "reference": "def add(a, b):\n    return a + b",
                 "verifier": {"kind": "function", "name": "add",
                              "tests": [{"args": [1, 2], "expected": 3},
                                        {"args": [[1, 2], [3]], "kwargs": {}, "expected": [1, 2, 3], "hidden": True}]}},
    "answer": {"id": "fz-answer", "title": "Apples", "prompt": "How many apples? Größe ✓", "system": "Be brief.",
               "verifier": {"kind": "answer", "answer": 42, "match": "number", "tolerance": 0.5}},
    "command": {"id": "fz-command", "title": "Judge", "prompt": "Say hi.",
                "verifier": {"kind": "command", "command": ["python", "judge.py"], "send": "answer", "timeout_s": 10}},
}

# Values the schema refuses at each place (never one that pydantic would coerce into a valid value).
WRONG = {
    ("id",): [["x"], {"a": 1}, 5, True, None, "", "-bad id", "a" * 200],
    ("title",): [["t"], {"a": 1}, None, 5, 2.5],
    ("prompt",): ["", ["p"], {"a": 1}, None, 3.5],
    ("system",): [["s"], 5, {"a": 1}],
    ("verifier",): ["stdio", [1], 5, None],
    ("verifier", "kind"): ["magic", 5, None, ["stdio"], "STDIO"],
    ("limits",): [5, "fast", [1]],
    ("limits", "time_s"): ["fast", -1, 0, 601, [1]],
    ("limits", "memory_mb"): [1, "lots", 1.5, 10**9],
    ("meta",): [[1], "m", 5],
    ("meta", "base_pass_rate"): ["high", -0.1, 2, [0.5]],
}
WRONG_BY_KIND = {
    "stdio": {("verifier", "tests"): [[], "t", 5, {"a": 1}], ("verifier", "tests", 0): [5, "x", []],
              ("verifier", "tests", 0, "input"): [5, [1], {"a": 1}], ("verifier", "tests", 0, "output"): [None, 5, []],
              ("verifier", "tests", 1, "hidden"): ["maybe", [1], 5], ("verifier", "float_tolerance"): [-1, "x", []]},
    "function": {("verifier", "name"): ["not an id", 5, "", "1abc", None],
                 ("verifier", "tests"): ["x", 5, {"a": 1}], ("verifier", "tests", 0, "args"): ["x", 5, {"a": 1}],
                 ("verifier", "tests", 1, "kwargs"): [[1], "x"], ("verifier", "test_code"): ["def check(:", 5]},
    "answer": {("verifier", "answer"): [[1], {"a": 1}, None, True], ("verifier", "match"): ["fuzzy", 5],
               ("verifier", "tolerance"): [-1, "x"], ("verifier", "extract"): ["nope", 1]},
    "command": {("verifier", "command"): [[], "judge", 5, [1]], ("verifier", "send"): ["nothing", 1],
                ("verifier", "timeout_s"): [0, 5000, "x"]},
}
REQUIRED = [("id",), ("title",), ("prompt",), ("verifier",), ("verifier", "kind")]
REQUIRED_BY_KIND = {"stdio": [("verifier", "tests"), ("verifier", "tests", 0, "output")],
                    "function": [("verifier", "name"), ("verifier", "tests"), ("verifier", "tests", 1, "expected")],
                    "answer": [("verifier", "answer")], "command": [("verifier", "command")]}
EXTRA_AT = {"stdio": [(), ("verifier",), ("verifier", "tests", 0), ("limits",)], "function": [(), ("verifier",), ("verifier", "tests", 1)],
            "answer": [(), ("verifier",)], "command": [(), ("verifier",)]}
FIELDS = {"id", "title", "prompt", "system", "reference", "limits", "verifier", "meta", "kind", "tests", "input",
          "output", "hidden", "float_tolerance", "name", "args", "kwargs", "expected", "test_code", "preamble",
          "answer", "match", "tolerance", "extract", "command", "send", "timeout_s", "time_s", "memory_mb",
          "output_kb"}
TAGS = ["!!binary", "!!set", "!!omap", "!!pairs", "!!timestamp", "!!python/object:os.system",
        "!!python/name:os.system", "!!python/object/apply:os.system", "!custom", "!!merge", "!!value"]
DATES = ["2024-01-01", "2001-12-14t21:59:43.10-05:00", "2002-12-14 21:59:43.10 -5", "1999-1-2 3:04:05", "2001-12-15T02:59:43.1Z"]
OPENERS = ["[", "{a: ", "- ", "{? ", "[{x: "]
SCALAR_LINE = re.compile(r"^( *)(- )?([A-Za-z_]+): (\S.*)$")


def dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)


def at(data, path):
    for p in path:
        data = data[p]
    return data


def replace(data, path, value):
    data = json.loads(json.dumps(data))
    at(data, path[:-1])[path[-1]] = value
    return data


def scalar_lines(text: str) -> list[int]:
    """Lines `key: value` whose value is all on that line (no block scalar, continuation or children)."""
    lines = text.splitlines() + [""]
    out = []
    for i, ln in enumerate(lines[:-1]):
        m = SCALAR_LINE.match(ln)
        if not m or m.group(4)[0] in "|>":
            continue
        value, key_indent = m.group(4), len(m.group(1)) + (2 if m.group(2) else 0)
        if value[0] in "'\"" and (len(value) < 2 or value[-1] != value[0]):
            continue
        if len(lines[i + 1]) - len(lines[i + 1].lstrip(" ")) > key_indent:
            continue
        out.append(i)
    return out


@st.composite
def cases(draw):
    """(class, file bytes, extra env): a problem file that is invalid by construction."""
    kind = draw(st.sampled_from(sorted(BASES)))
    base = BASES[kind]
    text = dump(base)
    cls = draw(st.sampled_from(["missing key", "extra key", "wrong type", "repeated key", "deep nesting", "tag",
                                "date", "alias", "non-text key", "huge int", "over size cap", "binary junk",
                                "control char", "truncated", "second document", "not Python", "top level",
                                "bad UTF-8"]))
    env: dict[str, str] = {}
    if cls == "missing key":
        path = draw(st.sampled_from(REQUIRED + REQUIRED_BY_KIND[kind]))
        data = json.loads(json.dumps(base))
        del at(data, path[:-1])[path[-1]]
        out = dump(data)
    elif cls == "extra key":
        where = draw(st.sampled_from(EXTRA_AT[kind]))
        key = draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
                   .filter(lambda k: k not in FIELDS and k != "<<"))
        data = json.loads(json.dumps(base))
        at(data, where)[key] = draw(st.sampled_from([1, "x", None, [1, 2], {"a": 1}]))
        out = dump(data)
    elif cls == "wrong type":
        table = {**WRONG, **WRONG_BY_KIND[kind]}
        path = draw(st.sampled_from(sorted(table, key=str)))
        if path[0] == "meta" and len(path) == 2:
            data = {**base, "meta": {"base_pass_rate": draw(st.sampled_from(table[path]))}}
        elif path[0] in ("limits", "system", "meta") and path[0] not in base:
            data = {**base, path[0]: {} if len(path) > 1 else None}
            data = replace(data, path, draw(st.sampled_from(table[path])))
        else:
            data = replace(base, path, draw(st.sampled_from(table[path])))
        out = dump(data)
    elif cls == "repeated key":
        lines = text.splitlines()
        if draw(st.booleans()):  # a top-level key again at the end (e.g. a second `verifier:`)
            key = draw(st.sampled_from(list(base)))
            out = text + dump({key: base[key]})
        else:  # a nested `key: value` line repeated in its own mapping, with another value
            i = draw(st.sampled_from(scalar_lines(text)))
            indent, dash, key, _ = SCALAR_LINE.match(lines[i]).groups()
            again = " " * (len(indent) + (2 if dash else 0)) + f"{key}: {draw(st.sampled_from(['1', 'x', 'null']))}"
            out = "\n".join(lines[: i + 1] + [again] + lines[i + 1:]) + "\n"
    elif cls == "deep nesting":
        depth = draw(st.integers(65, 20_000))
        opener = draw(st.sampled_from(OPENERS))
        closed = draw(st.booleans()) and opener == "["
        nest = opener * depth + ("]" * depth if closed else "")
        out = text + f"deep: {nest}\n" if opener != "- " else text + "deep:\n" + nest + "1\n"
    elif cls in ("tag", "date", "huge int"):
        lines = text.splitlines()
        i = draw(st.sampled_from(scalar_lines(text)))
        indent, dash, key, value = SCALAR_LINE.match(lines[i]).groups()
        if cls == "tag":
            new = f"{draw(st.sampled_from(TAGS))} {value}"
        elif cls == "date":
            new = draw(st.sampled_from(DATES))
        else:
            digits = draw(st.integers(4301, 30_000))
            new = draw(st.sampled_from(["", "-", "+"])) + "9" * digits if draw(st.booleans()) else "0x" + "f" * digits
        lines[i] = f"{indent}{dash or ''}{key}: {new}"
        out = "\n".join(lines) + "\n"
    elif cls == "alias":
        out = text + draw(st.sampled_from([
            "meta:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
                f"  {b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")),
            "meta: &a [1, *a]\n", "meta: {x: &a {y: *a}}\n", "meta: *nowhere\n",
            "meta:\n  a: &a " + "[" * 50 + "]" * 50 + "\n  b: " + "[" * 20 + "*a" + "]" * 20 + "\n"]))
    elif cls == "non-text key":
        key = draw(st.sampled_from(["1", "-2", "1.5", "on", "off", "yes", "no", "true", "null", "~", "0x1F",
                                    ".inf", "[1]", "{a: 1}"]))
        out = text + f"meta: {{{key}: 1}}\n"
    elif cls == "over size cap":
        env["SDPO_MAX_PROBLEM_MB"] = "0.002"  # 2,097 bytes
        pad = draw(st.integers(2_200, 20_000))
        out = text + "#" * pad + "\n"
    elif cls == "binary junk":
        junk = draw(st.binary(min_size=1, max_size=300))
        where = draw(st.integers(0, len(text)))
        raw = text.encode()
        return cls, raw[:where] + junk + b"\xff" + raw[where:], env
    elif cls == "control char":
        c = draw(st.sampled_from([chr(i) for i in [*range(0, 9), 11, 12, *range(14, 32), 127]]))
        where = draw(st.integers(0, len(text)))
        out = text[:where] + c + text[where:]
    elif cls == "truncated":
        flow = yaml.safe_dump(base, default_flow_style=True, width=float("inf"), allow_unicode=True).strip()
        cut = draw(st.integers(1, len(flow) - 1))  # the top-level `{` is never closed
        out = flow[:cut]
    elif cls == "bad UTF-8":
        raw = text.encode()
        cut = draw(st.integers(0, len(raw)))
        bad = draw(st.sampled_from([b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"]))
        return cls, raw[:cut] + bad + raw[cut:], env
    elif cls == "second document":
        out = text + "---\n" + draw(st.sampled_from([text, "x: 1\n", "~\n"]))
    elif cls == "not Python":
        data = json.loads(json.dumps(BASES["function"]))
        data["verifier"][draw(st.sampled_from(["test_code", "preamble"]))] = draw(st.sampled_from(
            ["def check(c):\n    assert c(1 == 1\n", "import os\0", "x = " + "(" * 300 + ")" * 300, "def f(:\n"]))
        out = dump(data)
    else:  # top level
        out = draw(st.sampled_from([dump([base]), "42\n", "just text\n", "~\n", "[]\n", "'quoted'\n", "", "\n\n",
                                    "# nothing\n", "-\n", "!!map {}\n"]))
    return cls, out.encode(), env


@pytest.fixture(scope="module")
def arena(tmp_path_factory, tiny_model):
    """A folder with the tiny model saved for `solve`, a reply file for `verify` and a valid problem."""
    tmp = tmp_path_factory.mktemp("fuzz")
    model, tok = tiny_model
    model.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    (tmp / "reply.txt").write_text("Answer: 42")
    (tmp / "listing").mkdir()
    (tmp / "listing" / "good.yaml").write_text(dump(BASES["answer"]))
    return tmp


def test_the_unmutated_bases_are_valid(tmp_path):
    for kind, data in BASES.items():
        (tmp_path / f"{kind}.yaml").write_text(dump(data))
        assert load_problem(tmp_path / f"{kind}.yaml").kind == kind
        flow = yaml.safe_dump(data, default_flow_style=True, width=float("inf"), allow_unicode=True)
        (tmp_path / f"{kind}.yaml").write_text(flow)
        assert load_problem(tmp_path / f"{kind}.yaml").kind == kind


@settings(max_examples=N_EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                 HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_bad_problem_files_exit_2_with_few_clear_lines(arena, case):
    cls, raw, env = case
    event(cls)
    bad = arena / "listing" / "bad.yaml"
    bad.write_bytes(raw)
    runs = arena / "runs"
    commands = {
        "check": ["check", bad],
        "verify": ["verify", bad, arena / "reply.txt"],
        "solve": ["solve", bad, "--backend", "scripted", "--model", arena / "model", "--device", "cpu",
                  "--runs-dir", runs, "--budget", "1"],
    }
    for name, args in commands.items():
        code, lines = sdpo(args, env)
        assert code == 2, (cls, name, code, lines)
        assert 1 <= len(lines) <= 3, (cls, name, lines)
        assert all(str(bad) in ln for ln in lines), (cls, name, lines)
        assert not any("Traceback" in ln for ln in lines), (cls, name, lines)
        assert not runs.exists(), (cls, name)
    code, lines = sdpo(["problems", arena / "listing", "--json"], env)
    assert code == 2 and len(lines) == 2, (cls, lines)
    err = [ln for ln in lines if not ln.startswith("[")]
    listed = json.loads(next(ln for ln in lines if ln.startswith("[")))
    assert [r["id"] for r in listed] == ["fz-answer"] and str(bad) in err[0], (cls, lines)
    assert sorted(os.listdir(arena)) == ["listing", "model", "reply.txt"]
    assert sorted(os.listdir(arena / "listing")) == ["bad.yaml", "good.yaml"]


JSON_DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), inner,
                                                                max_size=4),
    max_leaves=20)


def same(a, b) -> bool:
    """Equal as JSON data, with NaN equal to NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) and type(a) is type(b)


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(data=JSON_DATA, flow=st.booleans())
def test_strict_loader_reads_what_yaml_writers_write_as_safe_load_does(data, flow):
    """The strict loader is a drop-in for valid files: on whatever the importers' dumper (and
    yaml.safe_dump) write, it returns exactly what yaml.safe_load returns."""
    from sdpo_cli.importers import dump_problem
    from sdpo_cli.yamldata import load

    for text in (dump_problem({"meta": data}), yaml.safe_dump({"meta": data}, default_flow_style=flow, allow_unicode=flow)):
        assert same(load(text), yaml.safe_load(text))
