"""The same plan as runner.run_jobs, on a Ray cluster: `sdpo solve|compare ... --ray [ADDRESS]`.

    for event in run_jobs_ray(jobs, address=None):     # None: a local Ray instance on 127.0.0.1
        render(event)

How it works:
  * `ray.init(address)` joins a cluster (or starts a local instance bound to 127.0.0.1, without the
    dashboard and usage statistics). The start-up time is reported as a Note.
  * One actor per job slot (`--gpus-per-job`, default 1 where the cluster has GPUs; otherwise
    `--cpus-per-job` CPU slots, default 1). An actor loads the model once (session.load_session) and
    runs jobs one after another, like the in-process runner: jobs are handed out as actors free up,
    so every slot stays busy.
  * The driver claims each job's run directory (runner.claim, an atomic mkdir) before handing the job
    out, so run directories must live on a path every node can reach (a shared file system), and
    a job finds its own run again when it is retried or the grid is re-run.
  * Workers put their events into a Ray queue; the driver drains it and yields them in order, to the
    same renderer as in-process runs.
  * A job whose worker dies (a node lost, an OOM kill, kill -9) is retried on a fresh actor, resumed
    from its last checkpoint: the run directory's rollback drops the cut-short step, so no attempt is
    lost or counted twice (the `--resume` discipline). After MAX_RETRIES deaths it is given up (Error).
  * Ctrl-C on the driver (or closing this generator) kills the actors. Every run is left on disk,
    unfinished and resumable; re-running the same command resumes the grid.

Without Ray installed, `--ray` fails with the install command (exit 2). Nothing else imports ray.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from .errors import BackendUnavailable
from .events import Done, Error, Note, Start
from .runner import Job, claim, finished, group_jobs
from .runs import RunDir

MAX_RETRIES = 3  # worker deaths tolerated per job
POLL_S = 0.2
INSTALL = "pip install 'sdpo-cli[ray]'"


def check_available() -> None:
    """Fail early (before anything is written) when Ray is not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise BackendUnavailable(f"--ray needs Ray, which is not installed: {INSTALL}")


