"""The runner on a real local Ray cluster (marker `ray`; `make test` runs this tier, plain pytest does not).

Ray starts inside the test on 127.0.0.1 with 2 CPUs (ray_runner.run_jobs_ray, or `sdpo compare --ray` in a
subprocess), workers load the tiny model from a folder and replay scripted answers. Checked:
  * a 2 problems x 2 methods x 2 seeds grid on Ray gives exactly the in-process report's numbers;
  * a worker killed with SIGKILL mid-job is replaced, the job resumes from its checkpoint, and the grid
    ends with the same attempts as the in-process run (none lost, none counted twice);
  * Ctrl-C on the driver stops the grid (exit 130) and re-running the same command resumes it;
  * every TCP connection of the cluster stays on loopback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Ray reads its single-node switch when it is imported: set it as ray_runner.import_ray(local=True) does,
# before this module's own import, or the in-process instance below would advertise the machine's
# network address and its processes would talk over it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from typer.testing import CliRunner  # noqa: E402

from sdpo_cli.cli import app  # noqa: E402
from sdpo_cli.runner import existing_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# attempts 3, 7, 11, ... answer 20 (answer-apples passes); `never` (answer 99) is never solved.
SCRIPT = ["Answer: 7", "Answer: 1", "Answer: 20", "Answer: 3"]
PROBLEMS = [str(ROOT / "problems/answer_arith.yaml")]


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    model, tok = tiny_model
    model.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    (tmp / "never.yaml").write_text("id: never\ntitle: t\nprompt: What is 99?\nverifier: {kind: answer, answer: 99}\n")
    (tmp / "script.json").write_text(json.dumps(SCRIPT))
    args = ["--model", str(tmp / "model"), "--backend", "scripted", "--device", "cpu", "--budget", "6",
            "--batch-size", "2", "--max-new-tokens", "16", "--seeds", "2", "--samples", "6",
            "--baseline", "multi-turn"]
    env = {"SDPO_SCRIPT": str(tmp / "script.json"), "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    return tmp, [*PROBLEMS, str(tmp / "never.yaml"), *args], env


def numbers(report: dict) -> dict:
    """The report without what legitimately differs between two runs of one plan (paths, notes)."""
    if isinstance(report, dict):
        return {k: numbers(v) for k, v in report.items() if k not in ("runs", "notes", "directory")}
    if isinstance(report, list):
        return [numbers(v) for v in report]
    return report


def attempts_of(out: Path) -> dict:
    return {key: [(a["attempt"], a["text"], a["passed"]) for a in run.attempts()]
            for key, run in existing_runs(out / "runs").items()}


@pytest.fixture(scope="module")
def in_process(setup):
    tmp, args, env = setup
    out = tmp / "local"
    r = CliRunner().invoke(app, ["compare", *args, "--out", str(out), "--json"], env=env)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out, json.loads(r.stdout)


def _sdpo(*args, env, **kw):
    return subprocess.run([sys.executable, "-m", "sdpo_cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600, **kw)


def _non_loopback_connections() -> list[str]:
    out = subprocess.run(["ss", "-tnH"], capture_output=True, text=True).stdout
    bad = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 5 and not all(re.search(r"127\.0\.0\.1|\[::1\]|\[::ffff:127\.", c) for c in cols[3:5]):
            bad.append(line)
    return bad


def test_ray_grid_equals_the_in_process_grid_and_stays_on_loopback(setup, in_process):
    tmp, args, env = setup
    local_out, local_report = in_process
    out = tmp / "ray"
    proc = subprocess.Popen([sys.executable, "-m", "sdpo_cli", "compare", *args, "--out", str(out), "--json",
                             "--ray"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    seen_bad: list[str] = []
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:  # watch the cluster's connections while it runs
        seen_bad += _non_loopback_connections()
        time.sleep(0.5)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-3000:]
    assert "ray: started a local instance" in stderr and "ray worker pid" in stderr
    assert numbers(json.loads(stdout)) == numbers(local_report)
    assert attempts_of(out) == attempts_of(local_out)
    assert not seen_bad, seen_bad[:5]


def test_a_worker_killed_mid_job_is_retried_and_nothing_is_lost(setup, in_process):
    """kill -9 of the worker running an SDPO job after its first step: the job resumes elsewhere."""
    from sdpo_cli.compare import plan_jobs, prepare
    from sdpo_cli.config import fill_auto, make_config
    from sdpo_cli.events import Done, Error, Start, Step
    from sdpo_cli.ray_runner import run_jobs_ray

    tmp, args, env = setup
    local_out, _ = in_process
    os.environ.update(env)  # the workers read SDPO_SCRIPT and OMP_NUM_THREADS from the driver's environment
    cfg = fill_auto(make_config(dict(model=str(tmp / "model"), backend="scripted", device="cpu", budget=6,
                                     batch_size=2, max_new_tokens=16)))
    out, spec, problems = prepare([Path(p) for p in PROBLEMS] + [tmp / "never.yaml"], out=tmp / "killed",
                                  resume=False, baselines=["multi-turn"], seeds=2, samples=6, variant=None,
                                  window_tokens=None, cfg=cfg, given=set())
    jobs, _ = plan_jobs(out, spec, problems)
    victim, pids, killed, errors, done = ("never", "sdpo", 1), {}, False, [], []
    # Every sampling call takes 0.5 s, so the victim's steps 1 and 2 are still to come when the driver
    # sees its step 0 (without it the tiny job could finish before the event arrived: a kill after the end).
    os.environ["SDPO_SCRIPT_DELAY_S"] = "0.5"
    try:
        for ev in run_jobs_ray(jobs, num_cpus=2):
            if isinstance(ev, Start):
                pids[tuple(ev.job)] = ev.worker_pid
            elif isinstance(ev, Step) and tuple(ev.job) == victim and not killed:
                os.kill(pids[victim], signal.SIGKILL)  # mid-job: steps 1 and 2 are still to come
                killed = True
            elif isinstance(ev, Error):
                errors.append(ev)
            elif isinstance(ev, Done):
                done.append(tuple(ev.job))
    finally:
        os.environ.pop("SDPO_SCRIPT_DELAY_S", None)
    assert killed and len(errors) == 1 and "worker died" in errors[0].message
    assert sorted(done) == sorted(tuple(j.key) for j in jobs)  # every job finished, the victim once
    assert attempts_of(out) == attempts_of(local_out)  # no attempt lost or counted twice
    run = existing_runs(out / "runs")[victim]
    assert [s["step"] for s in run.steps()] == [0, 1, 2] and run.summary()["attempts_used"] == 6


def test_ctrl_c_stops_the_grid_and_rerunning_resumes_it(setup, in_process):
    tmp, args, env = setup
    _, local_report = in_process
    out = tmp / "stopped"
    cmd = [sys.executable, "-m", "sdpo_cli", "compare", *args, "--out", str(out), "--ray"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 600
    while time.time() < deadline and not list(out.glob("runs/*/summary.json")):
        time.sleep(0.1)  # stop once the first run has finished and others are under way
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Resume with: sdpo compare --resume --out" in err, err[-3000:]
    finished = [r for r in existing_runs(out / "runs").values() if (r.summary() or {}).get("status") == "exhausted"
                or (r.summary() or {}).get("status") == "solved"]
    assert 0 < len(finished) < 10
    again = _sdpo("compare", "--resume", "--out", out, "--json", "--ray", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert numbers(json.loads(again.stdout)) == numbers(local_report)
