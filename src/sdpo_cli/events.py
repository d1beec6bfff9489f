"""What a running job tells the outside world: four small dataclasses, no behaviour.

Every method loop (trainer.sdpo, baselines.best_of_k, baselines.multi_turn) yields them; the runner
passes them on (in-process, or from Ray workers back to the driver); one renderer (render.py) shows
them live, as plain lines or as JSON. They are plain data so they pickle across processes.

    Start  a job began or resumed (its run directory, where it starts from)
    Step   one step / batch / turn finished (the steps.jsonl record, plus the budget)
    Done   the job finished; `summary` is its summary.json
    Error  the job could not go on; the run is saved and resumable unless `resumable` says otherwise
    Note   a line about the plan itself (a model load, a retried worker)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class JobKey(NamedTuple):
    """Names one job of a plan: (problem id, method, seed)."""

    problem_id: str
    method: str
    seed: int

    def __str__(self) -> str:
        return f"{self.problem_id} {self.method} seed {self.seed}"


@dataclass
class Start:
    job: JobKey
    run: str  # the run directory
    budget: int  # attempts this job may make (best-of-k: its n samples)
    attempts_used: int  # > 0 when resuming
    step: int  # the next step / batch / turn
    batch_size: int
    n_tests: int
    resumed: bool
    worker: str = ""  # where it runs: "" in-process, else e.g. "ray worker pid 1234 on 127.0.0.1"
    worker_pid: int = 0  # that worker's process id (0 in-process)


@dataclass
class Step:
    job: JobKey
    record: dict  # the steps.jsonl line (step, attempts_used, n_passed, best_so_far, loss, warnings, ...)
    budget: int

    @property
    def attempts_used(self) -> int:
        return self.record["attempts_used"]

    @property
    def warnings(self) -> list[str]:
        return self.record.get("warnings", [])


@dataclass
class Done:
    job: JobKey
    summary: dict  # summary.json

    @property
    def solved(self) -> bool:
        return bool(self.summary.get("solved"))


@dataclass
class Error:
    job: JobKey
    run: str
    message: str
    resumable: bool = True
    extra: dict = field(default_factory=dict)


@dataclass
class Note:
    text: str


Event = Start | Step | Done | Error | Note
