"""Red team, part 2: what a reply can see and touch, in every isolation mode this machine has.

Hidden tests read from disk (wherever a user keeps problems, and from run directories), from sdpo's
command line, or from a concurrent run; writes into another run's memory; processes and files left
after `kill -9` of sdpo; a fork flood beside a concurrent correct reply. Each test asserts that the
attack failed AND that a correct reply still passes. Forged verdicts: test_redteam.py.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from isolation_modes import FILE_HIDING_MODES, MODES, use_mode
from redteam_attacks import CORRECT, fence

from sdpo_cli.problem import Problem, load_problem
from sdpo_cli.verify import checkers, sandbox, verify, verify_many

ROOT = Path(__file__).resolve().parents[1]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="per-program uids need root")
DOUBLE = fence("print(2 * int(input()) + 1)")

# Reads stdin n, then looks for n in every readable problem-like file and in every visible process's
# command line and environment; if it finds the test, it prints the expected output from there.
SNOOP = r"""
import os, re, sys
n = input().strip()
roots = sys.argv[1:] or ['/']
found, scanned = [], 0
def look(path, text):
    m = re.search(r'input: "' + re.escape(n) + r'\\n", output: "(\d+)', text)
    if m:
        found.append(path)
        return m.group(1)
def files():
    for root in roots:
        for top, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.join(top, d) not in ('/proc', '/sys', '/dev')]
            for name in names:
                if name.endswith(('.yaml', '.yml', '.json', '.jsonl', '.txt')):
                    yield os.path.join(top, name)
    for pid in os.listdir('/proc') if roots == ['/'] else []:
        for what in ('cmdline', 'environ'):
            try:
                for part in open(f'/proc/{pid}/{what}', 'rb').read().split(b'\0'):
                    part = part.decode(errors='replace')
                    if part.endswith(('.yaml', '.yml')) and os.path.isfile(part):
                        yield part
            except OSError:
                pass
answer = None
for path in files():
    try:
        if os.path.getsize(path) < 1 << 20:
            scanned += 1
            answer = look(path, open(path, errors='replace').read()) or answer
    except OSError:
        pass
print(f'scanned {scanned} files; found: {found}', file=sys.stderr)
print(answer or n)
"""


def _doubling(pid: str, marker: int) -> str:
    return (f"id: {pid}\ntitle: double\nprompt: Print 2n + 1 for the integer n read from stdin.\nlimits: {{time_s: 10}}\n"
            "verifier:\n  kind: stdio\n  tests:\n"
            '    - {input: "2\\n", output: "5\\n"}\n'
            f'    - {{input: "{marker}\\n", output: "{2 * marker + 1}\\n", hidden: true}}\n')


def _world_readable_dir(parent: str, prefix: str) -> Path | None:
    try:
        d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except OSError:
        return None
    d.chmod(0o755)
    return d


@pytest.fixture(scope="module")
def places():
    """{place: problem file} with a hidden test (a random marker input), world-readable wherever users
    keep problems."""
    made, out = [], {}
    for place, parent in [("project checkout", str(ROOT)), ("home", "/home"), ("srv", "/srv"), ("tmp", "/tmp"),
                          ("opt", "/opt"), ("run directory", "/tmp")]:
        d = _world_readable_dir(parent, ".sdpo-redteam-")
        if d is None:
            continue
        made.append(d)
        marker = random.randrange(10**11, 10**12)
        if place == "run directory":  # runs/<run>/problem.yaml, as `sdpo solve` writes it
            d = d / "runs" / "20260101-000000_double"
            d.mkdir(parents=True)
            for p in (d, d.parent):
                p.chmod(0o755)
            path = d / "problem.yaml"
        else:
            path = d / "double.yaml"
        path.write_text(_doubling("double", marker))
        path.chmod(0o644)
        out[place] = path
    yield out
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def test_the_snooping_reply_finds_the_tests_when_nothing_hides_them(places, tmp_path):
    """Control: outside any sandbox, the same reply does read the hidden test and pass it."""
    path = places["tmp"]
    marker = _marker(path)
    (tmp_path / "snoop.py").write_text(SNOOP)
    res = subprocess.run([sys.executable, str(tmp_path / "snoop.py"), str(path.parent)], input=f"{marker}\n",
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == str(2 * int(marker) + 1) and str(path) in res.stderr


def _marker(path: Path) -> int:
    return int(path.read_text().split('input: "')[2].split("\\n")[0])


@pytest.mark.parametrize("mode", FILE_HIDING_MODES)
def test_hidden_tests_cannot_be_read_where_users_keep_problems(places, mode):
    """One hidden test per place, its input the marker of the file kept there: the reply gets the
    marker on stdin and searches everything it can read for it."""
    tests = [{"input": "2\n", "output": "5\n"}] + [
        {"input": f"{_marker(path)}\n", "output": f"{2 * _marker(path) + 1}\n", "hidden": True} for path in places.values()]
    p = Problem.model_validate({"id": "double", "title": "t", "prompt": "q", "limits": {"time_s": 10},
                                "verifier": {"kind": "stdio", "tests": tests}})
    with use_mode(mode):
        snoop, good = verify_many(p, [(fence(SNOOP), False), (DOUBLE, False)])
    assert len(places) >= 3 and not snoop.passed and snoop.n_passed == 0
    for place, outcome in zip(places, snoop.tests[1:]):
        assert outcome.status == "wrong_answer", place
        assert "found: []" in outcome.debug and "scanned 0 files" not in outcome.debug, (place, outcome.debug)
    assert good.passed


@pytest.mark.parametrize("mode", FILE_HIDING_MODES)
def test_shipped_problems_cannot_be_read(mode):
    """problems/ in the checkout: the reply looks for the problem's id in every file it can read."""
    p = load_problem(ROOT / "problems/stdio_second_largest.yaml")
    look = fence("import os, sys\nneedle = 'stdio-second' + '-largest'\nhits = []\n"
                 "for top, dirs, names in os.walk('/'):\n"
                 "    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ('/proc', '/sys', '/dev')]\n"
                 "    for name in names:\n"
                 "        if name.endswith(('.yaml', '.yml', '.json', '.md')):\n"
                 "            try:\n                if needle in open(os.path.join(top, name), errors='ignore').read():\n"
                 "                    hits.append(name)\n            except OSError:\n                pass\n"
                 "print('hits:', hits, file=sys.stderr)\nprint(-1)\n")
    with use_mode(mode):
        bad, good = verify_many(p, [(look, False), (CORRECT["stdio"], False)])
    assert not bad.passed and all("hits: []" in t.debug for t in bad.tests), bad.tests[0].debug
    assert good.passed


