"""Run ONE untrusted program, contained. Knows nothing about problems, tests or feedback.

    res = run_python("print(input()[::-1])", stdin="abc\\n", limits=Limits(time_s=2))
    res.status, res.stdout          # "ok", "cba\\n"

Model-written code is hostile. Each run gets its own process tree, built as an exec chain with no
Python in between (no preexec_fn, which is unsafe in the verifier's worker threads):

    [bwrap ... | unshare --net --pid --fork --kill-child]  prlimit ...  [setpriv --reuid=65534 ...]  argv

What IS protected
  * Time: RLIMIT_CPU (time_s, hard limit +1 s) and a wall-clock limit (2 * time_s + 1 s) after which the
    whole process group, and with it the PID namespace, is SIGKILLed. Reading stdin forever is not
    possible: stdin is a file that ends (EOF).
  * Memory: RLIMIT_AS (memory_mb). File size: RLIMIT_FSIZE. Open files: RLIMIT_NOFILE. No core dumps.
  * Output: stdout and stderr are read while the program runs and the program is killed as soon as
    either passes `output_bytes`; nothing beyond the cap is kept in memory.
  * Processes: as root (our machines and CI), the program runs as uid/gid 65534 (nobody) so that
    RLIMIT_NPROC (`processes`) is enforced (the kernel ignores it for root): fork bombs stop at the
    limit, and in a PID namespace every process dies with the run. All runs share that one uid, so a
    fork bomb can briefly starve a concurrent run of processes (it fails, it is not harmed otherwise).
    Under bwrap, closed directories such as /root are replaced by an empty tmpfs with only the Python
    interpreter's own tree bound back read-only. Without bwrap, when this interpreter lives in such a
    closed directory, untrusted code runs on the system's python3.X of the same minor version
    (standard library only); if there is none, it keeps root's uid (no NPROC limit, and no
    protection of the file system: install bubblewrap).
  * Environment: scrubbed; the program sees only PATH, LANG, PYTHONHASHSEED, OMP_NUM_THREADS, HOME
    and TMPDIR (both the run's own directory). No secrets from the verifier's environment.
  * Files: a fresh temporary working directory per run, deleted afterwards. With bubblewrap ("bwrap")
    the root file system is read-only and /tmp, /var/tmp and /dev/shm are private, empty tmpfs; as
    nobody, nothing outside the working directory and world-writable places can be written anyway.
  * Network: bwrap --unshare-net or `unshare --net`: a network namespace with no interfaces up, so
    connections fail with "Network is unreachable".
  * The verifier itself: the program cannot signal it (different uid; in a PID namespace it cannot
    even see it), and every failure comes back as an ExecResult, never an exception.

What is NOT protected
  * Reading files that are world-readable (the program can read the Python installation, /etc, ...).
  * In `unshare` mode /tmp is the host's /tmp (no mount namespace): the program can leave files there.
  * Kernel exploits, CPU side channels, and exhausting the disk through world-writable directories
    when neither bwrap nor root is available.
  * Without bwrap and unshare (isolation() == "rlimits"): there is NO network isolation, and a
    program that escapes its process group (setsid) can outlive the run. `sdpo check` and the README
    warn about this mode. Without root, RLIMIT_NPROC applies to the user's own process count.

Isolation is detected once: bwrap if it runs here, else unshare (needs root or unprivileged user
namespaces), else rlimits only. SDPO_SANDBOX=bwrap|unshare|rlimits forces a mode (tests use it).
"""

from __future__ import annotations

import functools
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

NOBODY = 65534
_BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Limits:
    time_s: float = 6.0  # CPU seconds (RLIMIT_CPU); wall clock = 2 * time_s + 1 (the machine is shared)
    memory_mb: int = 1024  # RLIMIT_AS
    output_bytes: int = 1 << 20  # cap on captured stdout and on stderr, each
    file_size_mb: int = 16  # RLIMIT_FSIZE
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 64  # RLIMIT_NPROC (enforced because we drop root, see module docstring)

    @property
    def wall_s(self) -> float:
        return 2 * self.time_s + 1


