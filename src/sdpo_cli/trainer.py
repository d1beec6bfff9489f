"""Test-time SDPO on one problem, top to bottom (SPEC §3.2, with LoRA instead of full fine-tuning).

    session = Session(cfg)                              # loads the model once for many problems
    for event in solve(problem, session, run_dir):      # yields one dict per step, then "done"
        ...

Each step: sample G attempts with the current adapter -> verify them -> if one passes, stop ->
otherwise build each attempt's teacher prompt (question + its own feedback, or a successful sibling
as demonstration) -> teacher logits on the student's exact sampled tokens (no grad) -> student
logits -> `sdpo_loss` -> one AdamW step on the LoRA weights -> EMA teacher update -> checkpoint.

Departures from the paper, and why:
  * LoRA (rank 16, lr 1e-4) instead of full fine-tuning at lr 1e-6: one 135M-8B model fits beside
    its EMA teacher as a second adapter; LoRA needs a ~10x larger lr (PEERS §C).
  * G = 8 attempts per step on CPU (16 on GPU, as the paper): Fig. 19 finds 8 as good early on.
  * How the update batches sequences and bounds memory is documented in update.py (SDPOUpdater).
The loop never prints: the CLI renders the events; run files are written through `runs.RunDir`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from .attempt import Attempt, attempt_batch
from .config import SolveConfig
from .runs import RunDir, versions
from .sampling import SamplingParams
from .update import SDPOUpdater, teacher_messages  # noqa: F401 - teacher_messages re-exported

WARN_SHORT_TOKENS = 8  # median response length below this counts as collapse


# --------------------------------------------------------------------------------------------------
# Pure pieces (unit-tested without a model)


def step_warnings(attempts: list[Attempt]) -> list[str]:
    """Warnings for a step whose attempts collapsed or all failed the same way (nothing to learn)."""
    warns = []
    lengths = sorted(len(a.completion.token_ids) for a in attempts)
    if lengths and lengths[len(lengths) // 2] < WARN_SHORT_TOKENS:
        warns.append(f"responses collapsed: median length {lengths[len(lengths) // 2]} tokens")
    if len(attempts) > 1 and len({a.completion.text for a in attempts}) == 1:
        warns.append("responses collapsed: all attempts are identical")
    statuses = {a.verdict.status for a in attempts}
    if len(attempts) > 1 and len(statuses) == 1 and next(iter(statuses)) != "wrong_answer":
        s = next(iter(statuses)).replace("_", " ")
        warns.append(f"all {len(attempts)} attempts failed the same way ({s}); check the limits/prompt")
    elif len(attempts) > 1 and len({a.verdict.feedback for a in attempts}) == 1 and not attempts[0].passed:
        warns.append(f"all {len(attempts)} attempts got identical feedback; the teacher signal is weak")
    return warns


def _quantiles(xs: list[int]) -> tuple[int, int, int]:
    s = sorted(xs)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return pick(0.1), pick(0.5), pick(0.9)


# --------------------------------------------------------------------------------------------------
# Session: what is loaded once per process


class Session:
    """The base model, tokenizer and sampling backend, shared by every problem of one command.

    Tests pass a preloaded `model` and `tokenizer` (a tiny random model) instead of a model name.
    """

    def __init__(self, cfg: SolveConfig, *, model=None, tokenizer=None):
        from .model import configure_threads, default_device, load_model

        configure_threads()
        device = cfg.device or (str(next(model.parameters()).device) if model is not None else default_device())
        self.cfg = cfg.resolve(device).validate()
        self.vllm = None
        if self.cfg.backend == "vllm":
            # The engine must exist before the trainer allocates accelerator memory (PEERS §B.4).
            from .sampling import get_sampler

            self.vllm = get_sampler("vllm", model=self.cfg.model, lora_rank=self.cfg.lora_rank, seed=self.cfg.seed,
                                    gpu_memory_utilization=self.cfg.gpu_memory_utilization)
        if model is None:
            model, tokenizer = load_model(self.cfg.model, device=device)
        self.model, self.tokenizer = model, tokenizer

    def sampler(self, model, attempts_done: int = 0):
        """The sampler for one problem (hf samples from the live `model`)."""
        if self.vllm is not None:
            return self.vllm
        if self.cfg.backend == "scripted":
            from .sampling.scripted import ScriptedSampler

            s = ScriptedSampler(self.tokenizer)
            s.skip(attempts_done)
            return s
        from .sampling.hf import HFSampler

        return HFSampler(model, self.tokenizer)


def _fresh_lora(session: Session):
    import torch

    from .model import attach_lora

    torch.manual_seed(session.cfg.seed)  # same seed -> same LoRA init -> same run
    return attach_lora(session.model, rank=session.cfg.lora_rank, alpha=session.cfg.lora_alpha)


def solve(problem, session: Session, run: RunDir, *, resume: bool = False) -> Iterator[dict]:
    """Run (or resume) test-time SDPO on `problem`, writing `run`. Yields step events, then a "done" event."""
    from .model import encode_chat, save_adapter

    cfg = session.cfg
    model = _fresh_lora(session)
    try:
        updater = SDPOUpdater(model, session.tokenizer, cfg, rollout_correction=session.vllm is not None)
        prompt_ids = encode_chat(session.tokenizer, problem.messages())
        ck, step, used, best, wall = run.start_point(resume)
        if ck:
            updater.load(run.state_dir(ck["step"]))
        sampler = session.sampler(model, attempts_done=used)
        adapter_dir = ck.get("adapter_dir") if ck else None  # vLLM samples from the latest saved adapter
        solved_at, winner, status = None, None, "exhausted"
        yield {"type": "start", "run": str(run.path), "budget": cfg.budget, "attempts_used": used, "step": step,
               "batch_size": cfg.batch_size, "n_tests": problem.n_tests, "resumed": bool(ck)}
        try:
            while used < cfg.budget:
                t_step = time.perf_counter()
                n = min(cfg.batch_size, cfg.budget - used)
                params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                                        max_new_tokens=cfg.max_new_tokens, seed=cfg.seed * 1_000_003 + step)
                attempts, t_sample, t_verify = attempt_batch(sampler, problem, prompt_ids, n, params, step=step,
                                                             first_number=used + 1, adapter_dir=adapter_dir)
                run.append_attempts([a.record() for a in attempts])
                best = max(best, max(a.verdict.n_passed for a in attempts))
                winner = next((a for a in attempts if a.passed), None)
                lengths = [len(a.completion.token_ids) for a in attempts]
                p10, p50, p90 = _quantiles(lengths)
                rec = {"step": step, "attempts_used": used + n, "n_attempts": n, "n_passed": sum(a.passed for a in attempts),
                       "best_passed": max(a.verdict.n_passed for a in attempts), "best_so_far": best,
                       "n_tests": problem.n_tests, "len_p10": p10, "len_p50": p50, "len_p90": p90,
                       "distinct_answers": len({(a.verdict.answer or "").strip() for a in attempts}),
                       "truncated": sum(a.completion.truncated for a in attempts),
                       "time_sample_s": t_sample, "time_verify_s": t_verify, "warnings": step_warnings(attempts)}
                if winner is None:
                    rec.update(updater.update(problem, prompt_ids, attempts))
                    if session.vllm is not None:
                        # A new directory per update, served under a new LoRA name and id (never reused,
                        # PEERS §B); only the last few are kept on disk.
                        adapter_dir = str(save_adapter(model, run.path / "adapters" / f"step-{step}"))
                        _prune_adapters(run.path / "adapters", keep=KEEP_ADAPTERS)
                    updater.save(run.state_dir(step))
                rec["time_step_s"] = time.perf_counter() - t_step
                wall += rec["time_step_s"]
                used += n
                run.append_step(rec)
                if winner is None:
                    run.commit_step(step, {"attempts_used": used, "best_passed": best, "wall_s": wall,
                                           "adapter_dir": adapter_dir})
                yield {"type": "step", **rec, "budget": cfg.budget}
                if winner is not None:
                    solved_at, status = used - n + winner.index, "solved"
                    break
                step += 1
        except KeyboardInterrupt:
            mark_interrupted(problem, cfg, run)
            raise
        if winner is not None:
            ext = "py" if problem.kind in ("stdio", "function") else "txt"
            run.write_solution(winner.verdict.answer or winner.completion.text, ext)
        save_adapter(model, run.path / "adapter")
        summary = _summary(problem, cfg, run, status, solved_at, used, best, wall)
        run.write_summary(summary)
        yield {"type": "done", **summary}
    finally:
        session.model = model.unload()  # drop the LoRA layers: the next problem starts from the base model


KEEP_ADAPTERS = 3


def _prune_adapters(folder: Path, keep: int) -> None:
    import shutil

    dirs = sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in dirs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def mark_interrupted(problem, cfg, run: RunDir) -> None:
    """Write an "interrupted" summary from the last checkpoint (what a resume continues from),
    unless the run already finished."""
    if (run.summary() or {}).get("status") in ("solved", "exhausted"):
        return
    ck = run.checkpoint() or {}
    run.write_summary(_summary(problem, cfg, run, "interrupted", None, ck.get("attempts_used", 0),
                               ck.get("best_passed", 0), ck.get("wall_s", 0.0)))


def _summary(problem, cfg, run, status, solved_at, used, best, wall) -> dict:
    return {"run": str(run.path), "problem_id": problem.id, "problem_file": str(problem.path), "method": "sdpo",
            "status": status, "solved": status == "solved", "discovery_index": solved_at, "attempts_used": used,
            "budget": cfg.budget, "best_tests_passed": best, "n_tests": problem.n_tests, "wall_time_s": round(wall, 2),
            "seed": cfg.seed, "versions": versions()}
