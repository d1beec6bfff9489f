"""Run untrusted programs, contained. Knows nothing about problems, tests or feedback.

    res = run_python("print(input()[::-1])", stdin="abc\\n", limits=Limits(time_s=2))
    res.status, res.stdout          # "ok", "cba\\n"
    box = spawn([interpreter(), "-I", "runner.py"], files={...}, limits=...)   # talk over its pipes

Model-written code is hostile. Each program gets its own process tree, built as an exec chain with
no Python in between (no preexec_fn, which is unsafe in the verifier's worker threads):

    bwrap ...                                  | setpriv --pdeathsig KILL unshare ... sh -c SETUP
      prlimit ...  setpriv --reuid=UID ...  argv

What a program sees (bwrap and unshare modes alike): a root file system built from an allow-list,
read-only: the system libraries (/usr/lib*, /lib*), the Python interpreter's own executable, standard
library and shared library (its site-packages replaced by an empty folder), /usr/bin/prlimit and
/usr/bin/setpriv, /etc/ld.so.cache and /etc/localtime; then a fresh /proc of its own PID namespace, a
minimal /dev, and three small private tmpfs: its work directory /sandbox (its files, copied in from
memory), /tmp and /dev/shm. Nothing else: no home or project directory, no problem file, no run
directory, no other run's files, no host process. The files never exist on the host's disk, and
the mount namespace, with every tmpfs in it, disappears with the program. Untrusted code runs on
the base interpreter (`sys._base_executable`) with `-I`: the standard library only, never a
virtual environment's site-packages (whose `__editable__` files would point at the project).
`command` judges (trusted, but fed model text) get a wider view: /usr, /etc and the directories
they name (`readable`), still without the rest of the host.

What IS protected
  * Time: RLIMIT_CPU (time_s, hard limit +1 s) and a wall-clock limit (2 * time_s + 1 s) after which the
    whole process group, and with it the PID namespace, is SIGKILLed. stdin ends (EOF).
  * Memory: RLIMIT_AS (memory_mb). File size: RLIMIT_FSIZE. Open files: RLIMIT_NOFILE. No core dumps.
    Disk: each tmpfs holds at most `disk_mb`.
  * Output: stdout and stderr are read while the program runs and the program is killed as soon as
    either passes `output_bytes`; nothing beyond the cap is kept in memory.
  * Processes: as root (our machines and CI), every program runs under a uid of its own, claimed
    from a range (SDPO_UID_BASE, default 2**30, 4096 slots) with a lock file for as long as it runs,
    so RLIMIT_NPROC (`processes`) counts that program's processes only: a fork flood in one reply
    cannot make a concurrent reply's fork fail, and no two programs can signal, trace or read each
    other's memory (/proc/PID/mem), whatever the mode. No new privileges, no capabilities. Slots are
    handed out round-robin, so a uid is reused only after the other 4095 (the empty lock files stay
    in /run/sdpo-uids, or the temporary folder when /run is not writable).
  * Nothing outlives sdpo: bwrap --die-with-parent, and in unshare mode a parent-death SIGKILL on
    unshare plus --kill-child; PID 1 of the namespace dying takes every process in it along. The
    program itself also gets a parent-death SIGKILL (setpriv --pdeathsig).
  * Environment: scrubbed; the program sees only PATH, LANG, PYTHONHASHSEED, OMP_NUM_THREADS, HOME
    and TMPDIR (both its work directory). No secrets from the verifier's environment.
  * Network: a network namespace with no interfaces up ("Network is unreachable").

What is NOT protected
  * Kernel exploits and CPU side channels.
  * Without root, the program keeps the user's uid: RLIMIT_NPROC is not set (the user's own count).
  * "rlimits" mode (neither bwrap nor unshare works; sdpo is not root or the kernel forbids
    namespaces): only the rlimits, the per-program uid and a host temporary work directory (holding
    the program's own files, never test data; if sdpo is killed it stays until the next sdpo run in
    this mode sweeps it away). The program can read
    every world-readable file (problem files included) and see host processes, has the network, and
    a child that leaves its process group, or whose parent sdpo was killed, can outlive the run.
    Problems with hidden tests are refused in this mode (checkers.hidden_tests_refusal).

Isolation is detected once: bwrap if it works here, else unshare (needs root), else rlimits.
SDPO_SANDBOX=bwrap|unshare|rlimits forces a mode (tests use it).
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import json
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

WORK = "/sandbox"  # the program's work directory inside the sandbox
UID_SLOTS = 4096
_PATH = "/usr/bin:/bin"
_SYSTEM_LIBS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")
_DEVICES = ("null", "zero", "full", "random", "urandom")


@dataclass(frozen=True)
class Limits:
    time_s: float = 6.0  # CPU seconds (RLIMIT_CPU); wall clock = 2 * time_s + 1 (the machine is shared)
    memory_mb: int = 1024  # RLIMIT_AS
    output_bytes: int = 1 << 20  # cap on captured stdout and on stderr, each
    file_size_mb: int = 16  # RLIMIT_FSIZE
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 64  # RLIMIT_NPROC (counts this program's uid only, see the module docstring)
    disk_mb: int = 32  # size of each private tmpfs (work directory, /tmp, /dev/shm)

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
                                         "--size", "65536", "--perms", "1777", "--tmpfs", "/tmp",
                                         "--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
                                         "true"]):
        return "bwrap"
    if os.geteuid() == 0 and all(shutil.which(t) for t in ("unshare", "nsenter", "setpriv", "mount")) and _works(
            ["setpriv", "--pdeathsig", "KILL", "--", "unshare", "--mount", "--net", "--pid", "--ipc", "--fork",
             "--kill-child", "--", "sh", "-c", "mount -t tmpfs -o size=64k sdpo /tmp && mount -t proc proc /proc"]):
        return "unshare"
    return "rlimits"


def reset() -> None:
    """Forget the detected mode and everything derived from it (tests switch SDPO_SANDBOX)."""
    for f in (isolation, interpreter, _python_files, candidate_view, judge_view, _sweep_dead_workdirs):
        f.cache_clear()
    with _roots_lock:
        for proc, _ in _roots.values():
            proc.kill()
            proc.wait()
        _roots.clear()


def hides_files(mode: str | None = None) -> bool:
    """Whether programs see only the allow-listed root (no problem files, no other runs)."""
    return (mode or isolation()) in ("bwrap", "unshare")


# --------------------------------------------------------------------------------------------------
# What a program sees: the allow-listed root


@functools.cache
def interpreter() -> str:
    """The Python that runs untrusted code: the base interpreter behind this one (never a venv).

    In rlimits mode as root, a base interpreter that other uids cannot reach (e.g. under /root) is
    replaced by the system's python3.X of the same minor version, if there is one."""
    base = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    if isolation() != "rlimits" or os.geteuid() != 0 or _reachable_by_others(base):
        return base
    same = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    return same if os.path.exists(same) and _reachable_by_others(same) else base


