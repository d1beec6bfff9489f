"""Peak CPU memory of the SDPO loss step against cross-entropy and a naive full-vocabulary KL.

Owns: one measurement, printed as a table. Each variant runs forward + backward of "linear head ->
loss" in a fresh subprocess; its peak is ru_maxrss at the end minus the resident set size just after
the inputs were allocated (and a tiny warm-up run of the same variant, so lazy library buffers are
not counted). The student's hidden state (B, T, 576) requires grad, so backward allocates the (B, T, V)
logit gradient like the real model; the head weight is frozen (LoRA does not train lm_head).
The student's logits stay referenced until after backward, as a model's output object holds them.

Does not own: timing claims (wall times are printed for orientation only, on a shared CPU) or GPU
numbers.

Variants:
    ce              F.cross_entropy on the student logits (the reference step)
    naive_full      log_softmax over V for student and teacher, reverse KL over V
    topk_autograd   top-K + tail built from log_softmax(student).gather (plain autograd, trl-style)
    sdpo            sdpo_loss(student_logits, teacher_logits, mask): teacher logits alive until backward
    sdpo_support    student_topk_ids -> teacher_support_logprobs -> free teacher logits -> sdpo_loss

Run (about a minute on one core):
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_loss_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

B, T, V, H = 4, 256, 49152, 576
TOPK = 20
VARIANTS = ["ce", "naive_full", "topk_autograd", "sdpo", "sdpo_support"]


def rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def step(variant: str, hidden, teacher_hidden, head, targets, mask) -> float:
    """Forward + backward of one variant; returns the loss value."""
    import torch
    import torch.nn.functional as F

    from sdpo_cli.loss import sdpo_loss, student_topk_ids, teacher_support_logprobs

    logits = head(hidden)  # (B, T, V), held until after backward like model outputs
    if variant == "ce":
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    elif variant == "naive_full":
        with torch.no_grad():
            teacher_lp = torch.log_softmax(head(teacher_hidden), -1)
        student_lp = torch.log_softmax(logits, -1)
        per_token = (student_lp.exp() * (student_lp - teacher_lp)).sum(-1)
        loss = ((per_token * mask).sum(-1) / mask.sum(-1)).mean()
    elif variant == "topk_autograd":
        ids = logits.detach().topk(TOPK, -1).indices
        with torch.no_grad():
            teacher_lp = torch.log_softmax(head(teacher_hidden), -1).gather(-1, ids)
        student_lp = torch.log_softmax(logits, -1).gather(-1, ids)

        def tail(lp):
            log_mass = torch.logsumexp(lp, -1, keepdim=True).clamp(max=-1e-7)
            return torch.cat([lp, torch.log(-torch.expm1(log_mass))], -1)

        s, t = tail(student_lp), tail(teacher_lp)
        per_token = (s.exp() * (s - t)).sum(-1)
        loss = ((per_token * mask).sum(-1) / mask.sum(-1)).mean()
    elif variant == "sdpo":
        with torch.no_grad():
            teacher_logits = head(teacher_hidden)
        loss, _ = sdpo_loss(logits, teacher_logits, mask, topk=TOPK)
    elif variant == "sdpo_support":
        ids = student_topk_ids(logits, TOPK)
        with torch.no_grad():
            support = teacher_support_logprobs(head(teacher_hidden), ids)  # teacher logits freed here
        loss, _ = sdpo_loss(logits, None, mask, topk=TOPK, teacher_support=support, topk_ids=ids)
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    loss.backward()
    value = loss.item()
    del logits
    return value


def measure(variant: str) -> dict:
    """Run one variant in this process and report its peak memory above the inputs."""
    import torch

    torch.manual_seed(0)
    head = torch.nn.Linear(H, V, bias=False)
    head.weight.requires_grad_(False)
    with torch.no_grad():
        head.weight.mul_(5.0)  # logit std ~3 instead of ~0.6, closer to a real LM head

    def inputs(b, t):
        hidden = torch.randn(b, t, H, requires_grad=True)
        teacher_hidden = hidden.detach() + 0.3 * torch.randn(b, t, H)
        targets = torch.randint(0, V, (b, t))
        mask = torch.ones(b, t)
        return hidden, teacher_hidden, targets, mask

    # Warm-up on a tiny batch: first-call allocations (thread pools, kernels) are not the loss's.
    h, th, tg, m = inputs(1, 2)
    step(variant, h, th, head, tg, m)
    del h, th, tg, m

    hidden, teacher_hidden, targets, mask = inputs(B, T)
    base = rss_mib()
    start = time.perf_counter()
    value = step(variant, hidden, teacher_hidden, head, targets, mask)
    seconds = time.perf_counter() - start
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()
    return {"variant": variant, "peak_mib": peak_rss_mib() - base, "seconds": seconds, "loss": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process (internal)")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant)))
        return

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    for variant in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant],
            capture_output=True, text=True, env=env, check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    btv_mib = B * T * V * 4 / 2**20
    ce = next(r["peak_mib"] for r in rows if r["variant"] == "ce")
    print(f"B={B} T={T} V={V} hidden={H} top-K={TOPK}, float32 CPU")
    print(f"one (B,T,V) float32 tensor = {btv_mib:.0f} MiB; peak = ru_maxrss - RSS after inputs")
    print(f"{'variant':<15} {'peak MiB':>9} {'(B,T,V)s':>9} {'x CE':>6} {'sec':>6} {'loss':>9}")
    for r in rows:
        print(
            f"{r['variant']:<15} {r['peak_mib']:>9.0f} {r['peak_mib'] / btv_mib:>9.2f} "
            f"{r['peak_mib'] / ce:>6.2f} {r['seconds']:>6.1f} {r['loss']:>9.4f}"
        )


if __name__ == "__main__":
    main()
