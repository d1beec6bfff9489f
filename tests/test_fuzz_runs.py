"""Fuzzing config files and run directories: every damaged input is refused with exit 2, a few clear lines,
no traceback, and nothing written or changed.

  * config files: a valid config with one mutation (a knob of the wrong type, out of range, NaN or
    infinity, an unknown key, a repeated key, a tag or a date, deep nesting, a non-mapping top level,
    binary junk), given to `sdpo solve --config`: no run directory may appear.
  * run directories: a real SDPO run stopped after two committed steps, then one corruption (records of
    committed steps cut, edited into junk or deleted; checkpoint.json damaged or pointing elsewhere;
    config.yaml or problem.yaml edited; saved state deleted), given to `sdpo solve --resume`: the run
    directory must be byte for byte what it was (nothing "repaired" silently) and no model is loaded.

Seeded (derandomize=True), bounded to stay in the fast tier; counts and time are in tests/INPUTS.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import run_cli as sdpo
from conftest import stopped_sdpo_run
from conftest import tree_digest as digest
from sdpo_cli.config import KNOBS

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = ROOT / "problems/stdio_second_largest.yaml"
N_CONFIG, N_RUNS = 80, 60


def assert_refused(code: int, lines: list[str], name: str, what) -> None:
    assert code == 2, (what, code, lines)
    assert 1 <= len(lines) <= 3, (what, lines)
    assert not any("Traceback" in ln or "loading model" in ln for ln in lines), (what, lines)
    assert any(name in ln for ln in lines), (what, lines)


# --------------------------------------------------------------------------------------------------
# Config files

VALID = {"budget": 4, "lr": 0.001, "teacher": "ema", "temperature": 0.9, "lora-rank": 2, "ema_rate": 0.05}
BAD_VALUES = {
    int: ["ten", 1.5, [1], {"a": 1}, None, True, -1, 0, 10**30, "4"],
    float: ["abc", [0.1], None, True, ".nan", ".inf", "-.inf", -5.0, 1e9, "1e400"],
    str: [5, 1.5, [1], {"a": 1}, None, True, ""],
    bool: ["maybe", 5, [True], None, 2.5],
}


@st.composite
def config_files(draw):
    cls = draw(st.sampled_from(["wrong value", "unknown key", "repeated key", "tag", "date", "deep", "top level",
                                "binary", "adv clip with JSD"]))
    text = yaml.safe_dump(VALID, sort_keys=False)
    if cls == "wrong value":
        knob = draw(st.sampled_from([k for k in KNOBS if k.name not in ("trust_region_mix",)]))
        value = draw(st.sampled_from([v for v in BAD_VALUES[knob.type]
                                      if not (v is None and (knob.auto or knob.nullable))]))  # None = auto there
        if knob.choices and isinstance(value, str) and value in knob.choices:
            value = "nope"
        raw = value if isinstance(value, str) and value.startswith((".", "-.", "1e")) else json.dumps(value)
        text += f"{knob.name}: {raw}\n"
    elif cls == "unknown key":
        text += f"{draw(st.sampled_from(['batchsize', 'learning_rate', 'Budget', 'seeds', 'x']))}: 1\n"
    elif cls == "repeated key":
        text += f"budget: {draw(st.integers(1, 9))}\n"
    elif cls == "tag":
        text += f"model: {draw(st.sampled_from(['!!binary aGk=', '!!python/name:os.system', '!!set {a}']))}\n"
    elif cls == "date":
        text += "seed: 2024-01-01\n"
    elif cls == "deep":
        n = draw(st.integers(65, 5000))
        text += "lr: " + "[" * n + "]" * n + "\n"
    elif cls == "top level":
        text = draw(st.sampled_from(["- budget: 4\n", "42\n", "just text\n", "[]\n"]))
    elif cls == "binary":
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        return cls, raw[:at] + draw(st.binary(min_size=1, max_size=50)) + b"\xff" + raw[at:]
    else:
        text += "alpha: 0.5\n"  # the default advantage clip is defined for the reverse KL only
    return cls, text.encode()


@pytest.fixture(scope="module")
def arena(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("fuzz-runs")
    (tmp / "script.json").write_text(json.dumps(["no code", "```python\nprint(0)\n```"]))
    return tmp


@settings(max_examples=N_CONFIG, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=config_files())
def test_bad_config_files_exit_2_and_create_nothing(arena, tiny_model_dir, case):
    cls, raw = case
    event(cls)
    cfg = arena / "bad-config.yaml"
    cfg.write_bytes(raw)
    runs = arena / "runs-cfg"
    code, lines = sdpo(["solve", PROBLEM, "--config", cfg, "--backend", "scripted", "--model", tiny_model_dir,
                        "--device", "cpu", "--runs-dir", runs], {"SDPO_SCRIPT": str(arena / "script.json")})
    assert_refused(code, lines, str(cfg) if cls != "adv clip with JSD" else "--adv-clip", (cls, raw[:200]))
    assert not runs.exists()


# --------------------------------------------------------------------------------------------------
# Run directories


@pytest.fixture(scope="module")
def stopped_run(arena, tiny_model, tiny_model_dir):
    """A real SDPO run (tiny model, scripted replies) stopped after two committed steps."""
    return stopped_sdpo_run(arena / "base", PROBLEM, tiny_model, tiny_model_dir, arena / "script.json")


@st.composite
def corruptions(draw):
    target = draw(st.sampled_from(["attempts.jsonl", "steps.jsonl", "checkpoint.json", "config.yaml", "problem.yaml",
                                   "state"]))
    if target in ("attempts.jsonl", "steps.jsonl"):
        how = draw(st.sampled_from(["cut", "junk", "drop line", "swap step"]))
        return target, how, draw(st.floats(0.0, 0.999)), draw(st.binary(min_size=1, max_size=40))
    if target == "checkpoint.json":
        how = draw(st.sampled_from(["cut", "junk", "delete", "counter", "random json"]))
        return target, how, draw(st.floats(0.0, 0.999)), draw(st.sampled_from(
            [b"{}", b"[]", b"null", b'{"step": "1"}', b'{"step": -1, "attempts_used": 0, "best_passed": 0, "wall_s": 0}']))
    if target in ("config.yaml", "problem.yaml"):
        how = draw(st.sampled_from(["cut", "junk", "delete", "edit"]))
        return target, how, draw(st.floats(0.01, 0.999)), draw(st.binary(min_size=1, max_size=40))
    return target, "delete", 0.0, b""


def corrupt(run: Path, target: str, how: str, where: float, junk: bytes) -> None:
    path = run / target
    if target == "state":
        shutil.rmtree(path)
        return
    raw = path.read_bytes()
    at = int(where * len(raw))
    if how == "cut":
        path.write_bytes(raw[:max(at, 1) - 1] if target.endswith(".jsonl") else raw[:at])
    elif how == "junk":
        if target.endswith(".jsonl"):  # inside a committed line (never just a torn tail)
            at = min(at, len(raw) - 2)
        path.write_bytes(raw[:at] + junk + b"\x00" + raw[at:])
    elif how == "delete":
        path.unlink()
    elif how == "drop line":
        lines = raw.splitlines(keepends=True)
        del lines[int(where * len(lines))]
        path.write_bytes(b"".join(lines))
    elif how == "swap step":
        lines = raw.splitlines(keepends=True)
        i = int(where * len(lines))
        rec = json.loads(lines[i])
        rec["step"] = rec["step"] + 5
        lines[i] = (json.dumps(rec) + "\n").encode()
        path.write_bytes(b"".join(lines))
    elif how == "counter":
        ck = json.loads(raw)
        key = ["step", "attempts_used"][int(where * 2)]
        ck[key] = ck[key] + 1 + int(where * 10)
        path.write_text(json.dumps(ck))
    elif how == "random json":
        path.write_bytes(junk)
    elif how == "edit":
        text = raw.decode()
        if target == "config.yaml":
            head = yaml.safe_load(text)
            head["config"]["lr"] = round(0.5 * where, 6) or 0.3
            path.write_text(yaml.safe_dump(head, sort_keys=False))
        else:
            path.write_text(text + f"\n# edited {where}\n")


@settings(max_examples=N_RUNS, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=corruptions())
def test_damaged_runs_are_refused_and_left_as_they_were(arena, stopped_run, case):
    target, how, where, junk = case
    event(f"{target}: {how}")
    run = arena / "victim" / "run"
    if run.parent.exists():
        shutil.rmtree(run.parent)
    shutil.copytree(stopped_run, run)
    corrupt(run, target, how, where, junk)
    before = digest(run.parent)
    code, lines = sdpo(["solve", "--resume", run])
    assert_refused(code, lines, str(run), case)
    assert digest(run.parent) == before, case
