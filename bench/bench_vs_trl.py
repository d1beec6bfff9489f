"""Side by side with TRL's SDPO trainer (trl.experimental.sdpo, TRL 1.16) on this CPU: step time,
update time on an identical batch, and peak memory, interleaved. A development tool; TRL is not a
dependency of sdpo.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_vs_trl.py [--rounds 3] [--threads 2]
        [--side ours --side trl-bf16-ckpt --side ours-fp32 --side trl-fp32]

On first use it creates `.venv-trl` (gitignored): a venv that sees this environment's packages
through a .pth file (the same torch, transformers and peft on both sides) and gets `trl==1.16.0`
and its remaining dependencies (datasets, ...) from PyPI.

The workload (both sides): the default model (SmolLM2-135M-Instruct, converted by sdpo), G=8, 192
new tokens per attempt (EOS banned before that, so both sample exactly the same amount), top-20 +
tail, reverse KL, EMA teacher as a second LoRA adapter with rate 0.01, LoRA rank 16 / alpha 32 on all
linear layers, AdamW lr 1e-4, no importance-weight terms. The batch is bench_update.py's cached
batch of `--problem` (sampled once, verified, with real feedback); each side updates on exactly
those completion tokens and on the same teacher prompts (sdpo's, tokenised once and handed to TRL as
its teacher_input_ids), so the update compares like with like.

Sides: `ours` (sdpo's defaults: dtype auto, micro-batch 384 tokens), `ours-fp32`, `trl-bf16-ckpt`
(TRL's fastest shipped configuration: bf16 autocast and gradient checkpointing), `trl-fp32`. Each
(round, side) is a fresh process: it loads the model, samples one forced-length batch with its own
sampler (timed), then runs `--updates` updates on the recorded batch (timed; the first is warm-up
and is excluded from the mean when there are two or more). Step time = its sampling + its mean
update. Peak RSS: the whole process (VmHWM, Linux) and the updates alone (VmHWM reset before them).
Printed: each process's figures, then per side min / median / max, and ours / TRL ratios of the
medians for each pairing (ours vs trl-bf16-ckpt, ours-fp32 vs trl-fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRL_VENV = ROOT / ".venv-trl"
TRL_VERSION = "1.16.0"
G, TOKENS, TOPK, EMA, RANK, LORA_ALPHA, LR = 8, 192, 20, 0.01, 16, 32, 1e-4


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(key)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def trl_python() -> Path:
    """The .venv-trl interpreter, created with TRL installed on first use."""
    py = TRL_VENV / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import trl.experimental.sdpo"], capture_output=True).returncode == 0:
        return py
    print(f"creating {TRL_VENV} with trl=={TRL_VERSION} (once)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # This environment's packages (torch, transformers, peft, ...) come after .venv-trl's own.
    Path(site, "_sdpo_base_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", f"trl=={TRL_VERSION}"], check=True)
    return py


def prepare(problem: str, model: str) -> Path:
    """Our cached batch plus the token ids both sides need; written next to it as JSON."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_update import batch_file, load_batch

    from sdpo_cli.model import encode_chat, resolve_model
    from sdpo_cli.update import teacher_messages

    path = batch_file(problem, TOKENS, G, model)
    prob, prompt_ids, attempts = load_batch(path)
    from transformers import AutoTokenizer

    model_dir = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    msgs = teacher_messages(prob, [a.completion.text for a in attempts], [a.passed for a in attempts],
                            [a.verdict.feedback for a in attempts])
    out = path.with_name(path.stem + "_trl.json")
    out.write_text(json.dumps({
        "model_dir": str(model_dir), "batch": str(path), "prompt_ids": prompt_ids,
        "messages": prob.messages(), "completions": [a.completion.token_ids for a in attempts],
        "teacher_prompt_ids": [encode_chat(tok, m) if m else None for m in msgs],
    }))
    return out


# --------------------------------------------------------------------------------------------------
# Workers (one process each)