def _reachable_by_others(path: str) -> bool:
    """Can any uid reach `path` (o+x on every folder above it)?"""
    p = os.path.realpath(path)
    while p != "/":
        p = os.path.dirname(p)
        if not os.stat(p).st_mode & 0o001:
            return False
    return True


@functools.cache
def _python_files() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(paths to bind, site-packages folders to hide) for `interpreter()`, asked of that interpreter."""
    probe = ("import json, site, sys, sysconfig\n"
             "print(json.dumps([sys.path, site.getsitepackages(), sysconfig.get_config_var('LIBDIR') or '']))")
    try:
        out = subprocess.run([interpreter(), "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=True)
        path, site_dirs, libdir = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        path, site_dirs, libdir = [], [], ""
    sites = tuple(os.path.realpath(p) for p in site_dirs if os.path.isdir(p))
    keep = [os.path.realpath(p) for p in [libdir, *path] if p and os.path.isdir(p)]
    keep = [p for p in keep if p not in sites and not _under(p, sites)]
    return (interpreter(), *keep), sites


def _under(path: str, dirs) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


@dataclass(frozen=True)
class View:
    """A read-only root: `binds` (host path -> same path), `symlinks` (path -> target), `masks`
    (folders inside binds replaced by an empty tmpfs)."""

    binds: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...]
    masks: tuple[str, ...]


def _tools() -> list[str]:
    return [os.path.realpath(shutil.which(t) or f"/usr/bin/{t}") for t in ("prlimit", "setpriv")]


@functools.cache
def candidate_view() -> View:
    """Libraries, the interpreter with its standard library, prlimit and setpriv. Nothing else."""
    py, sites = _python_files()
    return _make_view([*_SYSTEM_LIBS, *_ETC_FILES, *py, *_tools()], sites)


@functools.cache
def judge_view(readable: tuple[str, ...] = ()) -> View:
    """For `command` judges: /usr, /etc, /bin, the interpreter and the folders the judge needs."""
    py, _ = _python_files()
    extra = [os.path.realpath(r) for r in readable]
    return _make_view(["/usr", "/etc", "/bin", "/sbin", *_SYSTEM_LIBS, *py, *extra], ())


def _make_view(paths: list[str], masks) -> View:
    binds, links = [], []
    for p in dict.fromkeys(paths):
        if os.path.islink(p) and os.path.dirname(p) == "/":  # /lib -> usr/lib on merged-/usr systems
            links.append((p, os.readlink(p)))
        elif os.path.exists(p):  # a linked file (/etc/localtime) keeps its name; folders their real path
            binds.append(p if os.path.islink(p) and os.path.isfile(p) else os.path.realpath(p))
    binds = sorted(set(binds))
    binds = [b for b in binds if not any(b != o and _under(b, [o]) for o in binds)]  # nested: bound already
    return View(tuple(binds), tuple(links), tuple(m for m in masks if _under(m, binds)))


def _parents(path: str) -> list[str]:
    """/a/b/c -> ["/a", "/a/b"] (top down)."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


