"""Exit codes and bad input, command by command, as the README documents them:

    0 success · 1 ran but did not succeed · 2 bad input (one line naming the file/field and the fix) · 130 Ctrl-C

Every bad input must end with exit 2, a short message (at most 3 lines, no traceback), and nothing
written: no run directory, no comparison directory, no change to a run being resumed. Everything is
checked before a model loads (no "loading model" line). The command runs in-process through
`cli.main()` (the real entry point, with its error mapping), so the cases stay fast.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tree_digest
from sdpo_cli import cli

ROOT = Path(__file__).resolve().parents[1]
STDIO = ROOT / "problems/stdio_second_largest.yaml"
SCRIPT = ["no code", "```python\nprint(0)\n```"]  # never solves stdio_second_largest


def run_main(args, monkeypatch, capsys, cwd: Path | None = None) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["sdpo", *map(str, args)])
    if cwd is not None:
        monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as e:
        cli.main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def assert_bad_input(code: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert 1 <= len(lines) <= 3 and "Traceback" not in err, err
    assert "loading model" not in err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture(scope="module")
def env(tiny_model_dir, tmp_path_factory):
    """(tmp dir, the solve flags of a tiny scripted run)."""
    tmp = tmp_path_factory.mktemp("exit")
    (tmp / "script.json").write_text(json.dumps(SCRIPT))
    flags = ["--model", tiny_model_dir, "--backend", "scripted", "--device", "cpu", "--budget", "8", "--batch-size", "2",
             "--max-new-tokens", "12", "--lora-rank", "2"]
    return tmp, flags


@pytest.fixture(autouse=True)
def _script(env, monkeypatch):
    monkeypatch.setenv("SDPO_SCRIPT", str(env[0] / "script.json"))
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture(scope="module")
def unfinished_run(env, tiny_model, tiny_model_dir):
    """A real SDPO run stopped after two committed steps (as Ctrl-C leaves it): resumable."""
    from conftest import stopped_sdpo_run

    tmp, _ = env
    return stopped_sdpo_run(tmp / "runs", STDIO, tiny_model, tiny_model_dir, tmp / "script.json")


# --------------------------------------------------------------------------------------------------
# Flags and config files


@pytest.mark.parametrize("flags,needle", [
    (["--budget", "ten"], "--budget"),
    (["--budget", "1.5"], "--budget"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--grad-clip", "nan"], "--grad-clip"),
    (["--lr", "-1"], "--lr"),
    (["--seed", "99999999999999999999999"], "--seed"),
    (["--device", "tpu"], "--device"),
    (["--device", "cuda"], "cannot use CUDA"),
    (["--backend", "tpu"], "--backend"),
    (["--alpha", "0.5"], "--adv-clip"),
    (["--adv-clip", "3", "--no-adv-clip"], "contradict"),
    (["--temperature", "0"], "--temperature"),
    (["--bogus"], "No such option"),
])
def test_bad_flags_exit_2_before_anything(flags, needle, env, monkeypatch, capsys, tmp_path):
    _, base = env
    code, out, err = run_main(["solve", STDIO, *base, *flags, "--runs-dir", tmp_path / "runs"], monkeypatch, capsys)
    assert_bad_input(code, err, needle)
    assert not (tmp_path / "runs").exists() and out == ""


@pytest.mark.parametrize("text,needle", [
    ("budget: ten\n", "budget"), ("budget: [1]\n", "budget"), ("budget: 1.5\n", "budget"), ("lr: abc\n", "lr"),
    ("temperature: null\n", "temperature"), ("lora_rank: '4'\n", "lora_rank"), ("model: 5\n", "model"),
    ("device: tpu\n", "device"), ("lr: .nan\n", "lr"), ("nonsense: 1\n", "unknown option"), ("- 1\n- 2\n", "mapping"),
    ("budget: [\n", "not valid YAML"), ("[" * 5000 + "\n", "not valid YAML"), ("\xff\xfe", "UTF-8"),
])
def test_bad_config_files_exit_2(text, needle, env, monkeypatch, capsys, tmp_path):
    _, base = env
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(text.encode("latin-1") if text == "\xff\xfe" else text.encode())
    code, _, err = run_main(["solve", STDIO, *base, "--config", cfg, "--runs-dir", tmp_path / "runs"], monkeypatch, capsys)
    assert_bad_input(code, err, needle)
    assert not (tmp_path / "runs").exists()


def test_config_file_values_are_used_and_flags_win(env, monkeypatch, capsys, tmp_path):
    _, base = env
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 1e-3\nbudget: 2\nema-rate: 0.5\n")  # YAML 1.1 reads 1e-3 as a string; a float knob takes it
    code, out, _ = run_main(["solve", STDIO, *base, "--config", cfg, "--budget", "4", "--runs-dir", tmp_path / "r",
                             "--json", "-q"], monkeypatch, capsys)
    assert code == 1
    run = json.loads(out)["run"]
    saved = yaml.safe_load((Path(run) / "config.yaml").read_text())["config"]
    assert (saved["lr"], saved["budget"], saved["ema_rate"], saved["trust_region_mix"]) == (1e-3, 4, 0.5, None)


@pytest.mark.parametrize("where", ["file", "proc", "long", "under_file"])
def test_bad_output_folders_exit_2(where, env, monkeypatch, capsys, tmp_path):
    _, base = env
    (tmp_path / "f").write_text("x")
    target = {"file": tmp_path / "f", "proc": Path("/proc/sdpo-runs"), "long": tmp_path / ("x" * 5000),
              "under_file": tmp_path / "f" / "runs"}[where]
    code, _, err = run_main(["solve", STDIO, *base, "--runs-dir", target], monkeypatch, capsys)
    assert_bad_input(code, err, "--runs-dir")
    code, _, err = run_main(["compare", STDIO, *base, "--out", target], monkeypatch, capsys)
    assert_bad_input(code, err, "--out")


def test_markup_in_a_runs_folder_name_is_printed_as_is(env, monkeypatch, capsys, tmp_path):
    _, base = env
    runs = tmp_path / "[bold red]x[/]"
    code, _, err = run_main(["solve", STDIO, *base, "--budget", "2", "--runs-dir", runs], monkeypatch, capsys)
    assert code == 1 and "[bold red]x[/]" in err


# --------------------------------------------------------------------------------------------------
# Exit codes of every command


@pytest.mark.parametrize("args,needle", [
    (["solve"], "give problem files"),
    (["solve", "--resume", "/nonexistent-sdpo-run"], "no such directory"),
    (["solve", "--resume", "/etc/passwd"], "not a directory"),
    (["report", "/nonexistent-sdpo-cmp"], "no such directory"),
    (["problems", "/nonexistent-sdpo-problems"], "not a directory"),
    (["check", "/nonexistent-sdpo/*.yaml"], "no files match"),
    (["compare", "--resume", "--out", "/tmp/nonexistent-sdpo-cmp"], "not a comparison directory"),
    (["verify", STDIO, "/nonexistent-reply.txt"], "no such response file"),
    (["verify", STDIO, "/dev/null"], "no such response file"),
    (["verify", STDIO, ROOT], "no such response file"),
    (["nonsense-command"], "No such command"),
])
def test_bad_input_exits_2_for_every_command(args, needle, monkeypatch, capsys):
    code, _, err = run_main(args, monkeypatch, capsys)
    assert_bad_input(code, err, needle)


def test_resume_of_an_empty_folder_exits_2(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(["solve", "--resume", tmp_path], monkeypatch, capsys)
    assert_bad_input(code, err, "no run directories")


def test_success_and_failure_exit_codes(env, monkeypatch, capsys, tmp_path):
    assert run_main(["--help"], monkeypatch, capsys)[0] == 0
    assert run_main(["check", STDIO], monkeypatch, capsys)[0] == 0
    reply = tmp_path / "r.txt"
    reply.write_text("no code")
    assert run_main(["verify", STDIO, reply], monkeypatch, capsys)[0] == 1
    _, base = env
    assert run_main(["solve", STDIO, *base, "--budget", "2", "--runs-dir", tmp_path / "r"], monkeypatch, capsys)[0] == 1


# --------------------------------------------------------------------------------------------------
# Resume: a damaged run is refused before the model loads, and left untouched


def _corrupt(run: Path, how: str) -> None:
    if how == "empty checkpoint":
        (run / "checkpoint.json").write_text("")
    elif how == "garbage config":
        (run / "config.yaml").write_text("{[}: garbage\x00")
    elif how == "config edited":
        head = yaml.safe_load((run / "config.yaml").read_text())
        head["config"]["lr"] = 0.5
        (run / "config.yaml").write_text(yaml.safe_dump(head))
    elif how == "config invalid":
        head = yaml.safe_load((run / "config.yaml").read_text())
        head["config"]["budget"] = "ten"
        (run / "config.yaml").write_text(yaml.safe_dump(head))
    elif how == "random bytes in attempts":
        (run / "attempts.jsonl").write_bytes(bytes(range(256)) * 4 + b"\n" + (run / "attempts.jsonl").read_bytes())
    elif how == "attempts is a directory":
        (run / "attempts.jsonl").unlink()
        (run / "attempts.jsonl").mkdir()
    elif how == "missing state":
        shutil.rmtree(run / "state")
    elif how == "checkpoint past the state":
        ck = json.loads((run / "checkpoint.json").read_text())
        (run / "checkpoint.json").write_text(json.dumps({**ck, "step": ck["step"] + 1, "attempts_used": ck["attempts_used"] + 2}))
    elif how == "torn committed attempt":
        lines = (run / "attempts.jsonl").read_text().splitlines(keepends=True)
        (run / "attempts.jsonl").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    elif how == "problem swapped":
        shutil.copyfile(ROOT / "problems/answer_arith.yaml", run / "problem.yaml")
    elif how == "problem edited":
        (run / "problem.yaml").write_text((run / "problem.yaml").read_text() + "\n# edited\n")
    elif how == "steps missing":
        (run / "steps.jsonl").write_text("")
    else:
        raise AssertionError(how)


CORRUPTIONS = ["empty checkpoint", "garbage config", "config edited", "config invalid", "random bytes in attempts",
               "attempts is a directory", "missing state", "checkpoint past the state", "torn committed attempt",
               "problem swapped", "problem edited", "steps missing"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_damaged_run_is_refused_with_exit_2_and_left_as_it_was(how, unfinished_run, monkeypatch, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(unfinished_run, run)
    _corrupt(run, how)
    before = tree_digest(run)
    code, out, err = run_main(["solve", "--resume", run], monkeypatch, capsys)
    assert_bad_input(code, err, str(run))
    assert tree_digest(run) == before and out == ""


def test_an_intact_run_resumes_and_a_torn_tail_is_rolled_back(unfinished_run, monkeypatch, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(unfinished_run, run)
    with open(run / "attempts.jsonl", "a") as f:  # killed while writing the next step's first attempt
        f.write('{"step": 2, "attempt": 5, "te')
    code, out, err = run_main(["solve", "--resume", run, "--json"], monkeypatch, capsys)
    assert code == 1, err
    result = json.loads(out)
    recs = [json.loads(line) for line in (run / "attempts.jsonl").read_text().splitlines()]
    assert result["attempts_used"] == 8 and [r["attempt"] for r in recs] == list(range(1, 9))


def test_a_finished_run_is_not_resumed(unfinished_run, monkeypatch, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(unfinished_run, run)
    assert run_main(["solve", "--resume", run], monkeypatch, capsys)[0] == 1  # runs to the end, unsolved
    before = tree_digest(run)
    code, _, err = run_main(["solve", "--resume", run], monkeypatch, capsys)
    assert code == 1 and "already finished" in err and tree_digest(run) == before


def test_hidden_tests_without_file_isolation_are_refused_before_anything(env, monkeypatch, capsys, tmp_path):
    """In rlimits mode (no bwrap, no unshare) hidden tests cannot be kept from the reply: solve and compare
    refuse such a problem up front, before a model loads or a directory is written."""
    from sdpo_cli.verify import sandbox

    _, base = env
    monkeypatch.setenv("SDPO_SANDBOX", "rlimits")
    sandbox.isolation.cache_clear()
    try:
        hidden = ROOT / "problems/stdio_second_largest.yaml"  # has a hidden test
        code, _, err = run_main(["solve", hidden, *base, "--runs-dir", tmp_path / "runs"], monkeypatch, capsys)
        assert_bad_input(code, err, "hidden")
        code, _, err = run_main(["compare", hidden, *base, "--out", tmp_path / "cmp"], monkeypatch, capsys)
        assert_bad_input(code, err, "hidden")
        assert not (tmp_path / "runs").exists() and not (tmp_path / "cmp").exists()
    finally:
        sandbox.isolation.cache_clear()


def test_ray_input_is_checked_before_anything(env, monkeypatch, capsys, tmp_path):
    """--ray without Ray installed: one line with the install command, exit 2; a problem file taken as the
    --ray address (`--ray p.yaml`): exit 2. Nothing is written either way."""
    import importlib.util

    _, base = env
    code, _, err = run_main(["compare", STDIO, *base, "--out", tmp_path / "c", "--ray", STDIO], monkeypatch, capsys)
    assert_bad_input(code, err, "not a Ray address")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    for cmd in (["solve", STDIO, *base, "--runs-dir", tmp_path / "r"], ["compare", STDIO, *base, "--out", tmp_path / "c"]):
        code, _, err = run_main([*cmd, "--ray"], monkeypatch, capsys)
        assert_bad_input(code, err, "pip install 'sdpo-cli[ray]'")
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()
