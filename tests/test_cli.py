"""The CLI as users and shell scripts run it: a real `sdpo` subprocess, exit codes, stdout vs stderr."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sdpo(*args, stdin=None, env=None):
    e = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "sdpo_cli", *map(str, args)], capture_output=True, text=True,
                          input=stdin, cwd=ROOT, env=e, timeout=300)


def test_help_lists_commands():
    r = sdpo("--help")
    assert r.returncode == 0
    for cmd in ("problems", "check", "verify"):
        assert cmd in r.stdout


def test_check_shipped_problems_exit_0():
    r = sdpo("check", "problems/")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("ok problems/") == len(list((ROOT / "problems").glob("*.yaml")))


def test_check_reports_every_error_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nprompt: q\nverifier: {kind: stdio, tests: [{input: '1'}]}\n")
    r = sdpo("check", bad)
    assert r.returncode == 2
    assert f"{bad}: title: Field required" in r.stderr and f"{bad}: verifier.tests[0].output" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_fails_when_reference_is_wrong(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("id: x\ntitle: t\nprompt: q\nreference: print(2)\nverifier: {kind: stdio, tests: [{input: '', output: '1'}]}\n")
    r = sdpo("check", p)
    assert r.returncode == 1 and "reference FAILS" in r.stderr


def test_verify_pass_fail_and_json(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("```python\nclass Solution:\n    def twoSum(self, n, t):\n        d = {}\n        for j, x in enumerate(n):\n            if t - x in d: return [d[t - x], j]\n            d[x] = j\n```")
    assert sdpo("verify", "problems/function_two_sum.yaml", good).returncode == 0
    r = sdpo("verify", "problems/stdio_second_largest.yaml", "-", "--json", stdin="no code here")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["status"] == "format_error" and out["feedback"].startswith("Incorrect Format")


def test_bad_input_is_one_line_exit_2_and_debug_shows_traceback(tmp_path):
    r = sdpo("verify", tmp_path / "missing.yaml", tmp_path / "x.txt")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "missing.yaml: no such problem file" in lines[0]
    r = sdpo("verify", tmp_path / "missing.yaml", tmp_path / "x.txt", env={"SDPO_DEBUG": "1"})
    assert "Traceback" in r.stderr


def test_problems_table_and_json():
    r = sdpo("problems", "problems", "--json")
    rows = json.loads(r.stdout)
    assert r.returncode == 0 and {row["kind"] for row in rows} >= {"stdio", "function", "answer", "command"}
