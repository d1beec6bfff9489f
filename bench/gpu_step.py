"""SDPO steps at real model shapes on one GPU, with no download: where the time of a step goes.

    python bench/gpu_step.py                 # Qwen3-1.7B and Qwen3-8B shapes, G=16 x 1024 tokens, 3 steps (< 8 min, H200)
    python bench/gpu_step.py --quick         # Qwen3-8B shapes, G=16 x 256 tokens, 2 steps (< 3 min)
    python bench/gpu_step.py --sizes tiny --device cpu --tokens 16 --steps 1   # smoke test of this script
    scripts/gpu_check.sh                     # installs what is missing from .whl/, then runs this

Each model is built from its config with random weights directly on the device in bf16 (same
shapes as Qwen3-1.7B / Qwen3-8B: hidden size, layers, heads, vocabulary 151936), with a synthetic
word-level tokenizer of the same vocabulary and a ChatML template; nothing is read from the hub. A
rank-16 LoRA on every linear layer and the EMA teacher are attached as `sdpo solve` does.

Per step: sample G attempts of exactly `--tokens` new tokens (EOS banned before that: random
weights would otherwise stop at random), give every attempt a failing verdict with ~100 tokens of
feedback, then one SDPO update (hf backend, defaults of `sdpo solve` on CUDA unless flags say
otherwise). After the steps, `--plain` batches of plain sampling from the base model (adapter off),
same G and lengths: what best-of-k pays per attempt. Printed per model: the mean time split
(sample / teacher+student forward / backward / optimizer+EMA), sampling and update tokens/s, peak
CUDA memory of sampling and of the update, and the overhead ratio = SDPO step time / plain sampling
time for the same number of attempts (the paper reports +6-17% per step over GRPO; verification is
not included here). The first step includes warm-up (kernel selection, allocator growth); its
figures are printed but the means use the steps after it when there are two or more.

Needs torch, transformers, peft (and pydantic for the problem model); run from the repository root
with src/ on PYTHONPATH (scripts/gpu_check.sh does all of it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

# Real shapes (the models' config.json); the weights are random.
SHAPES = {
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=False),
}
VOCAB = 151936
EOS_ID = 151645  # <|im_end|> in Qwen3's vocabulary
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# About 300 tokens of prompt and 100 of feedback with the word-level tokenizer (one token per word).
PROMPT = " ".join(["Write a Python program that reads n integers and prints the second largest distinct value."] * 20)
FEEDBACK = " ".join(["Runtime Error: Traceback line 3 in solve IndexError list index out of range."] * 8)


def synthetic_tokenizer():
    """A word-level tokenizer with Qwen3's vocabulary size, its special tokens at Qwen3's ids, and ChatML."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB)}
    special = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": EOS_ID}
    for name, i in special.items():
        del vocab[f"w{i}"]
        vocab[name] = i
    for i, word in enumerate(sorted(set((PROMPT + " " + FEEDBACK + " user assistant system").split()))):
        del vocab[f"w{1000 + i}"]
        vocab[word] = 1000 + i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>", unk_token="<|endoftext|>", chat_template=CHATML)