def worker_ours(side: str, spec: dict, updates: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_update import load_batch

    from sdpo_cli.config import resolve_config
    from sdpo_cli.model import attach_lora, configure_threads, load_model
    from sdpo_cli.sampling import SamplingParams
    from sdpo_cli.sampling.hf import HFSampler
    from sdpo_cli.update import SDPOUpdater

    configure_threads()
    dtype = "fp32" if side == "ours-fp32" else "auto"
    cfg = resolve_config(flag_values={"device": "cpu", "dtype": dtype, "lora_rank": RANK, "lora_alpha": LORA_ALPHA,
                                      "lr": LR, "topk": TOPK, "ema_rate": EMA})
    problem, prompt_ids, attempts = load_batch(Path(spec["batch"]))
    model, tok = load_model(spec["model_dir"], device="cpu", dtype=None if dtype == "auto" else dtype)
    torch.manual_seed(0)
    peft = attach_lora(model, rank=RANK, alpha=LORA_ALPHA)
    upd = SDPOUpdater(peft, tok, cfg)
    sampler = HFSampler(peft, tok, min_new_tokens=TOKENS)
    t0 = time.perf_counter()
    comps = sampler.sample(prompt_ids, G, SamplingParams(max_new_tokens=TOKENS, seed=0))
    sample_s = time.perf_counter() - t0
    assert all(len(c.token_ids) == TOKENS for c in comps)
    before_peak = _status_kib("VmHWM") / 1024  # load + sampling
    _reset_peak()
    times = []
    for _ in range(updates):
        t0 = time.perf_counter()
        upd.update(problem, prompt_ids, attempts)
        times.append(time.perf_counter() - t0)
    return {"sample_s": sample_s, "updates_s": times, "update_peak_mib": _status_kib("VmHWM") / 1024,
            "before_peak_mib": before_peak, "dtype": str(next(model.parameters()).dtype)}


def worker_trl(side: str, spec: dict, updates: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerControl, TrainerState
    from trl.experimental.sdpo import SDPOConfig, SDPOTrainer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    bf16 = side == "trl-bf16-ckpt"
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    args = SDPOConfig(
        output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=bf16, gradient_checkpointing=bf16, report_to="none",
        per_device_train_batch_size=G, num_generations=G, max_completion_length=TOKENS, temperature=1.0,
        generation_kwargs={"min_new_tokens": TOKENS}, learning_rate=LR, weight_decay=0.01, max_grad_norm=1.0,
        lr_scheduler_type="constant", distillation_mode="topk_logits", distillation_topk=TOPK,
        distillation_add_tail=True, distillation_alpha=1.0, teacher_model_kind="ema", teacher_update_rate=EMA,
        include_environment_feedback=True, save_strategy="no", seed=0, dataloader_num_workers=0,
    )
    trainer = SDPOTrainer(
        model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
        train_dataset=Dataset.from_list([{"prompt": spec["messages"]}] * G), processing_class=tok,
        peft_config=LoraConfig(r=RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                               task_type="CAUSAL_LM"),
    )
    trainer.create_optimizer()
    state, control = TrainerState(), TrainerControl()
    for cb in trainer.callback_handler.callbacks:
        if hasattr(cb, "on_train_begin") and type(cb).__name__ == "PEFTAdapterEMACallback":
            cb.on_train_begin(trainer.args, state, control)
            ema = cb
    t0 = time.perf_counter()
    trainer.model.eval()
    _, completions = trainer._generate_transformers([spec["prompt_ids"]] * G)
    sample_s = time.perf_counter() - t0
    assert all(len(c) == TOKENS for c in completions), [len(c) for c in completions]

    # The identical batch: our completions and our teacher prompts, in TRL's tensor layout.
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    comps = spec["completions"]
    width = max(map(len, comps))
    completion_ids = torch.tensor([c + [pad] * (width - len(c)) for c in comps])
    completion_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in comps])
    prompt = torch.tensor([spec["prompt_ids"]] * G)
    teach = [t if t is not None else spec["prompt_ids"] for t in spec["teacher_prompt_ids"]]
    tw = max(map(len, teach))
    teacher_prompt = torch.tensor([[pad] * (tw - len(t)) + t for t in teach])
    teacher_mask = torch.tensor([[0] * (tw - len(t)) + [1] * len(t) for t in teach])
    batch = {
        "prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion_ids,
        "completion_mask": completion_mask, "advantages": torch.zeros(G),
        "teacher_input_ids": torch.cat([teacher_prompt, completion_ids], 1),
        "teacher_attention_mask": torch.cat([teacher_mask, completion_mask], 1),
        "self_distillation_mask": torch.tensor([float(t is not None) for t in spec["teacher_prompt_ids"]]),
        "raw_completion_lengths": torch.tensor([len(c) for c in comps]),
    }
    trainer._prepare_inputs = lambda inputs: inputs  # update on this batch, no rollout
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's own loop, which is not used here
    before_peak = _status_kib("VmHWM") / 1024  # load + sampling
    _reset_peak()
    times = []
    for _ in range(updates):
        t0 = time.perf_counter()
        trainer.model.train()
        trainer.training_step(trainer.model, batch, None)
        torch.nn.utils.clip_grad_norm_([p for p in trainer.model.parameters() if p.requires_grad], 1.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        ema.on_step_end(trainer.args, state, control, model=trainer.model)
        times.append(time.perf_counter() - t0)
    return {"sample_s": sample_s, "updates_s": times, "update_peak_mib": _status_kib("VmHWM") / 1024,
            "before_peak_mib": before_peak, "dtype": "bf16 autocast + gradient checkpointing" if bf16 else "fp32"}


# --------------------------------------------------------------------------------------------------
# Driver


def _mmm(xs, fmt="{:.2f}"):
    return "/".join(fmt.format(x) for x in (min(xs), statistics.median(xs), max(xs)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="problems/stdio_second_largest.yaml")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--updates", type=int, default=2)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--side", action="append", choices=["ours", "ours-fp32", "trl-bf16-ckpt", "trl-fp32"])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        spec = json.loads(Path(a.spec).read_text())
        t0 = time.perf_counter()
        res = (worker_trl if a.worker.startswith("trl") else worker_ours)(a.worker, spec, a.updates)
        steady = res["updates_s"][1:] or res["updates_s"]
        res.update(side=a.worker, update_s=statistics.fmean(steady), step_s=res["sample_s"] + statistics.fmean(steady),
                   process_peak_mib=max(res["before_peak_mib"], res["update_peak_mib"]),
                   wall_s=time.perf_counter() - t0)
        print(json.dumps(res))
        return
    sides = a.side or ["ours", "trl-bf16-ckpt", "ours-fp32", "trl-fp32"]
    spec = prepare(a.problem, a.model)
    trl_py = trl_python() if any(s.startswith("trl") for s in sides) else None
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "TOKENIZERS_PARALLELISM": "false"}
    results: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(a.rounds):
        for side in sides:
            py = trl_py if side.startswith("trl") else sys.executable
            cmd = [str(py), __file__, "--worker", side, "--spec", str(spec), "--updates", str(a.updates)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=7200)
            if out.returncode != 0:
                sys.exit(f"{side} failed:\n{out.stderr[-4000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[side].append(res)
            print(f"round {r + 1} {side:<14} sample {res['sample_s']:6.1f} s, updates "
                  f"{', '.join(f'{t:.1f}' for t in res['updates_s'])} s, step {res['step_s']:.1f} s, "
                  f"peak RSS: updates {res['update_peak_mib']:.0f} MiB, process {res['process_peak_mib']:.0f} MiB "
                  f"({res['dtype']})", flush=True)
    print(f"\nG={G} x {TOKENS} tokens, top-{TOPK} + tail, reverse KL, EMA {EMA}, LoRA r{RANK} all linear, "
          f"{a.threads} thread(s), {a.rounds} rounds; min/median/max")
    med = {}
    for side in sides:
        rs = results[side]
        med[side] = {k: statistics.median(x[k] for x in rs)
                     for k in ("step_s", "update_s", "update_peak_mib", "process_peak_mib")}
        print(f"  {side:<14} step {_mmm([x['step_s'] for x in rs])} s, update {_mmm([x['update_s'] for x in rs])} s, "
              f"sample {_mmm([x['sample_s'] for x in rs])} s, peak RSS updates "
              f"{_mmm([x['update_peak_mib'] for x in rs], '{:.0f}')} MiB, process "
              f"{_mmm([x['process_peak_mib'] for x in rs], '{:.0f}')} MiB")
    for ours, trl in (("ours", "trl-bf16-ckpt"), ("ours-fp32", "trl-fp32"), ("ours", "trl-fp32")):
        if ours in med and trl in med:
            o, t = med[ours], med[trl]
            ratios = [x["update_s"] / y["update_s"] for x, y in zip(results[ours], results[trl])]
            print(f"  {ours} / {trl}: step {o['step_s'] / t['step_s']:.2f}, update {o['update_s'] / t['update_s']:.2f} "
                  f"(per round {_mmm(ratios)}), peak RSS of the updates {o['update_peak_mib'] / t['update_peak_mib']:.2f}"
                  f", of the process {o['process_peak_mib'] / t['process_peak_mib']:.2f}")


if __name__ == "__main__":
    main()
