"""The SDPO update alone, on one recorded batch: time and peak memory per setting, interleaved.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_update.py [--repeats 3] [--updates 2]
        [--variant fp32:1 --variant bf16:4096 ...] [--threads 1] [--baseline-src OTHER_CHECKOUT/src]

A variant is DTYPE:MICRO_BATCH_TOKENS[:ckpt][:noshare][:old], e.g. `fp32:1:noshare` (fp32, one whole
sequence per forward), `bf16:1` (one sequence per forward, shared prompt prefixes run once),
`bf16:4096:ckpt` (with gradient checkpointing), `fp32:1:old` (the code in `--baseline-src`, e.g. a
checkout from before micro-batching: `git worktree add /tmp/before <commit>`).

The batch: on first use, G=8 attempts of `--problem` are sampled from the base default model with
exactly `--tokens` new tokens each (EOS banned before that), verified, and cached in
bench/.cache/, so every variant and every later run updates on the same tokens and feedback.

Each (round, variant) runs in a fresh process, variants in turn within a round (interleaved, so slow
phases of a shared machine hit all of them). A process loads the model in the variant's dtype,
attaches a fresh rank-16 LoRA (seed 0) and runs `--updates` updates on the batch; it reports the mean
update time (teacher + student forward, backward, AdamW + EMA) as wall and as process CPU time (with
one thread, CPU time is the work itself and hardly moves when other jobs share the cores), its split, the peak RSS during the
updates (VmHWM reset just before them, Linux) and the RSS before them (model loaded). Printed:
min / median / max over rounds, and each variant's median time relative to the first variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")


def batch_file(problem: str, tokens: int, g: int, model: str) -> Path:
    """The cached batch for these settings; sampled and verified on first use."""
    name = f"batch_{Path(problem).stem}_{model}_{g}x{tokens}.json"
    path = CACHE / name
    if path.is_file():
        return path
    from sdpo_cli.model import configure_threads, encode_chat, load_model
    from sdpo_cli.problem import load_problem
    from sdpo_cli.sampling import SamplingParams
    from sdpo_cli.sampling.hf import HFSampler
    from sdpo_cli.verify import verify_many

    configure_threads()
    p = load_problem(problem)
    m, tok = load_model(model, device="cpu", dtype="fp32")
    prompt = encode_chat(tok, p.messages())
    comps = HFSampler(m, tok, min_new_tokens=tokens).sample(prompt, g, SamplingParams(max_new_tokens=tokens, seed=0))
    verdicts = verify_many(p, [(c.text, c.truncated) for c in comps])
    rows = [{"text": c.text, "token_ids": c.token_ids, "logprobs": c.logprobs, "truncated": c.truncated,
             "passed": v.passed, "status": v.status, "feedback": v.feedback} for c, v in zip(comps, verdicts)]
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"problem": problem, "model": model, "prompt_ids": prompt, "attempts": rows}))
    tmp.replace(path)
    return path


def load_batch(path: Path):
    """(problem, prompt_ids, attempts) from a cached batch file."""
    from sdpo_cli.attempt import Attempt
    from sdpo_cli.problem import load_problem
    from sdpo_cli.sampling import Completion
    from sdpo_cli.verify import Verdict

    data = json.loads(path.read_text())
    attempts = []
    for i, r in enumerate(data["attempts"]):
        v = Verdict(passed=r["passed"], status=r["status"], n_passed=0, n_total=1, feedback=r["feedback"])
        c = Completion(r["text"], r["token_ids"], r["logprobs"], r["truncated"])
        attempts.append(Attempt(0, i + 1, i + 1, c, v, 0.0, 0.0))
    return load_problem(ROOT / data["problem"]), data["prompt_ids"], attempts


def worker(variant: str, path: Path, updates: int) -> dict:
    import torch

    from sdpo_cli.config import resolve_config
    from sdpo_cli.model import attach_lora, configure_threads, load_model
    from sdpo_cli.update import SDPOUpdater

    dtype, budget, *flags = variant.split(":")
    configure_threads()
    problem, prompt, attempts = load_batch(path)
    model, tok = load_model(json.loads(path.read_text())["model"], device="cpu", dtype=dtype)
    torch.manual_seed(0)
    peft = attach_lora(model, rank=16, alpha=32)
    cfg = resolve_config(flag_values={"device": "cpu", "dtype": dtype, "micro_batch_tokens": int(budget),
                                      "grad_checkpointing": "ckpt" in flags})
    upd = SDPOUpdater(peft, tok, cfg)
    upd.share_prefixes = "noshare" not in flags  # (an attribute the baseline code does not read)
    rss_before = _status_kib("VmRSS")
    _reset_peak_rss()
    stats = []
    for _ in range(updates):
        t0, c0 = time.perf_counter(), time.process_time()
        s = upd.update(problem, prompt, attempts)
        s["time_update_s"] = time.perf_counter() - t0
        s["cpu_update_s"] = time.process_time() - c0
        stats.append(s)
    mean = lambda k: statistics.fmean(s.get(k, 0.0) for s in stats)  # noqa: E731
    return {"variant": variant, "update_s": mean("time_update_s"), "cpu_s": mean("cpu_update_s"), "forward_s": mean("time_forward_s"),
            "backward_s": mean("time_backward_s"), "optimizer_s": mean("time_optimizer_s"),
            "loss": stats[0]["loss"], "micro_batches": stats[0].get("micro_batches", len(attempts)),
            "active": stats[0]["active_sequences"], "rss_before_mib": rss_before / 1024,
            "peak_rss_mib": _status_kib("VmHWM") / 1024, "process_peak_mib": _status_kib("VmPeak") / 1024}


def _mmm(xs: list[float], fmt: str = "{:.2f}") -> str:
    return "/".join(fmt.format(x) for x in (min(xs), statistics.median(xs), max(xs)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="problems/stdio_second_largest.yaml")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--variant", action="append", help="DTYPE:MICRO_BATCH_TOKENS[:ckpt][:noshare] (repeatable)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--updates", type=int, default=2, help="updates per process (their mean is one sample)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--baseline-src", help="src/ folder of another checkout: variants with the flag :old run "
                    "its code (e.g. the update before this bench existed), the others this checkout's")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, Path(a.batch), a.updates)))
        return
    variants = a.variant or ["fp32:1", "fp32:4096", "bf16:1", "bf16:4096"]
    path = batch_file(a.problem, a.tokens, a.batch_size, a.model)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(a.repeats):
        for v in variants:
            cmd = [sys.executable, __file__, "--worker", v, "--batch", str(path), "--updates", str(a.updates)]
            src = a.baseline_src if v.endswith(":old") else str(ROOT / "src")
            out = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": src}, timeout=3600)
            if out.returncode != 0:
                sys.exit(f"{v} failed:\n{out.stderr[-3000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[v].append(res)
            print(f"round {r + 1} {v:<16} update {res['update_s']:6.2f} s wall, {res['cpu_s']:6.2f} s CPU (fwd {res['forward_s']:.2f}, "
                  f"bwd {res['backward_s']:.2f}, opt {res['optimizer_s']:.2f}), {res['micro_batches']} micro-batches, "
                  f"peak RSS {res['peak_rss_mib']:.0f} MiB (before {res['rss_before_mib']:.0f}), loss {res['loss']:.5f}",
                  flush=True)
    batch = json.loads(path.read_text())
    lengths = sorted(len(x["token_ids"]) for x in batch["attempts"])
    print(f"\n{a.model}, G={a.batch_size}, responses {lengths[0]}-{lengths[-1]} tokens, prompt {len(batch['prompt_ids'])} "
          f"tokens, {a.threads} thread(s), {a.repeats} rounds x {a.updates} updates; min/median/max")
    ref = statistics.median(x["update_s"] for x in results[variants[0]])
    ref_cpu = statistics.median(x["cpu_s"] for x in results[variants[0]])
    for v in variants:
        rs = results[v]
        med = statistics.median(x["update_s"] for x in rs)
        med_cpu = statistics.median(x["cpu_s"] for x in rs)
        print(f"  {v:<16} update {_mmm([x['update_s'] for x in rs])} s wall (x{ref / med:.2f} vs {variants[0]}), "
              f"{_mmm([x['cpu_s'] for x in rs])} s CPU (x{ref_cpu / med_cpu:.2f})  "
              f"fwd {_mmm([x['forward_s'] for x in rs])}  bwd {_mmm([x['backward_s'] for x in rs])}  "
              f"peak RSS {_mmm([x['peak_rss_mib'] for x in rs], '{:.0f}')} MiB, above model "
              f"{_mmm([x['peak_rss_mib'] - x['rss_before_mib'] for x in rs], '{:.0f}')} MiB")


if __name__ == "__main__":
    main()
