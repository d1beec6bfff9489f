"""Red team, part 1: replies that try to forge a verdict, in every isolation mode this machine has.

Each test asserts that the attack failed AND that a correct reply of the same problem, verified in
the same batch, still passes. The attacks (tests/redteam_attacks.py) are the ones that passed under
the single-process harness this package used to have, plus more: writing the verdict line to every
descriptor, calling the verdict writer, rewriting or reading the test in memory, objects equal to
everything, patched builtins / json / excepthook / atexit, forged wire data, killing the parent.
Also here: model text that makes the judge's regular expressions backtrack, terminal escape
sequences in model output, and one end-to-end `sdpo solve` whose every reply is forged.
Isolation (files, other runs, processes, kill -9, fork floods): test_redteam_isolation.py.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from isolation_modes import MODES, use_mode
from redteam_attacks import ATTACKS, CORRECT, PROBLEMS, fence

from sdpo_cli.problem import Problem, load_problem
from sdpo_cli.verify import SandboxRefused, refusal, verify, verify_many

ROOT = Path(__file__).resolve().parents[1]


def _problem(key: str) -> Problem:
    spec = PROBLEMS[key]
    return Problem.model_validate(spec) if isinstance(spec, dict) else load_problem(ROOT / spec)


@pytest.fixture(scope="module", params=MODES)
def verdicts(request):
    """mode -> {attack id: Verdict, ("correct", key): Verdict}: one batch per problem, attacks and the
    correct reply together. Problems with hidden tests are refused in rlimits mode (None)."""
    out = {}
    with use_mode(request.param):
        by_key: dict[str, list] = {}
        for aid, key, text in ATTACKS:
            by_key.setdefault(key, []).append((aid, text))
        for key, items in by_key.items():
            problem = _problem(key)
            if refusal(problem):
                out.update({aid: None for aid, _ in items} | {("correct", key): None})
                continue
            vs = verify_many(problem, [(t, False) for _, t in items] + [(CORRECT[key], False)])
            out.update({aid: v for (aid, _), v in zip(items, vs)} | {("correct", key): vs[-1]})
    return request.param, out


@pytest.mark.parametrize("attack", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_forged_reply_does_not_pass(verdicts, attack):
    mode, got = verdicts
    aid, key, _ = attack
    if got[aid] is None:
        assert mode == "rlimits"
        pytest.skip("hidden tests refused in rlimits mode (test_hidden_tests_are_refused_without_file_isolation)")
    assert not got[aid].passed, f"{aid} passed in {mode} mode: {got[aid].tests}"
    assert got[aid].n_passed < got[aid].n_total
    assert got[("correct", key)].passed, got[("correct", key)].feedback


def test_there_are_at_least_ten_distinct_function_forgeries():
    assert len({a for a, k, _ in ATTACKS if k.startswith("fn_")}) >= 10
    assert {k for _, k, _ in ATTACKS} == set(PROBLEMS)  # every verifier kind is attacked


def test_forged_replies_keep_useful_feedback():
    """A forgery is graded like any wrong reply: the type it returned is named."""
    got = verify(_problem("fn_asserts"), ATTACKS[3][2])  # always_equal_object
    assert got.status == "runtime_error"
    assert "returned an object of type Anything" in got.feedback


def test_hidden_tests_are_refused_without_file_isolation():
    with use_mode("rlimits"):
        hidden = _problem("stdio")
        with pytest.raises(SandboxRefused, match="has hidden tests.*install bubblewrap"):
            verify(hidden, CORRECT["stdio"])
        assert "rlimits mode" in refusal(hidden)
        visible = _problem("fn_asserts")  # no hidden tests: verified as usual
        assert refusal(visible) is None and verify(visible, CORRECT["fn_asserts"]).passed
    # `sdpo check` says so per file and goes on with the others.
    res = subprocess.run([sys.executable, "-m", "sdpo_cli", "check", str(ROOT / PROBLEMS["stdio"]),
                          str(ROOT / PROBLEMS["fn_asserts"])], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SDPO_SANDBOX": "rlimits", "NO_COLOR": "1"})
    assert res.returncode == 2
    assert "stdio_second_largest.yaml: has hidden tests" in res.stderr and "ok " in res.stderr


# --------------------------------------------------------------------------------------------------
# Model text that attacks the judge's own parsing (runs in sdpo, not in the sandbox)

@pytest.mark.parametrize("pattern", ["(a+)+", "(a|aa)+"])
def test_regex_judge_cannot_hang_on_a_backtracking_reply(pattern):
    p = Problem.model_validate({"id": "rx", "title": "t", "prompt": "q",
                                "verifier": {"kind": "answer", "answer": pattern, "match": "regex"}})
    t0 = time.perf_counter()
    bad, good = verify_many(p, [("Answer: " + "a" * 40 + "!", False), ("Answer: aaaa", False)])
    assert time.perf_counter() - t0 < 10  # with `re`, both run for hours on these 41 characters
    assert not bad.passed and good.passed
    if pattern == "(a|aa)+":  # this one stays exponential in the `regex` package too: the timeout ends it
        assert "gave up" in bad.message


@pytest.mark.parametrize("text", [
    "\n" * 200_000,  # `^\W*` used to cross lines: quadratic
    "answer" + " " * 200_000,  # adjacent `\s*` around an optional word
    "```\n" * 100_000,
    "\\boxed{" * 50_000,  # unclosed boxes, each used to be scanned to the end
    "Answer: " + "9" * 5000 + "/1",  # int() past the digit limit
    "Answer: 1" + "0" * 400 + "/1",  # a float overflow
], ids=["newlines", "spaces", "fences", "boxes", "digits", "overflow"])
def test_extraction_and_number_parsing_stay_fast_on_hostile_text(text):
    answer = load_problem(ROOT / "problems/answer_arith.yaml")
    stdio = load_problem(ROOT / "problems/demo_add.yaml")
    t0 = time.perf_counter()
    vs = verify_many(answer, [(text, False), (CORRECT["answer"], False)])
    v2 = verify(stdio, text)
    assert time.perf_counter() - t0 < 10
    assert not vs[0].passed and vs[1].passed and not v2.passed


# --------------------------------------------------------------------------------------------------
# Model text on the terminal

ESCAPES = {
    "title": "\x1b]0;pwned\x07",
    "clear": "\x1b[2J\x1b[H",
    "clipboard": "\x1b]52;c;cHduZWQ=\x07",
    "fake_green": "\x1b[32mpassed 5/5 tests passed\x1b[0m",
    "bidi": "\u202e",
    "markup": "[green]passed[/green] [link=http://x]x[/link]",
}


def _cli(args, tmp_path, **env):
    return subprocess.run([sys.executable, "-m", "sdpo_cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "COLUMNS": "200", **env})


@pytest.mark.parametrize("force_colour", [False, True], ids=["plain", "colour"])
def test_model_output_reaches_the_terminal_escaped_and_json_stays_exact(tmp_path, force_colour):
    payload = "".join(ESCAPES.values())
    reply = fence(f"print({payload!r})")
    (tmp_path / "reply.txt").write_text(reply)
    env = {"FORCE_COLOR": "1", "TERM": "xterm-256color"} if force_colour else {"NO_COLOR": "1"}
    problem = str(ROOT / "problems/demo_add.yaml")
    res = _cli(["verify", problem, "reply.txt"], tmp_path, **env)
    assert res.returncode == 1
    both = res.stdout + res.stderr
    for name, seq in ESCAPES.items():
        if name != "markup":
            assert seq not in both, name
    assert "\x07" not in both and "\x1b]" not in both and "\u202e" not in both
    assert "\\x1b]0;pwned\\x07" in res.stdout and "\\u202e" in res.stdout  # visible, not executed
    assert ESCAPES["markup"] in res.stdout  # printed literally: rich markup is not interpreted
    # --json: the exact text, escaped only by JSON itself
    data = json.loads(_cli(["verify", problem, "reply.txt", "--json"], tmp_path, **env).stdout)
    assert payload in data["feedback"]
    # The good reply still verifies (and says so).
    (tmp_path / "good.txt").write_text(fence("a, b = map(int, input().split())\nprint(a + b)"))
    assert _cli(["verify", problem, "good.txt"], tmp_path, **env).returncode == 0


def test_problem_file_names_with_escapes_and_markup_are_printed_literally(tmp_path):
    src = (ROOT / "problems/demo_add.yaml").read_text()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "[red]x\x1b[2Jy.yaml").write_text(src)
    res = _cli(["check", "d"], tmp_path, FORCE_COLOR="1")
    assert res.returncode == 0, res.stderr
    assert "\x1b[2J" not in res.stderr and "[red]x\\x1b[2Jy.yaml" in res.stderr
    bad = tmp_path / "bad\x1b]0;t\x07.yaml"
    bad.write_text("id: x\n")
    res = _cli(["check", bad.name], tmp_path)
    assert res.returncode == 2 and "\x1b]" not in res.stderr and "\\x1b]0;t\\x07" in res.stderr


# --------------------------------------------------------------------------------------------------
# End to end: `sdpo solve` fed only forged replies

E2E = """id: rt-e2e
title: t
prompt: Return the running maximum of a list.
verifier:
  kind: function
  name: running_max
  tests:
    - {args: [[1, 3, 2]], expected: [1, 3, 3]}
    - {args: [[5, 4, 3, 9]], expected: [5, 5, 5, 9], hidden: true}
