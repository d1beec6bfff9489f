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
  * Sequences are processed one at a time (micro-batch 1, gradient accumulation), which is exactly
    the per-sequence token mean of the official code (SPEC §1.8) and bounds memory by one sequence.
The loop never prints: the CLI renders the events; run files are written through `runs.RunDir`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

from .attempt import Attempt, attempt_batch
from .config import SolveConfig
from .errors import RunError
from .feedback import reprompt
from .runs import RunDir, versions
from .sampling import SamplingParams

WARN_SHORT_TOKENS = 8  # median response length below this counts as collapse
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


# --------------------------------------------------------------------------------------------------
# Pure pieces (unit-tested without a model)


def teacher_messages(problem, texts: list[str], passed: list[bool], feedbacks: list[str]) -> list[list[dict] | None]:
    """Each attempt's teacher chat, or None when it has no teacher signal (SPEC §2.2).

    A successful attempt of the same batch is the demonstration for the others, never for itself
    (dont_reprompt_on_self_success); otherwise the attempt's own feedback. `<think>` blocks are
    stripped from demonstrations. System messages of the student chat are kept.
    """
    system = [m for m in problem.messages() if m["role"] == "system"]
    out: list[list[dict] | None] = []
    for i in range(len(texts)):
        demo = next((texts[j] for j in range(len(texts)) if passed[j] and j != i), None)
        if demo is not None:
            user = reprompt(problem.prompt, solution=_THINK.sub("", demo).strip())
        elif feedbacks[i]:
            user = reprompt(problem.prompt, feedback=feedbacks[i])
        else:
            out.append(None)
            continue
        out.append(system + [{"role": "user", "content": user}])
    return out


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
# The update


class SDPOUpdater:
    """Owns the optimiser and the teacher; `update(...)` performs one SDPO step on a batch."""

    def __init__(self, model, tokenizer, cfg: SolveConfig, *, rollout_correction: bool = False):
        import torch

        from .teacher import Teacher

        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.teacher = Teacher(model, cfg.teacher, rate=cfg.ema_rate, mix=cfg.trust_region_mix)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.rollout_correction = rollout_correction  # vLLM sampled: apply min(p_trainer/p_vllm, clip)

    def _response_logits(self, prefix: list[int], response: list[int], teacher: bool):
        """(1, R, V) logits predicting each response token after `prefix` (exact ids, no re-tokenising)."""
        import torch

        from .model import forward_logits

        device = self.params[0].device
        ids = torch.tensor([prefix + response], device=device)
        mask = torch.ones_like(ids)
        keep = len(response) + 1  # position len(prefix)-1 predicts response[0]; the last one is dropped
        if teacher:
            return self.teacher.logits(ids, mask, logits_to_keep=keep)[:, :-1]
        return forward_logits(self.model, ids, mask, logits_to_keep=keep)[:, :-1]

    def update(self, problem, prompt_ids: list[int], attempts: list[Attempt]) -> dict:
        """One SDPO step. Returns the step's statistics (loss, KL, entropy, timings, ...)."""
        import torch

        from .loss import sdpo_loss, student_topk_ids, teacher_support_logprobs
        from .model import encode_chat

        cfg = self.cfg
        msgs = teacher_messages(problem, [a.completion.text for a in attempts], [a.passed for a in attempts],
                                [a.verdict.feedback for a in attempts])
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        n = len(attempts)
        t_fwd = t_bwd = 0.0
        loss_sum = kl_sum = clip_sum = ent_sum = tok_sum = 0.0
        active = 0
        for a, m in zip(attempts, msgs):
            resp = a.completion.token_ids
            if m is None or not resp:
                continue  # no teacher signal: zero loss, still counted in the mean over n sequences
            active += 1
            t0 = time.perf_counter()
            t_prefix = encode_chat(self.tokenizer, m)
            t_logits = self._response_logits(t_prefix, resp, teacher=True)
            s_logits = self._response_logits(prompt_ids, resp, teacher=False)
            ids = student_topk_ids(s_logits, cfg.topk)
            support = teacher_support_logprobs(t_logits, ids, temperature=cfg.temperature)
            del t_logits
            sampled = torch.tensor([resp], device=s_logits.device)
            mask = torch.ones(1, len(resp), device=s_logits.device)
            rollout = (torch.tensor([a.completion.logprobs], device=s_logits.device)
                       if self.rollout_correction and a.completion.logprobs else None)
            loss, stats = sdpo_loss(s_logits, None, mask, topk=cfg.topk, alpha=cfg.alpha, teacher_support=support,
                                    topk_ids=ids, sampled_ids=sampled, rollout_logprobs=rollout,
                                    is_clip=cfg.is_clip, adv_clip=cfg.adv_clip, temperature=cfg.temperature)
            t1 = time.perf_counter()
            (loss / n).backward()
            t2 = time.perf_counter()
            t_fwd += t1 - t0
            t_bwd += t2 - t1
            loss_sum += float(loss.detach())
            kl_sum += stats.kl * len(resp)
            ent_sum += stats.entropy * len(resp)
            clip_sum += max(stats.is_clipped_frac, stats.rollout_is_clipped_frac) * len(resp)
            tok_sum += len(resp)
        grad_norm = float("nan")
        stepped = False
        if active:
            t0 = time.perf_counter()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip))
            if math.isfinite(grad_norm):
                self.opt.step()
                self.teacher.update()  # once per step, after the optimiser step (SPEC §1.5)
                stepped = True
            self.opt.zero_grad(set_to_none=True)
            t_bwd += time.perf_counter() - t0
        return {
            "loss": loss_sum / n, "kl": kl_sum / tok_sum if tok_sum else 0.0,
            "is_clipped_frac": clip_sum / tok_sum if tok_sum else 0.0,
            "entropy": ent_sum / tok_sum if tok_sum else 0.0, "grad_norm": grad_norm, "updated": stepped,
            "active_sequences": active, "time_forward_s": t_fwd, "time_backward_s": t_bwd,
        }

    # ---- resume ---------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        import torch

        directory.mkdir(parents=True, exist_ok=True)
        state = {"student": {n: p.detach().cpu().clone() for n, p in zip(self.names, self.params)},
                 "teacher": self.teacher.state_dict(), "optimizer": self.opt.state_dict()}
        tmp = directory / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(directory / "state.pt")

    def load(self, directory: Path) -> None:
        import torch

        state = torch.load(directory / "state.pt", map_location="cpu", weights_only=False)
        if set(state["student"]) != set(self.names):
            raise RunError(f"{directory}: saved adapter does not fit this model (resume with the same --model and --lora-rank)")
        with torch.no_grad():
            for n, p in zip(self.names, self.params):
                p.copy_(state["student"][n])
        self.teacher.load_state_dict(state["teacher"])
        self.opt.load_state_dict(state["optimizer"])


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
