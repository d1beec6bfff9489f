"""Per-step time split of `sdpo solve` on CPU and the SDPO overhead ratio, interleaved over rounds.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_step.py [--problem problems/stdio_second_largest.yaml]
        [--rounds 3] [--steps 2] [--batch-size 8] [--max-new-tokens 192] [--dtype auto] [--micro-batch-tokens N] [--seed 0]

Each round runs `--steps` SDPO steps with a fresh adapter (default model, the defaults of `sdpo solve`,
a problem the model does not solve, so every step samples, verifies and updates), then `--steps`
plain sampling batches of the same size from the base model (what best-of-k pays per attempt).
Overhead ratio of a round = SDPO wall time per attempt / plain sampling wall time per attempt; the
two halves of a round run back to back, so both see about the same machine load. Printed: each
round, then min / median / max over rounds of the ratio and of the mean step split (sample / verify
/ teacher+student forward / backward / optimizer+EMA). Responses have their natural lengths; the
mean length of each side is printed with it (a side with shorter answers samples faster).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

KEYS = ["time_sample_s", "time_verify_s", "time_forward_s", "time_backward_s", "time_optimizer_s", "time_step_s"]


def one_round(problem, cfg, session, steps: int) -> dict:
    from sdpo_cli.attempt import batch_seed
    from sdpo_cli.events import Step
    from sdpo_cli.model import encode_chat
    from sdpo_cli.runs import RunDir
    from sdpo_cli.sampling import SamplingParams
    from sdpo_cli.sampling.hf import HFSampler
    from sdpo_cli.trainer import sdpo

    g = cfg.batch_size
    cfg = cfg.replace(budget=steps * g)
    run = RunDir.create(Path(tempfile.mkdtemp()), problem, "sdpo", cfg.seed, cfg.to_dict())
    t0 = time.perf_counter()
    recs = [ev.record for ev in sdpo(problem, cfg, session, run) if isinstance(ev, Step)]
    sdpo_s = time.perf_counter() - t0
    n_sdpo = sum(r["n_attempts"] for r in recs)
    sdpo_len = statistics.fmean(a["n_tokens"] for a in run.attempts())

    sampler = HFSampler(session.model, session.tokenizer)  # the base model (the LoRA was removed)
    prompt = encode_chat(session.tokenizer, problem.messages())
    t0 = time.perf_counter()
    plain_len = []
    for k in range(steps):  # the seeds best-of-k would use
        comps = sampler.sample(prompt, g, SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                                                         max_new_tokens=cfg.max_new_tokens,
                                                         seed=batch_seed("best-of-k", cfg.seed, k)))
        plain_len += [len(c.token_ids) for c in comps]
    plain_s = time.perf_counter() - t0
    split = {k: statistics.fmean(r.get(k, 0.0) for r in recs) for k in KEYS}
    return {"ratio": (sdpo_s / n_sdpo) / (plain_s / (steps * g)), "sdpo_per_attempt": sdpo_s / n_sdpo,
            "plain_per_attempt": plain_s / (steps * g), "sdpo_len": sdpo_len, "plain_len": statistics.fmean(plain_len),
            "solved": any(r["n_passed"] for r in recs), **split}


def _mmm(xs, fmt="{:.2f}"):
    return "/".join(fmt.format(x) for x in (min(xs), statistics.median(xs), max(xs)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="problems/stdio_second_largest.yaml")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--dtype", default=None, help="base-weight dtype: auto, fp32, bf16 [auto]")
    ap.add_argument("--micro-batch-tokens", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="first round's seed (round r uses seed + r)")
    a = ap.parse_args()

    from sdpo_cli.config import resolve_config
    from sdpo_cli.problem import load_problem
    from sdpo_cli.session import load_session

    problem = load_problem(a.problem)
    cfg = resolve_config(flag_values={"batch_size": a.batch_size, "max_new_tokens": a.max_new_tokens,
                                      "dtype": a.dtype, "micro_batch_tokens": a.micro_batch_tokens, "device": "cpu",
                                      "seed": a.seed})
    session = load_session(cfg)
    rounds = []
    for r in range(a.rounds):
        res = one_round(problem, cfg.replace(seed=cfg.seed + r), session, a.steps)
        rounds.append(res)
        print(f"round {r + 1}: SDPO {res['sdpo_per_attempt']:.2f} s/attempt ({res['sdpo_len']:.0f} tokens), plain "
              f"{res['plain_per_attempt']:.2f} s/attempt ({res['plain_len']:.0f} tokens), overhead ratio "
              f"{res['ratio']:.2f}x; step: " + ", ".join(f"{k[5:-2]} {res[k]:.1f} s" for k in KEYS)
              + (" (a step solved it: fewer updates)" if res["solved"] else ""), flush=True)
    dtype = next(session.model.parameters()).dtype
    print(f"\n{cfg.model}, {dtype}, G={cfg.batch_size}, max_new_tokens={cfg.max_new_tokens}, micro-batch "
          f"{cfg.micro_batch_tokens} tokens, {a.rounds} rounds x {a.steps} steps; min/median/max")
    print(f"  overhead ratio {_mmm([x['ratio'] for x in rounds])}x  (SDPO {_mmm([x['sdpo_per_attempt'] for x in rounds])}"
          f" s/attempt, plain {_mmm([x['plain_per_attempt'] for x in rounds])} s/attempt)")
    for k in KEYS:
        print(f"  {k:<18} {_mmm([x[k] for x in rounds], '{:.1f}')} s")


if __name__ == "__main__":
    main()