@dataclass
class ExecResult:
    status: str  # ok | error | timeout | memory | output_limit
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float
    isolation: str = ""


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache
def isolation() -> str:
    """The isolation this machine gives: "bwrap", "unshare" or "rlimits" (detected once)."""
    forced = os.environ.get("SDPO_SANDBOX")
    if forced in ("bwrap", "unshare", "rlimits"):
        return forced
    if shutil.which("bwrap") and _works(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                                         "--unshare-net", "--unshare-pid", "true"]):
        return "bwrap"
    if shutil.which("unshare") and _works(["unshare", "--net", "--pid", "--fork", "--kill-child", "true"]):
        return "unshare"
    return "rlimits"


def _reachable_by_others(path: str) -> bool:
    """Can uid 65534 reach `path` (o+x on every directory above it)?"""
    p = os.path.realpath(path)
    while p != "/":
        p = os.path.dirname(p)
        if not os.stat(p).st_mode & 0o001:
            return False
    return True


@functools.cache
def _private_dirs() -> tuple[str, ...]:
    """Closed directories (e.g. /root, mode 700) that hold the interpreter: bwrap hides them behind an
    empty tmpfs and binds back only the interpreter's own tree, read-only (this also hides the rest
    of /root from the program)."""
    return tuple(d for d in ("/root", "/home") if os.path.isdir(d) and not os.stat(d).st_mode & 0o001)


_SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")  # replaced by empty private tmpfs under bwrap


def _masked() -> tuple[str, ...]:
    return _private_dirs() + _SCRATCH


def _under(path: str, dirs: tuple[str, ...]) -> bool:
    return any(path.startswith(d + "/") for d in dirs)


def _visible_dirs(readable: tuple[str, ...] = ()) -> list[str]:
    """Directories the program needs that bwrap would hide (under /root, /tmp, ...): the interpreter's
    trees (a venv may live under /tmp, e.g. a CI checkout) and the caller's `readable` paths."""
    exe, masked = sys.executable, _masked()
    dirs = {sys.base_prefix, sys.prefix, os.path.dirname(exe), os.path.dirname(os.path.realpath(exe)),
            *(os.path.realpath(r) for r in readable)}
    picked = tuple(sorted(d for d in dirs if _under(d, masked) and os.path.exists(d)))
    # A directory inside another picked one is bound with it already.
    return [d for d in picked if not _under(d, picked)]


def _parents(path: str) -> list[str]:
    """/a/b/c -> ["/a", "/a/b"] (top down)."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


@functools.cache
def interpreter(mode: str | None = None) -> str:
    """The Python that runs untrusted code: this interpreter, unless (without bwrap) uid 65534 cannot
    reach it, in which case the system's python3.X of the same minor version (stdlib only)."""
    mode = mode or isolation()
    if mode == "bwrap" or os.geteuid() != 0 or _reachable_by_others(sys.executable):
        return sys.executable
    same = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    return same if os.path.exists(same) and _reachable_by_others(same) else sys.executable