# --------------------------------------------------------------------------------------------------
# One uid per running program (as root)


def _uid_base() -> int:
    return int(os.environ.get("SDPO_UID_BASE", 1 << 30))


@functools.cache
def _lock_dir() -> str:
    for d in ("/run/sdpo-uids", os.path.join(tempfile.gettempdir(), f"sdpo-uids-{os.geteuid()}")):
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            if os.stat(d).st_uid == os.geteuid():
                return d
        except OSError:
            continue
    raise OSError("no folder for the sandbox uid locks (/run or the temporary folder must be writable)")


_next_slot = itertools.count(os.getpid() * 7)
_slot_mutex = threading.Lock()


def _claim_uid() -> tuple[int, int] | None:
    """(uid, lock fd) of a free slot, or None when not root. The flock is released when the fd is
    closed, also when sdpo dies: a slot is never held by a dead process."""
    if os.geteuid() != 0:
        return None
    with _slot_mutex:
        start = next(_next_slot)
    for k in range(UID_SLOTS):
        slot = (start + k) % UID_SLOTS
        fd = os.open(os.path.join(_lock_dir(), str(slot)), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return _uid_base() + slot, fd
        except BlockingIOError:
            os.close(fd)
    raise OSError(f"all {UID_SLOTS} sandbox uid slots are in use")


@functools.cache
def _sweep_dead_workdirs() -> int:
    """rlimits mode: delete the work folders that killed sdpo processes left behind (once per process).

    A folder is dead when it belongs to a sandbox uid whose slot nobody holds: slots are held for
    as long as their program runs, and freed by the kernel when sdpo dies. Returns how many went."""
    gone = 0
    if os.geteuid() != 0:
        return gone
    tmp, base = tempfile.gettempdir(), _uid_base()
    for name in os.listdir(tmp):
        path = os.path.join(tmp, name)
        try:
            slot = os.stat(path).st_uid - base
            if not name.startswith("sdpo-run-") or not 0 <= slot < UID_SLOTS:
                continue
            fd = os.open(os.path.join(_lock_dir(), str(slot)), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path, ignore_errors=True)
            gone += 1
        except BlockingIOError:
            pass  # a live program of that uid may be using it
        finally:
            os.close(fd)
    return gone


# --------------------------------------------------------------------------------------------------
# Starting a program


def _chain(argv: list[str], limits: Limits, uid: int | None) -> list[str]:
    """prlimit, then (as root) setpriv to the program's own uid; the program gets a parent-death
    SIGKILL either way (setpriv sets it after changing uid, which would clear an earlier one)."""
    cpu = max(1, int(limits.time_s + 0.999))
    prlimit, setpriv = _tools()
    chain = [prlimit, f"--cpu={cpu}:{cpu + 1}", f"--as={limits.memory_mb << 20}",
             f"--fsize={limits.file_size_mb << 20}", f"--nofile={limits.open_files}", "--core=0"]
    if uid is None:
        death = [setpriv, "--pdeathsig", "KILL", "--"] if os.path.exists(setpriv) else []
        return death + chain + ["--", *argv]
    return chain + [f"--nproc={limits.processes}", "--", setpriv, f"--reuid={uid}", f"--regid={uid}",
                    "--clear-groups", "--no-new-privs", "--bounding-set=-all", "--pdeathsig", "KILL", "--", *argv]


def _bwrap(view: View, files: list[tuple[int, str]], limits: Limits, chain: list[str]) -> list[str]:
    size = str(limits.disk_mb << 20)
    args = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev"]
    for path in ("/tmp", "/dev/shm", WORK):  # first: a folder bound below /tmp (a CI checkout) stays visible
        args += ["--size", size, "--perms", "1777", "--tmpfs", path]
    made: set[str] = {"/tmp", "/dev", "/dev/shm", WORK}
    for path in [*view.binds, *(s for s, _ in view.symlinks)]:
        for p in _parents(path):
            if p not in made:
                made.add(p)
                args += ["--perms", "0755", "--dir", p]
    for path in view.binds:
        args += ["--ro-bind", path, path]
    for path, target in view.symlinks:
        args += ["--symlink", target, path]
    for path in view.masks:
        args += ["--size", "4096", "--tmpfs", path]
    for fd, name in files:
        args += ["--perms", "0644", "--file", str(fd), f"{WORK}/{name}"]
    return args + ["--chdir", WORK, "--", *chain]


def _mount_point(view: View) -> str:
    """A host folder to build the root on (in the private mount namespace) that holds no bound path."""
    for m in ("/mnt", "/media", "/srv", "/opt", "/run", "/var/tmp", "/tmp", "/dev/shm"):
        if os.path.isdir(m) and not os.path.islink(m) and not any(_under(p, [m]) for p in view.binds):
            return m
    raise OSError("no folder to build the sandbox root on")


def _fstab_path(p: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in p)


def _mk(paths, cmd: str = "mkdir -p") -> list[str]:
    return [f"{cmd} " + " ".join(f'"$R"{shlex.quote(p)}' for p in paths)] if paths else []


_SCRATCH = ("/tmp", "/dev/shm", WORK)
_roots: dict[View, tuple[subprocess.Popen, str]] = {}
_roots_lock = threading.Lock()


def _root_for(view: View) -> tuple[int, str]:
    """(pid, folder) of a process whose private mount namespace holds `view` built at that folder:
    the read-only binds, symlinks and masks, made once per sdpo process (it lives as long as sdpo:
    parent-death signal, and it exits when its stdin closes). Each run enters a copy of that
    namespace and adds only its own tmpfs, /proc and files."""
    with _roots_lock:
        held = _roots.get(view)
        if held and held[0].poll() is None:
            return held[0].pid, held[1]
        root = _mount_point(view)
        binds = [b for b in view.binds if not _under(b, _SCRATCH)]  # the others are bound per run
        tab = [f"{_fstab_path(b)} {_fstab_path(root + b)} none bind,ro,nosuid,nodev 0 0" for b in binds]
        tab += [f"sdpo-mask {_fstab_path(root + m)} tmpfs ro,size=4k 0 0" for m in view.masks if _under(m, binds)]
        tab += [f"/dev/{d} {_fstab_path(root + '/dev/' + d)} none bind 0 0" for d in _DEVICES]
        fd = _memfd("fstab", ("\n".join(tab) + "\n").encode())
        dirs = sorted(({p for b in binds for p in _parents(b)} | {b for b in binds if os.path.isdir(b)}
                       | {os.path.dirname(s) for s, _ in view.symlinks}) - {"/"})
        lines = ["set -e", "umask 022", f"R={shlex.quote(root)}",
                 'mount -t tmpfs -o mode=0755,size=4m,nosuid sdpo-root "$R"']
        lines += _mk(["/proc", "/dev/shm", *_SCRATCH, *dirs]) + _mk([f"/dev/{d}" for d in _DEVICES], "touch")
        lines += _mk([b for b in binds if not os.path.isdir(b)], "touch")
        lines += [f"mount -a --fstab /proc/self/fd/{fd}"]
        lines += [f'ln -s {shlex.quote(t)} "$R"{shlex.quote(s)}' for s, t in view.symlinks]
        lines += ["echo ready", "exec cat >/dev/null"]
        try:
            argv = [_tools()[1], "--pdeathsig", "KILL", "--", "unshare", "--mount", "--", "/bin/sh", "-c", "\n".join(lines)]
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, pass_fds=[fd], cwd="/")
        finally:
            os.close(fd)
        if proc.stdout.readline() != b"ready\n":
            proc.kill()
            _, err = proc.communicate()
            raise OSError(f"could not build the sandbox root: {err.decode(errors='replace').strip()[-300:]}")
        _roots[view] = (proc, root)
        return proc.pid, root