def build_model(size: str, device: str, dtype):
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(vocab_size=VOCAB, max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                         bos_token_id=151643, eos_token_id=EOS_ID, pad_token_id=151643, **SHAPES[size])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.pad_token_id = 151643
    return model.eval()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def run_size(size: str, a) -> dict:
    import torch

    from sdpo_cli.attempt import Attempt
    from sdpo_cli.config import resolve_config
    from sdpo_cli.model import attach_lora, encode_chat
    from sdpo_cli.problem import Problem
    from sdpo_cli.sampling import SamplingParams
    from sdpo_cli.sampling.hf import HFSampler
    from sdpo_cli.update import SDPOUpdater
    from sdpo_cli.verify import Verdict

    dev = a.device
    t0 = time.perf_counter()
    tok = synthetic_tokenizer()
    torch.manual_seed(0)
    model = build_model(size, dev, torch.bfloat16 if a.dtype == "bf16" else torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = resolve_config(flag_values={"device": dev, "batch_size": a.g, "max_new_tokens": a.tokens, "dtype": a.dtype,
                                      "micro_batch_tokens": a.micro_batch_tokens,
                                      "grad_checkpointing": a.grad_checkpointing})
    peft = attach_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha)
    updater = SDPOUpdater(peft, tok, cfg)
    problem = Problem.model_validate({"id": "bench", "title": "bench", "prompt": PROMPT,
                                      "verifier": {"kind": "stdio", "tests": [{"input": "", "output": "1"}]}})
    prompt_ids = encode_chat(tok, problem.messages())
    sampler = HFSampler(peft, tok, min_new_tokens=a.tokens)
    _sync(dev)
    setup_s = time.perf_counter() - t0
    print(f"[{size}] {n_params / 1e9:.2f}B parameters, prompt {len(prompt_ids)} tokens, G={a.g} x {a.tokens} new tokens, "
          f"micro-batch {cfg.micro_batch_tokens} tokens, grad checkpointing {cfg.grad_checkpointing}; "
          f"built in {setup_s:.0f} s", flush=True)

    steps = []
    for step in range(a.steps):
        params = SamplingParams(temperature=cfg.temperature, max_new_tokens=a.tokens, seed=step)
        _reset_peak(dev)
        _sync(dev)
        t0 = time.perf_counter()
        comps = sampler.sample(prompt_ids, a.g, params)
        _sync(dev)
        sample_s = time.perf_counter() - t0
        sample_peak = _peak_gib(dev)
        assert all(len(c.token_ids) == a.tokens for c in comps), "lengths were not forced"
        verdict = Verdict(passed=False, status="runtime_error", n_passed=0, n_total=1, feedback=FEEDBACK)
        attempts = [Attempt(step, i + 1, i + 1, c, verdict, 0.0, 0.0) for i, c in enumerate(comps)]
        _reset_peak(dev)
        t0 = time.perf_counter()
        stats = updater.update(problem, prompt_ids, attempts)
        _sync(dev)
        update_s = time.perf_counter() - t0
        rec = {"step": step, "sample_s": sample_s, "update_s": update_s, "forward_s": stats["time_forward_s"],
               "backward_s": stats["time_backward_s"], "optimizer_s": stats["time_optimizer_s"],
               "micro_batches": stats["micro_batches"], "sample_peak_gib": sample_peak,
               "update_peak_gib": _peak_gib(dev), "loss": stats["loss"]}
        steps.append(rec)
        print(f"[{size}] step {step}: sample {sample_s:.1f} s, update {update_s:.1f} s (forward {rec['forward_s']:.1f}, "
              f"backward {rec['backward_s']:.1f}, optimizer+EMA {rec['optimizer_s']:.2f}; {rec['micro_batches']} "
              f"micro-batches), peak memory sample {sample_peak:.1f} GiB / update {rec['update_peak_gib']:.1f} GiB",
              flush=True)

    plain = []
    for k in range(a.plain):
        params = SamplingParams(temperature=cfg.temperature, max_new_tokens=a.tokens, seed=1000 + k)
        _sync(dev)
        t0 = time.perf_counter()
        with peft.disable_adapter():  # the base model, as best-of-k samples it
            sampler.sample(prompt_ids, a.g, params)
        _sync(dev)
        plain.append(time.perf_counter() - t0)
        print(f"[{size}] plain sampling {k}: {plain[-1]:.1f} s", flush=True)

    timed = steps[1:] if len(steps) > 1 else steps
    mean = {k: statistics.fmean(s[k] for s in timed) for k in ("sample_s", "update_s", "forward_s", "backward_s",
                                                                  "optimizer_s")}
    step_s = mean["sample_s"] + mean["update_s"]
    plain_s = statistics.fmean(plain) if plain else float("nan")
    new_tokens = a.g * a.tokens
    out = {
        "size": size, "params_b": round(n_params / 1e9, 3), "g": a.g, "tokens": a.tokens, "prompt": len(prompt_ids),
        "steps_timed": len(timed), **{k: round(v, 3) for k, v in mean.items()}, "step_s": round(step_s, 3),
        "plain_sample_s": round(plain_s, 3), "sample_tok_s": round(new_tokens / mean["sample_s"], 1),
        "plain_tok_s": round(new_tokens / plain_s, 1) if plain else None,
        "update_tok_s": round(new_tokens / mean["update_s"], 1),
        "overhead_ratio": round(step_s / plain_s, 3) if plain else None,
        "sample_peak_gib": round(max(s["sample_peak_gib"] for s in steps), 2),
        "update_peak_gib": round(max(s["update_peak_gib"] for s in steps), 2),
        "micro_batch_tokens": cfg.micro_batch_tokens, "grad_checkpointing": cfg.grad_checkpointing,
    }
    print(f"[{size}] mean of {len(timed)} step(s): sample {mean['sample_s']:.1f} s ({out['sample_tok_s']:.0f} tok/s), "
          f"forward {mean['forward_s']:.1f} s, backward {mean['backward_s']:.1f} s, optimizer+EMA "
          f"{mean['optimizer_s']:.2f} s; update {out['update_tok_s']:.0f} response tok/s; plain sampling "
          f"{plain_s:.1f} s ({out['plain_tok_s']} tok/s); overhead ratio {out['overhead_ratio']}x; peak memory "
          f"sample {out['sample_peak_gib']} GiB, update {out['update_peak_gib']} GiB", flush=True)
    del updater, sampler, peft, model
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="comma-separated: qwen3-1.7b, qwen3-8b, tiny [default: both Qwen3]")
    ap.add_argument("--g", type=int, default=16, help="attempts per step [16]")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per attempt [1024; --quick 256]")
    ap.add_argument("--steps", type=int, default=None, help="SDPO steps per model [3; --quick 2]")
    ap.add_argument("--plain", type=int, default=1, help="plain sampling batches per model [1]")
    ap.add_argument("--quick", action="store_true", help="Qwen3-8B only, 256 tokens, 2 steps")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--micro-batch-tokens", type=int, default=None, help="[sdpo solve's CUDA default]")
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--json", help="also write the per-model results to this file")
    a = ap.parse_args()
    a.sizes = (a.sizes or ("qwen3-8b" if a.quick else "qwen3-1.7b,qwen3-8b")).split(",")
    a.tokens = a.tokens or (256 if a.quick else 1024)
    a.steps = a.steps or (2 if a.quick else 3)

    import torch

    from sdpo_cli.model import configure_threads

    configure_threads()
    if a.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device visible (pass --device cpu with --sizes tiny for a smoke test)")
        print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    results = [run_size(size, a) for size in a.sizes]
    print(f"total {time.perf_counter() - t0:.0f} s")
    print(json.dumps(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
