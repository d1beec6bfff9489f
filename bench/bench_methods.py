"""Time per attempt of every method on one problem with several seeds, measured in one process.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_methods.py [--problem problems/imported/humaneval-029.yaml]
        [--seeds 5] [--budget 8] [--max-new-tokens 192]

The default model (SmolLM2-135M) on this machine, the default sampling settings. Runs, in this order:
  * best-of-k: seeds x budget samples (batches of --batch-size, several per call up to --max-batch);
  * best-of-k again at multi-turn's batch width (--max-batch = seeds): a narrower batch's cost apart
    from the cost of multi-turn's longer prompts;
  * multi-turn, the seeds batched (one call per turn for all unsolved chains; --max-batch);
  * multi-turn, one seed at a time (--max-batch 1: the unbatched path);
  * SDPO, seed by seed.
Each method's time per attempt is its wall time (sampling, verification, and for SDPO the update)
divided by its attempts. It then checks that batched and unbatched multi-turn gave the same discovery
index and the same attempt texts per seed (exactly equal in fp32; with bf16 weights a different batch
changes the rounding, so texts may differ while their distribution does not), and prints the ratio
multi-turn (batched) / best-of-k.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default=str(ROOT / "problems/imported/humaneval-029.yaml"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on this CPU), fp32 or bf16")
    ap.add_argument("--skip-sdpo", action="store_true")
    args = ap.parse_args()

    from sdpo_cli.config import resolve_config
    from sdpo_cli.problem import load_problem
    from sdpo_cli.runner import Job, run_jobs
    from sdpo_cli.runs import RunDir
    from sdpo_cli.session import load_session

    problem = load_problem(args.problem)
    cfg = resolve_config(flag_values={"budget": args.budget, "max_new_tokens": args.max_new_tokens,
                                      "dtype": args.dtype})
    t0 = time.perf_counter()
    session = load_session(cfg)
    print(f"{problem.id}: {args.seeds} seeds, budget {args.budget}, batch {cfg.batch_size}, max batch "
          f"{cfg.max_batch}, {cfg.max_new_tokens} tokens, dtype {cfg.dtype}; model loaded in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-methods-"))
    seeds = range(cfg.seed, cfg.seed + args.seeds)

    def timed(name: str, jobs: list) -> tuple[float, int, dict]:
        t = time.perf_counter()
        done = {}
        for ev in run_jobs(jobs, session=session):
            if type(ev).__name__ == "Done":
                done[ev.job.seed] = ev.summary
        secs = time.perf_counter() - t
        attempts = sum(s["attempts_used"] for s in done.values())
        records = [r for s in done.values() for r in RunDir(Path(s["run"])).attempts()]
        new_tokens = sum(r["n_tokens"] for r in records)
        steps = [st for s in done.values() for st in RunDir(Path(s["run"])).steps()]
        prompt = [st["prompt_tokens"] for st in steps if "prompt_tokens" in st]
        mean_prompt = f"{sum(prompt) / len(prompt):5.0f}" if prompt else "    -"
        print(f"{name:<30} {attempts:>4} attempts in {secs:7.1f}s = {secs / attempts:6.2f} s/attempt, "
              f"{new_tokens / attempts:5.0f} new tokens/attempt, prompt {mean_prompt} tokens, "
              f"{new_tokens / secs:6.1f} new tokens/s", flush=True)
        return secs / attempts, attempts, done

    try:
        results = {}
        results["best-of-k"] = timed("best-of-k", [Job(problem, "best-of-k", cfg, runs_root=tmp / "bok",
                                                     options={"n_samples": args.seeds * args.budget})])
        # The same samples drawn at multi-turn's batch width (one row per seed): separates the cost of a
        # narrower batch from that of multi-turn's longer prompts.
        results["best-of-k narrow"] = timed(f"best-of-k (max batch {args.seeds})", [
            Job(problem, "best-of-k", cfg.replace(max_batch=args.seeds, batch_size=min(cfg.batch_size, args.seeds)),
                runs_root=tmp / "bok-narrow", options={"n_samples": args.seeds * args.budget})])
        mt = {"variant": "feedback_only", "window_tokens": None}
        results["multi-turn batched"] = timed("multi-turn (seeds batched)", [
            Job(problem, "multi-turn", cfg.replace(seed=s), runs_root=tmp / "mt", stamp=False, options=mt)
            for s in seeds])
        results["multi-turn alone"] = timed("multi-turn (one at a time)", [
            Job(problem, "multi-turn", cfg.replace(seed=s, max_batch=1), runs_root=tmp / "mt1", stamp=False,
                options=mt) for s in seeds])
        if not args.skip_sdpo:
            results["sdpo"] = timed("SDPO", [Job(problem, "sdpo", cfg.replace(seed=s), runs_root=tmp / "sdpo")
                                              for s in seeds])

        a, b = results["multi-turn batched"][2], results["multi-turn alone"][2]
        same_index = all(a[s]["discovery_index"] == b[s]["discovery_index"] for s in seeds)
        texts = lambda d: [r["text"] for r in RunDir(Path(d["run"])).attempts()]  # noqa: E731
        same_texts = all(texts(a[s]) == texts(b[s]) for s in seeds)
        print(f"multi-turn discovery indices batched {[a[s]['discovery_index'] for s in seeds]} "
              f"vs alone {[b[s]['discovery_index'] for s in seeds]}: equal {same_index}; attempt texts equal {same_texts}")
        per = {k: v[0] for k, v in results.items()}
        print(f"ratio multi-turn (batched) / best-of-k per attempt: {per['multi-turn batched'] / per['best-of-k']:.2f}")
        print(f"ratio multi-turn (batched) / best-of-k at the same batch width: "
              f"{per['multi-turn batched'] / per['best-of-k narrow']:.2f}")
        print(f"ratio multi-turn (one at a time) / (batched): {per['multi-turn alone'] / per['multi-turn batched']:.2f}")
        if "sdpo" in per:
            print(f"ratio SDPO / best-of-k per attempt: {per['sdpo'] / per['best-of-k']:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
