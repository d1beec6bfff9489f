"""The sandbox against hostile programs, for real: each case must end as a failed run with a clear
status or message, and the sandbox must keep working afterwards. Runs in every isolation mode this
machine offers (bwrap, unshare, and rlimits, which every machine has), forced through SDPO_SANDBOX."""

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from isolation_modes import MODES

from sdpo_cli.verify import sandbox
from sdpo_cli.verify.sandbox import Limits, run_python

ROOT_SRC = Path(__file__).resolve().parents[1] / "src"
FAST = Limits(time_s=1, memory_mb=256, output_bytes=1 << 16)


@pytest.fixture(params=MODES, autouse=True)
def mode(request, monkeypatch):
    monkeypatch.setenv("SDPO_SANDBOX", request.param)
    sandbox.reset()
    yield request.param
    sandbox.reset()


def _slot_uids() -> set[int]:
    """uids of the running processes that sit in the sandbox's uid range."""
    base, uids = sandbox._uid_base(), set()
    for entry in os.listdir("/proc"):
        try:
            uid = os.stat(f"/proc/{entry}").st_uid if entry.isdigit() else -1
        except OSError:
            continue
        if base <= uid < base + sandbox.UID_SLOTS:
            uids.add(uid)
    return uids


def still_works():
    res = run_python("print(sum(map(int, input().split())))", stdin="2 3\n", limits=FAST)
    assert (res.status, res.stdout) == ("ok", "5\n")


def test_round_trip_files_and_exit_codes():
    res = run_python("import sys; print(open('data.txt').read().strip(), input()); sys.exit(3)",
                     stdin="from stdin\n", files={"data.txt": "from file"}, limits=FAST)
    assert res.stdout == "from file from stdin\n" and res.returncode == 3 and res.status == "error"
    still_works()


def test_infinite_loop_times_out():
    res = run_python("while True: pass", limits=FAST)
    assert res.status == "timeout"
    still_works()


def test_sleeping_forever_hits_the_wall_clock():
    res = run_python("import time; time.sleep(1000)", limits=FAST)
    assert res.status == "timeout" and res.wall_s < FAST.wall_s + 2
    still_works()


def test_memory_bomb():
    res = run_python("x = bytearray(2 * 1024**3)", limits=FAST)
    assert res.status == "memory" and "MemoryError" in res.stderr
    still_works()


def test_fork_bomb_is_contained(mode, monkeypatch):
    monkeypatch.setenv("SDPO_UID_BASE", str((1 << 29) + random.randrange(4096) * sandbox.UID_SLOTS))  # ours alone
    res = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", limits=FAST)
    assert res.status == "timeout"
    # No survivor of the bomb may keep running under a sandbox uid (rlimits mode kills the group; a
    # child that left it could survive there, which the module docstring says).
    deadline = time.time() + 10
    while _slot_uids() and time.time() < deadline and mode != "rlimits":
        time.sleep(0.2)
    assert os.geteuid() != 0 or mode == "rlimits" or not _slot_uids()
    still_works()


def test_gigabytes_of_output_are_cut_off():
    res = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", limits=FAST)
    assert res.status == "output_limit" and len(res.stdout) <= FAST.output_bytes and res.wall_s < 5
    still_works()


def test_cannot_write_outside_its_directory(mode):
    res = run_python("open('/etc/sdpo_sandbox_escape', 'w').write('x')", limits=FAST)
    assert res.status == "error" and any(m in res.stderr for m in ("Read-only", "Permission denied", "No such file"))
    assert not os.path.exists("/etc/sdpo_sandbox_escape")
    ok = run_python("open('scratch.txt', 'w').write('fine'); print(open('scratch.txt').read())", limits=FAST)
    assert ok.stdout == "fine\n"
    still_works()


def test_no_network(mode):
    if mode == "rlimits":
        pytest.skip("rlimits mode has no network namespace (see the sandbox module docstring)")
    res = run_python("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)", limits=FAST)
    assert res.status == "error" and "Network is unreachable" in res.stderr
    still_works()


def test_environment_secret_is_not_visible(monkeypatch):
    monkeypatch.setenv("SDPO_TEST_SECRET", "hunter2")
    res = run_python("import os; print(sorted(os.environ)); print(os.environ.get('SDPO_TEST_SECRET'))", limits=FAST)
    assert "hunter2" not in res.stdout and "SDPO_TEST_SECRET" not in res.stdout
    still_works()


def test_killing_the_parent_does_not_hurt_the_verifier():
    code = "import os, signal\nfor pid in (os.getppid(), %d):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError as e:\n        print(e)" % os.getpid()
    res = run_python(code, limits=FAST)
    assert res.status in ("ok", "error")  # the verifier (this test process) is still here
    still_works()


def test_recursion_bomb_fails_and_is_reported():
    res = run_python("import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)", limits=FAST)
    assert res.status in ("error", "timeout", "memory") and res.returncode != 0
    still_works()


def test_reading_stdin_forever_gets_eof():
    res = run_python("while True:\n    input()", limits=FAST)
    assert res.status == "error" and "EOFError" in res.stderr
    still_works()


@pytest.fixture
def world_readable_tmp():
    """A directory right under /tmp readable by the sandbox user (pytest's own tmp dirs are mode 700)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="sdpo-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_judge_and_interpreter_under_tmp_stay_visible(world_readable_tmp, mode):
    """bwrap hides the host's /tmp; a CI checkout (venv + problem files) may live there."""
    import sys
    import sysconfig

    tmp_path = world_readable_tmp

    (tmp_path / "judge.py").write_text("import sys\nsys.exit(0 if open(sys.argv[-1]).read().strip() == 'yes' else 1)\n")
    (tmp_path / "p.yaml").write_text("id: j\ntitle: t\nprompt: q\nverifier: {kind: command, command: [python3, judge.py], send: response}\n")
    from sdpo_cli.problem import load_problem
    from sdpo_cli.verify import verify

    p = load_problem(tmp_path / "p.yaml")
    assert verify(p, "yes").passed and not verify(p, "no").passed
    # An interpreter whose venv lives under /tmp runs untrusted code too.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    path = os.pathsep.join([str(ROOT_SRC), sysconfig.get_paths()["purelib"]])
    code = ("from sdpo_cli.verify.sandbox import run_python\n"
            "r = run_python('import sys; print(sys.prefix)')\nprint(r.status, r.stdout.strip(), r.stderr[-200:])")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path}, timeout=120)
    assert out.stdout.split()[:1] == ["ok"], out.stdout + out.stderr
