"""Per-step time breakdown of `sdpo solve` on CPU and the SDPO overhead ratio, in one run.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_step.py [--problem problems/stdio_second_largest.yaml]
        [--steps 2] [--batch-size 8] [--max-new-tokens 384]

Runs `--steps` SDPO steps (default model, default batch size) on a problem the model does not solve,
then, in the same process, `--steps` plain sampling batches of the same size and seeds from the base
model (what best-of-k pays). Prints the mean step split (sample / verify / teacher+student forward /
backward) and overhead = SDPO wall time per attempt / plain sampling time per attempt.
"""

import argparse
import tempfile
import time
from pathlib import Path

from sdpo_cli.config import SolveConfig
from sdpo_cli.model import encode_chat
from sdpo_cli.problem import load_problem
from sdpo_cli.runs import RunDir
from sdpo_cli.sampling import SamplingParams
from sdpo_cli.sampling.hf import HFSampler
from sdpo_cli.trainer import Session, solve


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="problems/stdio_second_largest.yaml")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    a = ap.parse_args()
    problem = load_problem(a.problem)
    cfg = SolveConfig(batch_size=a.batch_size, max_new_tokens=a.max_new_tokens)
    session = Session(cfg)
    g = session.cfg.batch_size
    session.cfg.budget = a.steps * g
    run = RunDir.create(Path(tempfile.mkdtemp()), problem, "sdpo", 0, session.cfg.to_dict())
    t0 = time.perf_counter()
    steps = [e for e in solve(problem, session, run) if e["type"] == "step"]
    sdpo_s = time.perf_counter() - t0
    n_sdpo = sum(s["n_attempts"] for s in steps)

    sampler = HFSampler(session.model, session.tokenizer)  # LoRA unloaded: the base model
    prompt = encode_chat(session.tokenizer, problem.messages())
    t0 = time.perf_counter()
    for k in range(a.steps):
        sampler.sample(prompt, g, SamplingParams(max_new_tokens=session.cfg.max_new_tokens, seed=k))
    plain_s = time.perf_counter() - t0

    keys = ["time_sample_s", "time_verify_s", "time_forward_s", "time_backward_s", "time_step_s"]
    mean = {k: sum(s.get(k, 0.0) for s in steps) / len(steps) for k in keys}
    print(f"model {session.cfg.model}, G={g}, max_new_tokens={session.cfg.max_new_tokens}, "
          f"{len(steps)} SDPO steps, mean response length {sum(s['len_p50'] for s in steps) / len(steps):.0f} tokens (p50)")
    for k in keys:
        print(f"  {k:<16} {mean[k]:7.1f} s  ({mean[k] / mean['time_step_s']:.0%} of a step)")
    print(f"SDPO: {sdpo_s / n_sdpo:.2f} s/attempt; plain sampling: {plain_s / (a.steps * g):.2f} s/attempt; "
          f"overhead ratio {sdpo_s / n_sdpo / (plain_s / (a.steps * g)):.2f}x")


if __name__ == "__main__":
    main()