def _drop_root(mode: str) -> bool:
    """Run as nobody when we are root and the interpreter stays reachable (always under bwrap)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    return mode == "bwrap" or _reachable_by_others(interpreter(mode))


def _command(argv: list[str], workdir: str, limits: Limits, mode: str, readable: tuple[str, ...] = ()) -> list[str]:
    cpu = max(1, int(limits.time_s + 0.999))
    chain = ["prlimit", f"--cpu={cpu}:{cpu + 1}", f"--as={limits.memory_mb << 20}",
             f"--fsize={limits.file_size_mb << 20}", f"--nofile={limits.open_files}", "--core=0"]
    if _drop_root(mode):
        chain += [f"--nproc={limits.processes}", "--", "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                  "--clear-groups"]
    chain += ["--", *argv] if chain[-1] != "--clear-groups" else argv
    if mode == "bwrap":
        masked = _masked()
        hide = [a for d in masked if os.path.isdir(d) for a in ("--tmpfs", d)]
        rebind = []
        for d in _visible_dirs(readable):
            parents = [p for p in _parents(d) if _under(p, masked)]
            rebind += [a for p in parents for a in ("--perms", "0755", "--dir", p)] + ["--ro-bind", d, d]
        return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *hide, *rebind,
                "--bind", workdir, workdir, "--unshare-net", "--unshare-pid", "--unshare-ipc",
                "--die-with-parent", "--new-session", "--chdir", workdir, *chain]
    if mode == "unshare":
        # A shell as PID 1 of the namespace: the kernel drops signals without a handler sent to PID 1,
        # so the program itself must not be PID 1 (`; exit $?` stops sh from exec-ing it directly).
        return ["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", '"$@"; exit $?', "sh", *chain]
    return chain


def _env(workdir: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = {"PATH": _BASE_PATH, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
           "HOME": workdir, "TMPDIR": workdir, "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(extra or {})
    return env


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_program(argv: list[str], *, stdin: str | bytes = b"", files: dict[str, str | bytes] | None = None,
                limits: Limits = Limits(), env: dict[str, str] | None = None,
                readable: tuple[str, ...] = ()) -> ExecResult:
    """Run `argv` sandboxed in a fresh temp dir holding `files`. Never raises for what the program does.

    `readable`: directories the program must be able to read although bwrap hides their parent
    (e.g. a judge script's folder under /tmp); they are bound read-only.
    """
    mode = isolation()
    workdir = tempfile.mkdtemp(prefix="sdpo-run-")
    t0 = time.perf_counter()
    try:
        for name, content in {**(files or {}), ".stdin": stdin}.items():
            data = content.encode() if isinstance(content, str) else content
            with open(os.path.join(workdir, name), "wb") as f:
                f.write(data)
        if _drop_root(mode):
            os.chmod(workdir, 0o700)
            for p in [workdir] + [os.path.join(workdir, n) for n in os.listdir(workdir)]:
                os.chown(p, NOBODY, NOBODY)
        with open(os.path.join(workdir, ".stdin"), "rb") as stdin_f:
            try:
                proc = subprocess.Popen(_command(argv, workdir, limits, mode, tuple(readable)), cwd=workdir, stdin=stdin_f,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=_env(workdir, env), start_new_session=True)
            except OSError as e:
                return ExecResult("error", None, "", f"could not start the program: {e}", 0.0, 0.0, mode)
        out, err, status = _collect(proc, limits)
        _kill(proc)  # whatever is left of the group (background children)
        _, wait_status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
        cpu = usage.ru_utime + usage.ru_stime
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stdout = out.decode("utf-8", errors="replace")
    stderr = err.decode("utf-8", errors="replace")
    rc = proc.returncode
    if status is None:
        status = _classify(rc, stderr, limits, cpu)
    return ExecResult(status, rc, stdout, stderr, time.perf_counter() - t0, cpu, mode)


def _collect(proc: subprocess.Popen, limits: Limits) -> tuple[bytes, bytes, str | None]:
    """Read both pipes until EOF, the wall limit or the output cap. Returns (stdout, stderr, forced status)."""
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    sel = selectors.DefaultSelector()
    for f in bufs:
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    deadline = time.monotonic() + limits.wall_s
    status = None
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                status = "timeout"
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.fileobj]
                room = limits.output_bytes - len(buf)
                buf += chunk[: max(room, 0)]
                if len(chunk) > room:
                    status = "output_limit"
                    break
            if status:
                break
    finally:
        sel.close()
        if status:
            _kill(proc)
        for f in bufs:
            f.close()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), status


def _classify(rc: int, stderr: str, limits: Limits, cpu_s: float) -> str:
    if rc == 0:
        return "ok"
    tail = stderr[-2000:]
    if "MemoryError" in tail or "Cannot allocate memory" in tail or "std::bad_alloc" in tail:
        return "memory"
    # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one. bwrap reports 128 + signal, and
    # unshare may report its own error instead, so the CPU time used is the reliable sign.
    if rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU) or cpu_s >= limits.time_s * 0.9:
        return "timeout"
    if "File too large" in tail or rc in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        return "output_limit"
    return "error"


def run_python(code: str, *, stdin: str | bytes = "", files: dict[str, str | bytes] | None = None,
               limits: Limits = Limits(), args: tuple[str, ...] = ()) -> ExecResult:
    """Write `code` to solution.py in the run's directory and run it with this interpreter (`-I`)."""
    return run_program([interpreter(), "-I", "solution.py", *args], stdin=stdin,
                       files={**(files or {}), "solution.py": code}, limits=limits)
