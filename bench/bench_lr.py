"""How far one SDPO update moves the student, per learning rate (how the CPU default lr was chosen).

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_lr.py [--problem problems/demo_apples.yaml]
        [--lrs 1e-5,1e-4,1e-3] [--updates 4] [--batch-size 8] [--max-new-tokens 96]

Samples one batch of attempts from the base model, then for each lr starts a fresh LoRA (rank 16,
the default) and applies `--updates` SDPO updates on that same batch (same feedback, EMA teacher).
Reported per lr: the distillation loss at each update (reverse KL to the teacher on the batch) and
loss_last / loss_first. An lr whose ratio stays ~1 does not learn within a test-time budget; one
that drives it to ~0 in a few updates copies the teacher wholesale (and risks collapse).
"""

import argparse
import time

import torch

from sdpo_cli.attempt import attempt_batch
from sdpo_cli.config import resolve_config
from sdpo_cli.model import attach_lora, configure_threads, encode_chat, load_model
from sdpo_cli.problem import load_problem
from sdpo_cli.sampling import SamplingParams
from sdpo_cli.sampling.hf import HFSampler
from sdpo_cli.update import SDPOUpdater


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="problems/demo_apples.yaml")
    ap.add_argument("--lrs", default="1e-5,1e-4,1e-3")
    ap.add_argument("--updates", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    a = ap.parse_args()
    configure_threads()
    model, tok = load_model("smollm2-135m")
    problem = load_problem(a.problem)
    prompt = encode_chat(tok, problem.messages())
    attempts, _, _ = attempt_batch(HFSampler(model, tok), problem, prompt, a.batch_size,
                                   SamplingParams(max_new_tokens=a.max_new_tokens, seed=0), step=0, first_number=1)
    print(f"{problem.id}: {a.batch_size} attempts, {sum(x.passed for x in attempts)} passed, "
          f"mean {sum(len(x.completion.token_ids) for x in attempts) / len(attempts):.0f} tokens")
    for lr in [float(x) for x in a.lrs.split(",")]:
        torch.manual_seed(0)
        peft = attach_lora(model, rank=16, alpha=32)
        upd = SDPOUpdater(peft, tok, resolve_config(flag_values={"lr": lr, "device": "cpu"}))
        t0 = time.perf_counter()
        losses = [upd.update(problem, prompt, attempts)["loss"] for _ in range(a.updates)]
        model = peft.unload()
        print(f"lr {lr:g}: loss per update {' '.join(f'{x:.4f}' for x in losses)}; "
              f"last/first {losses[-1] / losses[0]:.2f}; {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