@pytest.mark.parametrize("mode", FILE_HIDING_MODES)
def test_sdpo_command_line_does_not_lead_to_the_problem_file(places, tmp_path, mode):
    """`sdpo verify /srv/.../double.yaml`: the path is in sdpo's command line, which the reply looks for
    in /proc (and falls back to walking the file system)."""
    path = places.get("srv") or places["tmp"]
    (tmp_path / "snoop.txt").write_text(fence(SNOOP))
    (tmp_path / "good.txt").write_text(DOUBLE)
    env = {**os.environ, "SDPO_SANDBOX": mode, "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "sdpo_cli", "verify", str(path)]
    bad = subprocess.run(cmd + [str(tmp_path / "snoop.txt"), "--json"], capture_output=True, text=True, env=env, timeout=120)
    good = subprocess.run(cmd + [str(tmp_path / "good.txt"), "--json"], capture_output=True, text=True, env=env, timeout=120)
    snooped = json.loads(bad.stdout)
    assert bad.returncode == 1 and snooped["n_passed"] == 0
    assert "found: []" in snooped["feedback"] and "scanned 0 files" not in snooped["feedback"]  # its debug output
    assert good.returncode == 0 and json.loads(good.stdout)["passed"]


def test_sandbox_root_is_the_allow_list_only():
    for mode in FILE_HIDING_MODES:
        with use_mode(mode):
            probe = ("import os, sys\n"
                     f"paths = {[str(ROOT), str(ROOT / 'src'), '/home', '/srv', '/work', '/root/.cache', '/opt', '/run', sys.prefix, '/etc/passwd']!r}\n"
                     "print(sorted(os.listdir('/')))\nprint([p for p in paths if os.path.exists(p)])\n"
                     "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\nprint(os.getuid())\n"
                     "try:\n    import yaml\n    print('site-packages visible')\nexcept ImportError:\n    print('stdlib only')\n")
            a, b = sandbox.run_python(probe), sandbox.run_python(probe)
        top, visible, pids, uid, lib = a.stdout.splitlines()
        assert set(eval(top)) <= {"usr", "lib", "lib64", "lib32", "libx32", "etc", "proc", "dev", "tmp", "sandbox", "root"}
        assert eval(visible) == [] and lib == "stdlib only", a.stdout
        assert len(eval(pids)) <= 3  # the namespace's PID 1 and the program: no host process
        if os.geteuid() == 0:
            assert int(uid) != int(b.stdout.splitlines()[3])  # two programs, two uids
            assert int(uid) >= sandbox._uid_base()


# --------------------------------------------------------------------------------------------------
# Concurrent runs

VICTIM_REPLY = fence("import time\nn = int(input())\ntime.sleep(2)\nprint(2 * n)")
# Looks at every process it can see: command lines, environments, open files (a victim's stdin),
# memory (tries to open it for writing), and every file in the shared-looking folders.
ATTACKER_REPLY = fence(r"""
import glob, os, sys, time, signal
time.sleep(0.8)
me = os.getpid()
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
writable, found, seen = [], [], [0]


def look(s):  # checked as read, not kept: a host /tmp of many GB would exhaust the memory limit
    seen[0] += 1
    if MARKER in s:
        found.append(1)


for pid in pids:
    if pid == me:
        continue
    for what in ('cmdline', 'environ'):
        try:
            look(open(f'/proc/{pid}/{what}', 'rb').read().decode(errors='replace'))
        except OSError:
            pass
    try:
        for fd in os.listdir(f'/proc/{pid}/fd'):
            if os.path.isfile(f'/proc/{pid}/fd/{fd}'):  # files and memfds (a pipe would block)
                look(open(f'/proc/{pid}/fd/{fd}', 'rb').read(1 << 16).decode(errors='replace'))
    except OSError:
        pass
    try:
        open(f'/proc/{pid}/mem', 'r+b').close()
        writable.append(pid)
    except OSError:
        pass
# sdpo's own work folders first (where a victim's tests would sit), then the rest, until the deadline
# (the 5 s limit): a host /tmp of many GB is not read to its end.
deadline = time.monotonic() + 3.0
roots = sorted(glob.glob('/tmp/sdpo*')) + ['/dev/shm', '/var/tmp', '/run', '/home', '/srv', '/tmp']
for root in roots:
    for top, dirs, names in os.walk(root):
        if time.monotonic() > deadline:
            break
        for name in names:
            try:
                if os.path.isfile(os.path.join(top, name)):
                    look(open(os.path.join(top, name), 'rb').read(1 << 16).decode(errors='replace'))
            except OSError:
                pass
for pid in pids:  # every process it can see, but itself
    try:
        if pid != me:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
print('pids', len(pids), 'writable', writable, 'seen', seen[0], file=sys.stderr)
print('MARKER' if found else 'clean', file=sys.stderr)
print(2 * int(input()))
""")


@pytest.mark.parametrize("mode", MODES)
def test_a_concurrent_run_cannot_read_or_write_another(mode):
    marker = random.randrange(10**11, 10**12)
    hidden = mode != "rlimits"  # rlimits refuses hidden tests; its marker sits in a visible test
    victim = Problem.model_validate({"id": "victim", "title": "t", "prompt": "q", "limits": {"time_s": 5}, "verifier": {
        "kind": "stdio", "tests": [{"input": f"{marker}\n", "output": f"{2 * marker}\n", "hidden": hidden}]}})
    attacker = Problem.model_validate({"id": "attacker", "title": "t", "prompt": "q", "limits": {"time_s": 5}, "verifier": {
        "kind": "stdio", "tests": [{"input": "3\n", "output": "6\n"}]}})
    out = {}
    with use_mode(mode):
        t = threading.Thread(target=lambda: out.update(victim=verify(victim, VICTIM_REPLY)))
        t.start()
        time.sleep(0.3)
        half = len(str(marker)) // 2  # the marker is not written whole into the attacker's own file
        needle = f"'{str(marker)[:half]}' + '{str(marker)[half:]}' in s"
        out["attacker"] = verify(attacker, ATTACKER_REPLY.replace("MARKER in s", needle))
        t.join(timeout=60)
    report = out["attacker"].tests[0].debug
    assert "writable []" in report and "clean" in report, report
    if mode != "rlimits":  # PID namespace: no other process is visible at all
        assert int(report.split("pids ")[1].split()[0]) <= 3, report
    assert out["victim"].passed  # not killed, not disturbed
    assert out["attacker"].passed  # the attack code does compute 2n: it is the spying that failed


@needs_root
@pytest.mark.parametrize("mode", MODES)
def test_a_fork_flood_does_not_fail_a_concurrent_correct_reply(mode, monkeypatch):
    """A reply that holds every process it may have, beside one that needs to fork: the limit counts
    per program (one uid each), so only the flood is stopped."""
    p = Problem.model_validate({"id": "fork", "title": "t", "prompt": "q", "limits": {"time_s": 3}, "verifier": {
        "kind": "stdio", "tests": [{"input": "5\n", "output": "10\n"}]}})
    flood = fence("import os, time\nend = time.time() + 1.5\nwhile time.time() < end:\n    try:\n        if os.fork() == 0:\n"
                  "            time.sleep(30)\n            os._exit(0)\n    except OSError:\n        time.sleep(0.01)\nprint('flood')")
    forker = fence("import os, time\ntime.sleep(0.5)\nfor _ in range(40):\n    pid = os.fork()\n    if pid == 0:\n"
                   "        os._exit(0)\n    os.waitpid(pid, 0)\nprint(2 * int(input()))")
    monkeypatch.setenv("SDPO_VERIFY_WORKERS", "4")
    monkeypatch.setattr(checkers, "_POOL", None)  # a pool of 4: flood and forker run at the same time
    with use_mode(mode):
        bad, good = verify_many(p, [(flood, False), (forker, False)])
    checkers._POOL = None
    assert not bad.passed
    assert good.passed, good.feedback


# --------------------------------------------------------------------------------------------------
# kill -9 of sdpo


def _uids_in(base: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and base <= os.stat(f"/proc/{entry}").st_uid < base + sandbox.UID_SLOTS:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().split(") ", 1)[1][0] != "Z":  # zombies hold nothing
                        pids.append(int(entry))
        except (OSError, IndexError):
            pass
    return pids


def _owned_by_range(path: str, base: int) -> bool:
    """Created by this test's sandboxes (other sessions on the machine may add their own files)."""
    try:
        return base <= os.stat(path).st_uid < base + sandbox.UID_SLOTS
    except OSError:
        return False


def _files_with(marker: str, since: float) -> list[str]:
    hits = []
    for root in ("/tmp", "/dev/shm", "/var/tmp", "/run"):
        for top, _, names in os.walk(root):
            for name in names:
                path = os.path.join(top, name)
                try:
                    if os.path.getmtime(path) >= since and os.path.getsize(path) < 1 << 20:
                        with open(path, "rb") as f:
                            if marker.encode() in f.read():
                                hits.append(path)
                except OSError:
                    pass
    return hits


@needs_root
@pytest.mark.parametrize("mode", MODES)
def test_kill_9_of_sdpo_leaves_no_process_and_no_test_data(mode, tmp_path):
    marker = str(random.randrange(10**11, 10**12))
    hidden = "true" if mode != "rlimits" else "false"
    problem = tmp_path / "p.yaml"
    problem.write_text("id: k\ntitle: t\nprompt: q\nlimits: {time_s: 30}\nverifier:\n  kind: function\n  name: f\n"
                       f"  tests:\n    - {{args: [{marker}], expected: 1, hidden: {hidden}}}\n")
    # Sandboxed processes that would outlive their parent if they could: children sleeping in the
    # background (rlimits mode cannot stop those, see the sandbox docstring: there the reply sleeps).
    body = ("import os, time\ndef f(n):\n    for _ in range(3):\n        if os.fork() == 0:\n            time.sleep(120)\n"
            "    time.sleep(120)\n") if mode != "rlimits" else "import time\ndef f(n):\n    time.sleep(120)\n"
    (tmp_path / "r.txt").write_text(fence(body))
    base = (1 << 29) + random.randrange(4096) * sandbox.UID_SLOTS  # this test's own uid range
    env = {**os.environ, "SDPO_SANDBOX": mode, "SDPO_UID_BASE": str(base), "NO_COLOR": "1"}
    tmp_before = set(os.listdir("/tmp"))
    t0 = time.time() - 1
    proc = subprocess.Popen([sys.executable, "-m", "sdpo_cli", "verify", str(problem), str(tmp_path / "r.txt")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    want = 5 if mode != "rlimits" else 2  # judge + reply (+ its children)
    while len(_uids_in(base)) < want and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert len(_uids_in(base)) >= want, "the sandboxed processes never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while _uids_in(base) and time.time() < deadline:
        time.sleep(0.1)
    assert _uids_in(base) == []
    ours = [d for d in set(os.listdir("/tmp")) - tmp_before if _owned_by_range(f"/tmp/{d}", base)]
    assert ours == [] or mode == "rlimits"  # rlimits: the killed run's work folder (its code, no test data)
    assert [f for f in _files_with(marker, t0) if not f.startswith(str(tmp_path))] == []
    # A fresh sdpo still verifies (no slot, lock or mount left in its way).
    good = tmp_path / "g.txt"
    good.write_text(fence("def f(n):\n    return 1"))
    res = subprocess.run([sys.executable, "-m", "sdpo_cli", "verify", str(problem), str(good)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # ... and in rlimits mode it swept the killed run's work folders away.
    assert [d for d in set(os.listdir("/tmp")) - tmp_before if _owned_by_range(f"/tmp/{d}", base)] == []
