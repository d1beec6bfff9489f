"""Sampling throughput, transformers vs vLLM: tokens/s for G completions of one prompt, side by side.

    OMP_NUM_THREADS=1 .venv-vllm/bin/python bench/bench_backends.py [--n 4] [--max-new-tokens 128]
        [--repeats 2] [--model smollm2-135m] [--lora-rank 8]

Four configurations on the same prompt, G, length and seed, in one process:
  hf-base    HFSampler on the plain model (transformers generate)
  hf-lora    HFSampler on the peft model (fresh rank-r LoRA on every linear layer)
  vllm-base  VLLMSampler, adapter_dir=None
  vllm-lora  VLLMSampler with the same adapter saved to disk (a new directory each repeat, as the
             trainer writes one per step, so each repeat includes the adapter load)
  vllm-lora-same  the same, but one directory for every call (adapter stays loaded: no load cost)
Rounds are interleaved (one call of each per round) so that load from other processes on a shared
machine hits all four alike; after one untimed warm-up call each. tokens/s counts the tokens really
generated (EOS can stop a completion early). Needs the vLLM env (scripts/setup_vllm_env.sh); with
--backends hf it also runs in the main env.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "Write a Python function that checks whether a number is prime, then explain step by step how it works."


def timed(sample, prompt_ids, n, params, adapter_dir=None):
    t = time.perf_counter()
    completions = sample(prompt_ids, n, params, adapter_dir)
    dt = time.perf_counter() - t
    return sum(len(c.token_ids) for c in completions), dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=4, help="completions per call (G)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--backends", default="hf,vllm")
    a = ap.parse_args()
    backends = set(a.backends.split(","))

    from sdpo_cli.model import attach_lora, configure_threads, encode_chat, load_model, save_adapter
    from sdpo_cli.sampling import SamplingParams
    from sdpo_cli.sampling.hf import HFSampler

    threads = configure_threads()
    load0 = os.getloadavg()[0]
    model, tokenizer = load_model(a.model, device="cpu", dtype="fp32")
    prompt_ids = encode_chat(tokenizer, PROMPT)
    params = SamplingParams(temperature=1.0, max_new_tokens=a.max_new_tokens, seed=0)
    warm = SamplingParams(temperature=1.0, max_new_tokens=8, seed=0)

    configs = {}
    if "hf" in backends:
        configs["hf-base"] = HFSampler(model, tokenizer).sample
    # peft injects LoRA layers into the model it wraps, so the LoRA copy is a second load.
    peft_model = attach_lora(load_model(a.model, device="cpu", dtype="fp32")[0], rank=a.lora_rank,
                             alpha=2 * a.lora_rank)
    if "hf" in backends:
        configs["hf-lora"] = HFSampler(peft_model, tokenizer).sample
    tmp = Path(tempfile.mkdtemp(prefix="bench_backends_"))
    vllm_sampler = None
    if "vllm" in backends:
        from sdpo_cli.sampling.vllm import VLLMSampler

        t = time.perf_counter()
        vllm_sampler = VLLMSampler(a.model, lora_rank=a.lora_rank)
        print(f"vLLM engine start-up: {time.perf_counter() - t:.1f} s", file=sys.stderr)
        configs["vllm-base"] = vllm_sampler.sample
        configs["vllm-lora"] = vllm_sampler.sample
        configs["vllm-lora-same"] = vllm_sampler.sample

    def adapter_for(name, i):
        if name == "vllm-lora":
            return str(save_adapter(peft_model, tmp / f"step_{i:05d}"))
        if name == "vllm-lora-same":  # the adapter stays loaded in vLLM: generation cost only
            same = tmp / "same"
            return str(same if same.exists() else save_adapter(peft_model, same))
        return None

    results = {name: [] for name in configs}
    try:
        for name, sample in configs.items():
            timed(sample, prompt_ids, a.n, warm, adapter_for(name, 0))
        for r in range(1, a.repeats + 1):
            for name, sample in configs.items():
                results[name].append(timed(sample, prompt_ids, a.n, params, adapter_for(name, r)))
    finally:
        if vllm_sampler is not None:
            vllm_sampler.close()

    load1 = os.getloadavg()[0]
    print(f"model {a.model}, G={a.n}, max_new_tokens={a.max_new_tokens}, repeats={a.repeats}, "
          f"torch threads {threads}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"cores {len(os.sched_getaffinity(0))}, load avg {load0:.1f} -> {load1:.1f}")
    print(f"{'config':<14} {'tokens/s':>9} {'min':>7} {'max':>7} {'tokens/call':>12} {'s/call':>7}")
    for name, runs in results.items():
        rates = [tok / dt for tok, dt in runs]
        toks = statistics.mean(tok for tok, _ in runs)
        secs = statistics.mean(dt for _, dt in runs)
        print(f"{name:<14} {sum(t for t, _ in runs) / sum(d for _, d in runs):9.1f} {min(rates):7.1f} "
              f"{max(rates):7.1f} {toks:12.0f} {secs:7.2f}")


if __name__ == "__main__":
    main()