def import_ray(local: bool = False):
    """`import ray` with usage statistics off; BackendUnavailable (exit 2) with the install command.

    `local`: the plan will start its own single-node instance. Ray then binds every service and the node
    address to 127.0.0.1 (Ray's single-node mode, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; its default on
    Linux is to advertise the machine's network address, so its processes would talk over it).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise BackendUnavailable(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def _worker_class(ray):
    @ray.remote
    class JobWorker:
        """Loads a session once and runs jobs one after another, streaming their events to `queue`."""

        def __init__(self, queue):
            self.queue = queue
            self.session = None
            self.where = f"ray worker pid {os.getpid()} on {ray.util.get_node_ip_address()}"

        def pid(self) -> int:
            return os.getpid()

        def run(self, group: list[Job], claimed: list[tuple[str, bool]]) -> int:
            """Run one unit (a job, or batched multi-turn chains); returns how many jobs finished."""
            from .runner import execute
            from .runs import RunDir
            from .session import load_session, session_key

            cfg = group[0].config
            if self.session is None or self.session.key != session_key(cfg):
                self.session = None  # drop the old model before loading another
                self.queue.put(Note(f"{self.where}: loading model {cfg.model} ({cfg.backend} backend, {cfg.device})"))
                self.session = load_session(cfg)
            done = 0
            for ev in execute(group, self.session, [(RunDir(Path(p)), r) for p, r in claimed]):
                if isinstance(ev, Start):
                    ev.worker, ev.worker_pid = self.where, os.getpid()
                done += isinstance(ev, Done)
                self.queue.put(ev)  # blocks until the queue has it: events stay in order
            return done

    return JobWorker


def _slots(ray, gpus_per_job: float | None, cpus_per_job: float | None) -> tuple[int, dict]:
    """(number of actors, the resources of one) for this cluster."""
    res = ray.cluster_resources()
    gpus = res.get("GPU", 0.0)
    if gpus_per_job is None:
        gpus_per_job = 1.0 if gpus >= 1 else 0.0
    if gpus_per_job > 0:
        return max(1, int(gpus // gpus_per_job)), {"num_gpus": gpus_per_job, "num_cpus": cpus_per_job or 1.0}
    cpus = cpus_per_job or 1.0
    return max(1, int(res.get("CPU", 1.0) // cpus)), {"num_cpus": cpus}


def run_jobs_ray(jobs: list[Job], *, address: str | None = None, gpus_per_job: float | None = None,
                 cpus_per_job: float | None = None, num_cpus: int | None = None) -> Iterator:
    """Run `jobs` on Ray; yields the same events as runner.run_jobs (plus Notes about the cluster).

    Args:
        jobs: the plan (runner.Job), in the order they should start.
        address: a cluster address ("auto", "ray://head:10001", "127.0.0.1:6379"), or None to start a
            local instance on 127.0.0.1.
        gpus_per_job, cpus_per_job: resources of one job slot (see the module docstring).
        num_cpus: CPUs of a local instance (None: all of this machine's).
    """
    ray = import_ray(local=address is None)
    if not jobs:
        return
    t0 = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        common = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address is None:
            ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **common)
        else:
            ray.init(address=address, **common)
    actors: list = []
    try:
        from ray.util.queue import Queue

        queue = Queue(actor_options={"num_cpus": 0})
        units = group_jobs(jobs)  # batched multi-turn chains travel together
        n_slots, resources = _slots(ray, gpus_per_job, cpus_per_job)
        n_slots = min(n_slots, len(units))
        worker = _worker_class(ray).options(**resources)
        yield Note(f"ray: {'started a local instance' if started and address is None else 'connected'} in "
                   f"{time.perf_counter() - t0:.1f}s; {n_slots} job slot(s) of {resources}")
        idle = [worker.remote(queue) for _ in range(n_slots)]
        actors.extend(idle)
        pending: list[tuple[list[Job], int]] = [(u, 0) for u in units]  # (unit, worker deaths so far)
        inflight: dict = {}  # ObjectRef -> (unit, actor, run paths, deaths)

        def drain() -> list:
            out = []
            while not queue.empty():
                out.append(queue.get_nowait())
            return out

        while pending or inflight:
            while idle and pending:
                unit, deaths = pending.pop(0)
                claimed = [(str(run.path), resumed) for run, resumed in map(claim, unit)]
                actor = idle.pop()
                inflight[actor.run.remote(unit, claimed)] = (unit, actor, [p for p, _ in claimed], deaths)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
            yield from drain()
            for ref in ready:
                unit, actor, paths, deaths = inflight.pop(ref)
                try:
                    ray.get(ref)
                    idle.append(actor)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                    yield from drain()
                    actors.remove(actor)
                    fresh = worker.remote(queue)
                    actors.append(fresh)
                    idle.append(fresh)
                    # Resume these runs from their checkpoints (finished ones are left alone).
                    retry = [replace(j, run=Path(p)) for j, p in zip(unit, paths) if not finished(RunDir(Path(p)))]
                    for j, p in zip(unit, paths):
                        if deaths + 1 < MAX_RETRIES:
                            yield Error(j.key, p, f"worker died ({type(e).__name__}); resuming the run from its last "
                                                  "checkpoint on a fresh worker")
                        else:
                            yield Error(j.key, p, f"worker died {MAX_RETRIES} times; giving up on this job (its run "
                                                  "is saved and resumable)", resumable=True)
                    if retry and deaths + 1 < MAX_RETRIES:
                        pending.insert(0, (retry, deaths + 1))
                except ray.exceptions.RayTaskError as e:  # the job itself raised (e.g. RunError)
                    yield from drain()
                    idle.append(actor)
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    for j, p in zip(unit, paths):
                        yield Error(j.key, p, str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
        yield from drain()
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # already dead
                pass
        if started:
            ray.shutdown()