def _fstab_path(p: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in p)


def _unshare(view: View, files: list[tuple[int, str]], limits: Limits, chain: list[str]) -> tuple[list[str], list[int]]:
    """The same root as bwrap's: a shell, root in fresh namespaces entered from a copy of the prepared
    root's (`_root_for`), mounts the run's private tmpfs and /proc (one `mount -a` from an fstab in
    memory), copies the files in and enters the root with chroot. Returns the command and the
    descriptors it reads besides `files`."""
    holder, root = _root_for(view)
    size = limits.disk_mb << 20
    tab = [f"sdpo-tmp {_fstab_path(root + p)} tmpfs mode=1777,size={size},nosuid,nodev 0 0" for p in _SCRATCH]
    late = [b for b in view.binds if _under(b, _SCRATCH)]  # e.g. a venv in a CI checkout under /tmp
    tab += [f"{_fstab_path(b)} {_fstab_path(root + b)} none bind,ro,nosuid,nodev 0 0" for b in late]
    tab += [f"proc {_fstab_path(root + '/proc')} proc nosuid,nodev,noexec 0 0"]
    fd = _memfd("fstab", ("\n".join(tab) + "\n").encode())
    mounts = [f"mount -a --fstab /proc/self/fd/{fd}"]
    if late:  # their mount points live in the run's own tmpfs: mount that first
        first = "\n".join(tab[:len(_SCRATCH)]) + "\n"
        fd2 = _memfd("fstab", first.encode())
        dirs = sorted({p for b in late for p in _parents(b) if _under(p, _SCRATCH)}
                      | {b for b in late if os.path.isdir(b)})
        mounts = [f"mount -a --fstab /proc/self/fd/{fd2}", *_mk(dirs),
                  *_mk([b for b in late if not os.path.isdir(b)], "touch"), f"mount -a --fstab /proc/self/fd/{fd}"]
    lines = ["set -e", "umask 022", f"R={shlex.quote(root)}", *mounts]
    for fd_file, name in files:
        lines.append(f'cat /proc/self/fd/{fd_file} >"$R"{shlex.quote(f"{WORK}/{name}")}')  # dash: no <&N for N > 9
    lines += ["cd /", f'unshare --root="$R" --wd={shlex.quote(WORK)} -- {shlex.join(chain)}; exit $?']
    cmd = [_tools()[1], "--pdeathsig", "KILL", "--", "nsenter", f"--mount=/proc/{holder}/ns/mnt", "--",
           "unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--",
           "/bin/sh", "-c", "\n".join(lines)]
    return cmd, [fd] + ([fd2] if late else [])


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)  # Popen's pass_fds / stdin hand it on explicitly
    _write_all(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _env(workdir: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = {"PATH": _PATH, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
           "HOME": workdir, "TMPDIR": workdir, "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(extra or {})
    return env


class Sandbox:
    """One started program. `proc` has stdout/stderr pipes (and a stdin pipe if asked for); `kill()` ends
    the whole tree; `wait()` reaps it, frees its uid and returns (returncode, CPU seconds)."""

    def __init__(self, proc: subprocess.Popen, mode: str, uid_lock: int | None, host_dir: str | None):
        self.proc, self.mode = proc, mode
        self._uid_lock, self._host_dir = uid_lock, host_dir
        self.returncode: int | None = None
        self.cpu_s = 0.0

    def program_pid(self) -> int | None:
        """Host pid of the program itself (below bwrap / unshare and the namespace's PID 1), or None.

        Call it while the program is the only process of its tree (e.g. before untrusted code runs)."""
        depth = {"bwrap": 2, "unshare": 2}.get(self.mode, 0)
        return _descendant(self.proc.pid, depth)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self) -> tuple[int, float]:
        if self.returncode is None:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.proc.returncode = self.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_s = usage.ru_utime + usage.ru_stime
            self._release()
        return self.returncode, self.cpu_s

    def _release(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        if self._uid_lock is not None:
            os.close(self._uid_lock)
            self._uid_lock = None
        if self._host_dir:
            shutil.rmtree(self._host_dir, ignore_errors=True)
            self._host_dir = None

    def close(self) -> None:
        """Kill and reap (idempotent)."""
        if self.returncode is None:
            self.kill()
            self.wait()


def spawn(argv: list[str], *, files: dict[str, str | bytes] | None = None, limits: Limits = Limits(),
          stdin: str | bytes | None = b"", env: dict[str, str] | None = None, view: View | None = None) -> Sandbox:
    """Start `argv` in a sandbox whose work directory holds `files` (see the module docstring).

    stdin: bytes/str for a fixed input (it ends), or None for a pipe the caller writes to.
    view: what the program sees of the host (default `candidate_view()`).
    Raises OSError only when the sandbox itself cannot start.
    """
    mode = isolation()
    view = view or candidate_view()
    claimed = _claim_uid()
    uid, lock = claimed if claimed else (None, None)
    chain = _chain(argv, limits, uid)
    fds: list[int] = []
    host_dir = None
    try:
        named = {n: (c.encode() if isinstance(c, str) else c) for n, c in (files or {}).items()}
        if mode == "rlimits":
            _sweep_dead_workdirs()
            host_dir = tempfile.mkdtemp(prefix="sdpo-run-")
            for name, data in named.items():
                with open(os.path.join(host_dir, name), "wb") as f:
                    f.write(data)
            if uid is not None:
                for p in [host_dir] + [os.path.join(host_dir, n) for n in named]:
                    os.chown(p, uid, uid)
            cmd, cwd, workdir = chain, host_dir, host_dir
        else:
            fds = [_memfd(n, d) for n, d in named.items()]
            pairs = list(zip(fds, named))
            if mode == "bwrap":
                cmd = _bwrap(view, pairs, limits, chain)
            else:
                cmd, tabs = _unshare(view, pairs, limits, chain)
                fds += tabs
            cwd, workdir = "/", WORK
        if stdin is None:
            stdin_fd = subprocess.PIPE
        else:
            stdin_fd = _memfd("stdin", stdin.encode() if isinstance(stdin, str) else stdin)
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=_env(workdir, env), start_new_session=True, pass_fds=fds)
        finally:
            if stdin is not None:
                os.close(stdin_fd)
    except BaseException:
        if lock is not None:
            os.close(lock)
        if host_dir:
            shutil.rmtree(host_dir, ignore_errors=True)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return Sandbox(proc, mode, lock, host_dir)


def _descendant(pid: int, depth: int) -> int | None:
    """The process `depth` levels below `pid` when each level has exactly one child, else None."""
    if depth == 0:
        return pid
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    for _ in range(depth):
        kids = children.get(pid, [])
        if len(kids) != 1:
            return None
        pid = kids[0]
    return pid


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one running process (all its threads), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# Running a program to the end


def run_program(argv: list[str], *, stdin: str | bytes = b"", files: dict[str, str | bytes] | None = None,
                limits: Limits = Limits(), env: dict[str, str] | None = None,
                readable: tuple[str, ...] | None = None) -> ExecResult:
    """Run `argv` to the end in a sandbox holding `files`. Never raises for what the program does.

    readable: None for a reply's program (`candidate_view`); a tuple of folders for a `command` judge
    (`judge_view`: /usr, /etc and those folders, read-only).
    """
    mode = isolation()
    t0 = time.perf_counter()
    view = judge_view(tuple(readable)) if readable is not None else candidate_view()
    try:
        box = spawn(argv, files=files, limits=limits, stdin=stdin, env=env, view=view)
    except OSError as e:
        return ExecResult("error", None, "", f"could not start the program: {e}", 0.0, 0.0, mode)
    try:
        out, err, status = _collect(box.proc, limits)
    finally:
        box.kill()  # whatever is left of the group (background children)
        rc, cpu = box.wait()
    stdout = out.decode("utf-8", errors="replace")
    stderr = err.decode("utf-8", errors="replace")
    if status is None:
        status = classify(rc, stderr, limits, cpu)
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
            ready = sel.select(timeout=min(left, 0.2))
            if not ready and _exited(proc.pid):
                break  # it exited; pipes still open belong to children left behind (rlimits mode)
            for key, _ in ready:
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
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), status


def _exited(pid: int) -> bool:
    """Has `pid` ended? Without reaping it (wait4 later collects its status and CPU time)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def classify(rc: int | None, stderr: str, limits: Limits, cpu_s: float) -> str:
    """ok | memory | timeout | output_limit | error for a program that ended by itself."""
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
    """Write `code` to solution.py in the program's work directory and run it with `interpreter() -I`."""
    return run_program([interpreter(), "-I", "solution.py", *args], stdin=stdin,
                       files={**(files or {}), "solution.py": code}, limits=limits)
