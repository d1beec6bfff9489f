"""Sampling speed with the LoRA adapter merged, unmerged, and without it (the base model), per dtype
and attention implementation, interleaved in one process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sampling.py [--rounds 3] [--g 8] [--tokens 192]
        [--dtypes bf16,fp32] [--problem problems/stdio_second_largest.yaml]

Per dtype, the default model loaded as `sdpo` loads it (model.load_model: on CPU, eager attention for
bf16, sdpa for fp32), a rank-16 LoRA on every linear layer whose B factors are random (so merging
really changes the weights, as after a few SDPO steps), and G attempts of exactly `--tokens` new
tokens each (EOS banned before that) per call. Variants, all run in turn within each round:

    base        the adapter disabled: what best-of-k samples (and the target speed)
    merged      HFSampler's default: the adapter folded into copies of the base weights while sampling
    unmerged    HFSampler(merge=False): peft's per-token adapter matmuls
    no-share    merged, but the prompt run for every row (share_prompt=False)
    other-attn  merged, with the other attention implementation (sdpa <-> eager)

Printed: per (dtype, variant), min / median / max over rounds of wall and process CPU time per call
(with one thread, CPU time is the work itself and barely moves when other jobs share the cores), and
its median CPU time relative to the first dtype's `base`. The base weights are checked bitwise
unchanged at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="problems/stdio_second_largest.yaml")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--g", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=192)
    ap.add_argument("--prompt-tokens", type=int, default=0,
                    help="lengthen the prompt to about this many tokens with earlier-feedback filler, as a late "
                         "multi-turn prompt is (0: the problem's prompt as it is)")
    ap.add_argument("--variants", default="base,merged,unmerged,no-share,other-attn")
    a = ap.parse_args()

    import contextlib

    import torch

    from sdpo_cli.model import attach_lora, configure_threads, encode_chat, load_model
    from sdpo_cli.problem import load_problem
    from sdpo_cli.sampling import SamplingParams
    from sdpo_cli.sampling.hf import HFSampler

    configure_threads()
    runs = {}  # (dtype, variant) -> (callable, results)
    checks = []
    for dtype in a.dtypes.split(","):
        model, tok = load_model(a.model, device="cpu", dtype=dtype)
        attn = model.config._attn_implementation
        other = "sdpa" if attn == "eager" else "eager"
        messages = load_problem(a.problem).messages()
        prompt = encode_chat(tok, messages)
        filler = "\n\nFeedback from an earlier attempt: Runtime Error. Test 1 failed: expected 7, got 3."
        while a.prompt_tokens and len(prompt) < a.prompt_tokens:
            messages[-1]["content"] += filler
            prompt = encode_chat(tok, messages)
        torch.manual_seed(0)
        peft = attach_lora(model, rank=16, alpha=32)
        with torch.no_grad():
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.01)
        checks.append((peft, {n: p.detach().clone() for n, p in peft.named_parameters() if "lora_" not in n}))
        params = SamplingParams(max_new_tokens=a.tokens, seed=0)
        HFSampler(peft, tok).sample(prompt, 2, SamplingParams(max_new_tokens=4, seed=0))  # warm-up

        def call(peft=peft, tok=tok, prompt=prompt, params=params, attn=attn, other=other, variant="merged"):
            s = HFSampler(peft, tok, merge=variant != "unmerged", share_prompt=variant != "no-share",
                          min_new_tokens=a.tokens)
            base = peft.get_base_model()
            ctx = peft.disable_adapter() if variant == "base" else contextlib.nullcontext()
            base.set_attn_implementation(other if variant == "other-attn" else attn)
            try:
                with ctx:
                    out = s.sample(prompt, a.g, params)
            finally:
                base.set_attn_implementation(attn)
            assert all(len(c.token_ids) == a.tokens for c in out)

        for variant in a.variants.split(","):
            label = f"{dtype} {variant}" + (f" ({other})" if variant == "other-attn" else f" ({attn})")
            runs[label] = (lambda call=call, variant=variant: call(variant=variant), [])
    for r in range(a.rounds):
        for label, (fn, res) in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            res.append((time.perf_counter() - t0, time.process_time() - c0))
            print(f"round {r + 1} {label:<28} wall {res[-1][0]:6.1f} s, CPU {res[-1][1]:6.1f} s", flush=True)
    unchanged = all(torch.equal(p, w[n]) for peft, w in checks for n, p in peft.named_parameters() if "lora_" not in n)
    print(f"\n{a.model}, prompt {len(prompt)} tokens, G={a.g} x {a.tokens} tokens, {torch.get_num_threads()} thread(s), "
          f"{a.rounds} rounds; "
          f"min/median/max per call; base weights bitwise unchanged: {unchanged}")
    ref = statistics.median(c for _, c in next(iter(runs.values()))[1])
    for label, (_, xs) in runs.items():
        walls, cpus = [w for w, _ in xs], [c for _, c in xs]
        fmt = lambda v: "/".join(f"{x:.1f}" for x in (min(v), statistics.median(v), max(v)))  # noqa: E731
        print(f"  {label:<28} wall {fmt(walls)} s, CPU {fmt(cpus)} s, CPU x{statistics.median(cpus) / ref:.3f}")


if __name__ == "__main__":
    main()
