"""One run directory, read for people: what `sdpo show` prints and report.html shows per run.

    view = load_run(Path("runs/20260101-120000_p1_sdpo_s0"), keep=20)
    view.status, view.steps, view.attempts        # attempts: the first 20 successes + the last 20 failures
    teacher_prompt(view, attempt)                 # (text, None) or (None, why there is none)

Reading is defensive: run directories can be from older or newer versions (missing or extra
keys), unfinished (no summary.json), or cut mid-write (a torn last JSONL line, a half-copied
config). Nothing here raises on such a directory; what could not be read becomes a note.
attempts.jsonl is streamed, so a run with thousands of long replies is never held in memory.

The SDPO teacher prompt is not stored: it is a pure function of the problem statement and the
attempt's feedback, `feedback.reprompt(problem.prompt, feedback=...)`, under the problem's system
message if it has one (SDPO's teacher_messages keeps it). Test-time SDPO stops at the first
success, so a step that was distilled had no successful attempt to use as a demonstration, and
every attempt in it was taught with its own feedback; an attempt whose feedback is empty had no
teacher signal.
The prompt is therefore reconstructed, not read back.

Does not own: the run format (runs.py, trainer.py, baselines.py) or rendering (show.py,
report_html.py). Never imports torch.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


KEEP = 20  # attempts kept per run and kind: the first successes and the last failures


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Records of a JSONL file, one at a time; lines that do not parse (a torn last line) are skipped."""
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return
    with f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec


def read_yaml(path: Path) -> dict | None:
    from .yamldata import YamlDataError, load

    try:
        data = load(path.read_text(encoding="utf-8"))
    except (OSError, YamlDataError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class RunView:
    path: Path
    header: dict  # config.yaml ({} when unreadable)
    summary: dict | None  # summary.json (None: unfinished or unreadable)
    checkpoint: dict | None
    steps: list[dict]
    attempts: list[dict]  # the kept attempts (see load_run), in attempt order
    n_attempts: int  # attempts on disk
    n_successes: int  # successful attempts on disk
    problem: object | None  # problem.Problem, None when its file is missing or invalid
    notes: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.header.get("method") or (self.summary or {}).get("method") or "?")

    @property
    def problem_id(self) -> str:
        return str(self.header.get("problem_id") or (self.summary or {}).get("problem_id") or "?")

    @property
    def seed(self):
        return self.header.get("seed", (self.summary or {}).get("seed"))

    @property
    def config(self) -> dict:
        c = self.header.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def budget(self) -> int | None:
        b = (self.summary or {}).get("budget", self.config.get("budget"))
        return b if isinstance(b, int) else None

    @property
    def status(self) -> str:
        """solved / exhausted / interrupted from summary.json; "unfinished" without one."""
        return str((self.summary or {}).get("status") or "unfinished")

    @property
    def attempts_used(self) -> int:
        s = self.summary or {}
        if isinstance(s.get("attempts_used"), int) and self.status != "unfinished":
            return s["attempts_used"]
        return self.n_attempts

    @property
    def discovery_index(self) -> int | None:
        d = (self.summary or {}).get("discovery_index")
        return d if isinstance(d, int) else None

    def best_tests(self) -> tuple[int | None, int | None]:
        """(best tests passed, number of tests) from the summary, else from the steps."""
        s = self.summary or {}
        best, total = s.get("best_tests_passed"), s.get("n_tests")
        if best is None and self.steps:
            best = max((r.get("best_so_far", r.get("best_passed")) or 0) for r in self.steps)
        if total is None and self.steps:
            total = self.steps[-1].get("n_tests")
        return best, total

    def headline(self) -> str:
        """One line: how the run ended."""
        used, budget = self.attempts_used, self.budget
        of = f" of {budget}" if budget else ""
        c = (self.summary or {}).get("n_correct")
        if self.method == "best-of-k" and isinstance(c, int) and self.status in ("solved", "exhausted"):
            return f"{c} of {used} samples correct"
        if self.status == "solved":
            d = self.discovery_index
            return f"solved at attempt {d}{of}" if d else f"solved ({used} attempts{of})"
        if self.status == "exhausted":
            return f"not solved in {used} attempts{of}"
        return f"{self.status} after {used} attempts{of}"


def load_run(path: Path, *, keep: int = KEEP) -> RunView:
    """Read one run directory (see the module docstring).

    Of the attempts, keeps the first `keep` successes (one, for SDPO and multi-turn, which stop at
    it) and the last `keep` failures (the latest feedback, the teacher prompts of the last updates).
    """
    from .errors import SdpoError
    from .problem import load_problem

    path = Path(path)
    notes = []
    header = read_yaml(path / "config.yaml")
    if header is None:
        notes.append("config.yaml is missing or unreadable")
        header = {}
    summary = _read_json(path / "summary.json")
    if summary is None and (path / "summary.json").exists():
        notes.append("summary.json is unreadable")
    steps = list(iter_jsonl(path / "steps.jsonl"))
    kept, last_failures = [], deque(maxlen=max(0, keep))
    n = n_ok = 0
    for rec in iter_jsonl(path / "attempts.jsonl"):
        n += 1
        if rec.get("passed"):
            n_ok += 1
            if len(kept) < keep:
                kept.append(rec)
        else:
            last_failures.append(rec)
    attempts = sorted(kept + list(last_failures), key=lambda r: (_int(r.get("attempt")), _int(r.get("index"))))
    problem = None
    own = path / "problem.yaml"
    problem_file = own if own.exists() else Path(str(header.get("problem_file") or own))
    try:
        problem = load_problem(problem_file)
    except SdpoError as e:
        notes.append(f"problem file unreadable ({e.lines[0]})")
    return RunView(path=path, header=header, summary=summary, checkpoint=_read_json(path / "checkpoint.json"),
                   steps=steps, attempts=attempts, n_attempts=n, n_successes=n_ok, problem=problem, notes=notes)


def _int(x) -> int:
    return x if isinstance(x, int) else 0


def teacher_prompt(view: RunView, attempt: dict) -> tuple[str | None, str | None]:
    """The SDPO teacher's prompt for `attempt`, reconstructed (see the module docstring).

    Returns:
        (text, None) for an attempt that was distilled with feedback (the system message, if any,
        on top); (None, reason) when there was none; (None, None) for runs that are not SDPO.
    """
    from .feedback import reprompt

    if view.method != "sdpo":
        return None, None
    if attempt.get("passed"):
        return None, "passed: a success is the answer, it is not distilled"
    step = next((s for s in view.steps if s.get("step") == attempt.get("step")), None)
    if step is None:
        return None, "its step did not complete (no update was made)"
    if step.get("n_passed"):
        return None, "its step found a solution, so the run stopped without an update"
    fb = attempt.get("feedback") or ""
    if not fb.strip():
        return None, "no teacher signal: the feedback was empty"
    if view.problem is None:
        return None, "the problem file could not be read"
    text = reprompt(view.problem.prompt, feedback=fb)
    system = getattr(view.problem, "system", None)
    return (f"[system]\n{system}\n\n[user]\n{text}" if system else text), None


def steps_with_warnings(view: RunView) -> list[tuple[int, str]]:
    """[(step, warning)] in step order."""
    out = []
    for s in view.steps:
        for w in s.get("warnings") or []:
            out.append((s.get("step"), str(w)))
    return out
