"""One SDPO update on a batch of verified attempts, and the teacher prompts it distils from.

    updater = SDPOUpdater(peft_model, tokenizer, cfg)   # owns the AdamW optimiser and the Teacher
    stats = updater.update(problem, prompt_ids, attempts)
    updater.save(directory); updater.load(directory)    # resume

`teacher_messages` builds each attempt's teacher chat (question + its own feedback, or a successful
sibling as demonstration). `SDPOUpdater.update` scores the student's exact sampled tokens under the
teacher (no grad) and the student, applies `sdpo_loss`, takes one AdamW step on the LoRA weights and
moves the EMA teacher.

Sequences are processed one at a time (micro-batch 1, gradient accumulation), which is exactly the
per-sequence token mean of the official code and bounds memory by one sequence.
Does not own: sampling, verification, the solve loop (trainer.py) or run files.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

from .attempt import Attempt
from .config import SolveConfig
from .errors import RunError
from .feedback import reprompt

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


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


class SDPOUpdater:
    """Owns the optimiser and the teacher; `update(...)` performs one SDPO step on a batch."""

    def __init__(self, model, tokenizer, cfg: SolveConfig, *, rollout_correction: bool = False):
        import torch

        from .teacher import Teacher

        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.teacher = Teacher(model, cfg.teacher, rate=cfg.ema_rate, mix=cfg.mix)
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