"""
# Looks for the problem file anywhere it can read (the folder given to solve, the run directory's
# copy) and answers from it: passes wherever the sandbox shows the file.
FILE_READER = fence("""
import ast, os, re
def running_max(numbers):
    for top, dirs, files in os.walk('/'):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in ('/proc', '/sys', '/dev')]
        for name in files:
            if not name.endswith('.yaml'):
                continue
            try:
                text = open(os.path.join(top, name)).read()
            except OSError:
                continue
            for args, want in re.findall(r'args: \\[(\\[.*?\\])\\], expected: (\\[.*?\\])', text):
                if ast.literal_eval(args) == numbers:
                    return ast.literal_eval(want)
    return numbers
""")


@pytest.mark.slow
@pytest.mark.skipif("bwrap" not in MODES and "unshare" not in MODES, reason="hidden tests need file isolation")
def test_solve_fed_only_forged_replies_ends_exhausted(tiny_model_dir, tmp_path):
    problem = tmp_path / "e2e.yaml"
    problem.write_text(E2E)
    os.chmod(tmp_path, 0o755)  # readable by any uid: only the sandbox may keep the reply out
    forged = [text for aid, _, text in ATTACKS if aid in (
        "fd_write_then_exit", "emit_helper_then_exit", "always_equal_object", "patch_builtins_bool",
        "atexit_writes_pass", "expected_value_from_memory")] + [FILE_READER]
    script = tmp_path / "script.json"
    script.write_text(json.dumps(forged))
    cmd = [sys.executable, "-m", "sdpo_cli", "solve", str(problem), "--model", str(tiny_model_dir), "--backend",
           "scripted", "--device", "cpu", "--budget", str(len(forged)), "--batch-size", str(len(forged)),
           "--max-new-tokens", "16", "--lora-rank", "2", "--runs-dir", str(tmp_path / "runs"), "--json"]
    env = {**os.environ, "SDPO_SCRIPT": str(script), "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 1, res.stderr[-2000:]
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["status"] == "exhausted" and not line["solved"], line
    run = Path(line["run"])
    attempts = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == len(forged) and not any(a["passed"] for a in attempts)
    # (the scripted sampler cuts token ids at --max-new-tokens but verifies the whole text)
    assert {a["status"] for a in attempts} <= {"runtime_error", "wrong_answer"}, [a["status"] for a in attempts]
    # A right reply passes the same problem (the pipeline solving with it: test_trainer.py).
    assert verify(load_problem(problem), CORRECT["fn_asserts"]).passed
