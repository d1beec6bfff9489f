"""Overhead of running a plan on Ray instead of in-process, on this machine.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ray.py [--rounds 3]

The grid of tests/test_ray.py: 2 problems x 2 methods (SDPO, multi-turn; plus best-of-k) x 2 seeds, the
tiny random model of tests/conftest.py saved to a folder, scripted replies, budget 6, batch 2 (the SDPO
updates really run). Each round runs the grid in-process and on a local Ray instance (2 CPU slots), in
alternating order, and reports:
  * in-process wall time of the grid (one model load);
  * Ray start-up alone (ray.init of a local instance, 127.0.0.1) and shutdown;
  * the grid on an already running Ray instance (workers start, load the model, run the jobs);
  * ratio (Ray grid, start-up excluded) / in-process, with min / median / max over the rounds.
On 2 cores the Ray grid has 2 job slots, so it can also be faster than in-process; what it costs is the
start-up and one model load per worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def grid(out: Path, model_dir: Path, never: Path):
    from sdpo_cli.compare import plan_jobs, prepare
    from sdpo_cli.config import fill_auto, make_config

    cfg = fill_auto(make_config(dict(model=str(model_dir), backend="scripted", device="cpu", budget=6, batch_size=2,
                                     max_new_tokens=16)))
    out, spec, problems = prepare([ROOT / "problems/answer_arith.yaml", never], out=out, resume=False,
                                  baselines=None, seeds=2, samples=6, variant=None, window_tokens=None, cfg=cfg,
                                  given=set())
    return plan_jobs(out, spec, problems)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # a local instance on 127.0.0.1 (see ray_runner)
    import ray

    from conftest import build_tiny_model, build_tiny_tokenizer
    from sdpo_cli.ray_runner import run_jobs_ray
    from sdpo_cli.runner import run_jobs

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    tok = build_tiny_tokenizer()
    build_tiny_model(tok).save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    (tmp / "script.json").write_text(json.dumps(["Answer: 7", "Answer: 1", "Answer: 20", "Answer: 3"]))
    (tmp / "never.yaml").write_text("id: never\ntitle: t\nprompt: What is 99?\nverifier: {kind: answer, answer: 99}\n")
    os.environ["SDPO_SCRIPT"] = str(tmp / "script.json")

    local, ray_grid, start, stop = [], [], [], []
    try:
        for r in range(args.rounds):
            for mode in (("local", "ray") if r % 2 == 0 else ("ray", "local")):
                out = tmp / f"{mode}-{r}"
                jobs = grid(out, tmp / "model", tmp / "never.yaml")
                if mode == "local":
                    t = time.perf_counter()
                    for _ in run_jobs(jobs):
                        pass
                    local.append(time.perf_counter() - t)
                else:
                    t = time.perf_counter()
                    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                             configure_logging=False)
                    start.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    for _ in run_jobs_ray(jobs):
                        pass
                    ray_grid.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    ray.shutdown()
                    stop.append(time.perf_counter() - t)
                shutil.rmtree(out)
                print(f"round {r} {mode}: {(local if mode == 'local' else ray_grid)[-1]:.1f}s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def mmm(xs):
        return f"min {min(xs):.2f} / median {statistics.median(xs):.2f} / max {max(xs):.2f}"

    ratios = [b / a for a, b in zip(local, ray_grid)]
    print(f"grid of {len(jobs)} jobs, {args.rounds} interleaved rounds")
    print(f"in-process grid       {mmm(local)} s")
    print(f"ray start-up (init)   {mmm(start)} s   shutdown {mmm(stop)} s")
    print(f"ray grid (no start-up) {mmm(ray_grid)} s")
    print(f"ratio ray / in-process (start-up excluded): {mmm(ratios)}")
    print(f"ratio ray / in-process (start-up included): "
          f"{mmm([(g + s) / a for a, g, s in zip(local, ray_grid, start)])}")


if __name__ == "__main__":
    main()
