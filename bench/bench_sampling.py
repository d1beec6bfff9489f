"""Sampling speed with the LoRA adapter merged, unmerged, and without it (the base model), interleaved.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sampling.py [--rounds 3] [--g 8] [--tokens 192]
        [--dtype auto] [--problem problems/stdio_second_largest.yaml]

One process: the default model in `--dtype`, a rank-16 LoRA on every linear layer whose B factors are
random (so merging really changes the weights, as after a few SDPO steps), and G attempts of exactly
`--tokens` new tokens each (EOS banned before that) per call. Variants, in turn within each round:

    base       the adapter disabled: what best-of-k samples (and the target speed)
    merged     HFSampler's default: the adapter folded into copies of the base weights while sampling
    unmerged   HFSampler(merge=False): peft's per-token adapter matmuls
    no-share   merged, but the prompt run for every row (share_prompt=False)

Printed: per variant, min / median / max over rounds of wall and process CPU time per call (with one
thread, CPU time is the work itself and barely moves when other jobs share the cores) and its median
CPU time relative to `base`. The base weights are checked bitwise unchanged at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="problems/stdio_second_largest.yaml")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--g", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=192)
    a = ap.parse_args()

    import torch

    from sdpo_cli.model import attach_lora, configure_threads, encode_chat, load_model
    from sdpo_cli.problem import load_problem
    from sdpo_cli.sampling import SamplingParams
    from sdpo_cli.sampling.hf import HFSampler

    configure_threads()
    model, tok = load_model(a.model, device="cpu", dtype=None if a.dtype == "auto" else a.dtype)
    prompt = encode_chat(tok, load_problem(a.problem).messages())
    torch.manual_seed(0)
    peft = attach_lora(model, rank=16, alpha=32)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    base_weights = {n: p.detach().clone() for n, p in peft.named_parameters() if "lora_" not in n}
    samplers = {
        "base": HFSampler(peft, tok, min_new_tokens=a.tokens),
        "merged": HFSampler(peft, tok, min_new_tokens=a.tokens),
        "unmerged": HFSampler(peft, tok, merge=False, min_new_tokens=a.tokens),
        "no-share": HFSampler(peft, tok, share_prompt=False, min_new_tokens=a.tokens),
    }
    params = SamplingParams(max_new_tokens=a.tokens, seed=0)
    samplers["merged"].sample(prompt, 2, SamplingParams(max_new_tokens=4, seed=0))  # warm-up
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in samplers}
    for r in range(a.rounds):
        for name, s in samplers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            if name == "base":
                with peft.disable_adapter():
                    out = s.sample(prompt, a.g, params)
            else:
                out = s.sample(prompt, a.g, params)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert all(len(c.token_ids) == a.tokens for c in out)
            res[name].append((wall, cpu))
            print(f"round {r + 1} {name:<9} wall {wall:6.1f} s, CPU {cpu:6.1f} s", flush=True)
    unchanged = all(torch.equal(p, base_weights[n]) for n, p in peft.named_parameters() if "lora_" not in n)
    print(f"\n{a.model}, {next(model.parameters()).dtype}, G={a.g} x {a.tokens} tokens, prompt {len(prompt)} tokens, "
          f"{torch.get_num_threads()} thread(s), {a.rounds} rounds; min/median/max per call; base weights "
          f"bitwise unchanged: {unchanged}")
    ref = statistics.median(c for _, c in res["base"])
    for name, xs in res.items():
        walls, cpus = [w for w, _ in xs], [c for _, c in xs]
        fmt = lambda v: "/".join(f"{x:.1f}" for x in (min(v), statistics.median(v), max(v)))  # noqa: E731
        print(f"  {name:<9} wall {fmt(walls)} s, CPU {fmt(cpus)} s, CPU x{statistics.median(cpus) / ref:.3f} of base")


if __name__ == "__main__":
    main()
