"""One SDPO update on a batch of verified attempts, and the teacher prompts it distils from.

    updater = SDPOUpdater(peft_model, tokenizer, cfg)   # owns the AdamW optimiser and the Teacher
    stats = updater.update(problem, prompt_ids, attempts)
    updater.save(directory); updater.load(directory)    # resume

`teacher_messages` builds each attempt's teacher chat (question + its own feedback, or a successful
sibling as demonstration). `SDPOUpdater.update` scores the student's exact sampled tokens under the
teacher (no grad) and the student, applies `sdpo_loss`, takes one AdamW step on the LoRA weights and
moves the EMA teacher.

Shared prefixes. Every student row starts with the same prompt, and the teacher prompts start with
the same chat header and question; each shared part runs through the model once per update (the
student's with grad, through detached key/value leaves whose gradient is sent back once at the end;
see `update`), so only each row's own tokens are recomputed per row.

Micro-batches. The sequences with a teacher signal are sorted by length and packed into
micro-batches of at most `cfg.micro_batch_tokens` padded tokens per forward pass (`micro_batches`;
a sequence longer than that runs alone). Each row is laid out as [left padding | prefix | response |
right padding], so every row's response starts in the same column: one `logits_to_keep` slice holds
all response positions, and position ids come from the attention mask (model.forward_logits). The
teacher rows (different prompts) and the student rows (one shared prompt) use the same grouping.
The loss of a micro-batch of b sequences is its mean of per-sequence token means, weighted b / n,
so the gradient equals the official code's micro-batch-1 objective (mean over the n sequences of
each sequence's token mean; sequences without a teacher signal add 0 and still count in n),
whatever the grouping, up to float rounding (tests/test_update.py: within 1e-5 in fp32).

Memory and precision. A micro-batch holds the activations of its tokens for backward plus its
logits at the response positions (teacher logits are reduced to the K + 1 support before the
backward); the token budget bounds both. `cfg.grad_checkpointing` recomputes each layer's
activations in backward instead (for long responses on a GPU). Base weights may be bf16
(model.auto_dtype): the forwards then run under autocast, so the LoRA branch computes in bf16 from
its fp32 weights; the LoRA weights, their gradients, the AdamW state and the EMA teacher stay fp32,
and loss.py's log-softmax, top-K and tail math is fp32 whatever the logits' dtype.

Does not own: sampling, verification, the solve loop (trainer.py) or run files.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .attempt import Attempt
from .config import default_micro_batch_tokens
from .errors import RunError
from .feedback import reprompt

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def teacher_messages(problem, texts: list[str], passed: list[bool], feedbacks: list[str]) -> list[list[dict] | None]:
    """Each attempt's teacher chat, or None when it has no teacher signal.

    A successful attempt of the same batch is the demonstration for the others, never for itself
    (the official code's dont_reprompt_on_self_success); otherwise the attempt's own feedback, which
    counts only when it is non-empty after `.strip()` (as the official `_collect_feedback`): a
    whitespace-only feedback gives no teacher signal.
    `<think>` blocks are stripped from demonstrations. System messages of the student chat are kept.
    """
    system = [m for m in problem.messages() if m["role"] == "system"]
    out: list[list[dict] | None] = []
    for i in range(len(texts)):
        demo = next((texts[j] for j in range(len(texts)) if passed[j] and j != i), None)
        if demo is not None:
            user = reprompt(problem.prompt, solution=_THINK.sub("", demo).strip())
        elif feedbacks[i].strip():
            user = reprompt(problem.prompt, feedback=feedbacks[i])
        else:
            out.append(None)
            continue
        out.append(system + [{"role": "user", "content": user}])
    return out


def micro_batches(prefix_lens: list[int], response_lens: list[int], budget: int) -> list[list[int]]:
    """Group rows into micro-batches of at most `budget` padded tokens, longest responses first.

    A micro-batch's padded size is rows x (longest prefix + longest response), the layout that
    `SDPOUpdater` builds. Rows are sorted by response length, then prefix length (both descending),
    and filled greedily in that order, so similar lengths share a micro-batch and padding stays small.
    A row that alone exceeds the budget gets a micro-batch of its own.

    Args:
        prefix_lens: per row, the prefix length (for SDPO the longer of the teacher and student prompt).
        response_lens: per row, the response length.
        budget: padded tokens per micro-batch, >= 1.

    Returns:
        row indices per micro-batch; every row appears exactly once.
    """
    order = sorted(range(len(prefix_lens)), key=lambda i: (-response_lens[i], -prefix_lens[i], i))
    groups: list[list[int]] = []
    cur: list[int] = []
    prefix = 0  # longest prefix in `cur`
    for i in order:
        # Responses are non-increasing along `order`: a group's longest response is its first row's.
        longest = response_lens[cur[0]] if cur else response_lens[i]
        if cur and (len(cur) + 1) * (max(prefix, prefix_lens[i]) + longest) > budget:
            groups.append(cur)
            cur, prefix = [], 0
        cur.append(i)
        prefix = max(prefix, prefix_lens[i])
    if cur:
        groups.append(cur)
    return groups


def _common_prefix_len(seqs: list[list[int]]) -> int:
    """Length of the longest common prefix of `seqs`, capped so every sequence keeps >= 1 own token."""
    n = min(len(x) for x in seqs) - 1
    first = seqs[0]
    for k in range(max(n, 0)):
        if any(x[k] != first[k] for x in seqs[1:]):
            return k
    return max(n, 0)


@dataclass
class _Row:
    """One sequence of the update: its teacher prefix, the shared student prefix, its response."""

    index: int  # position in the attempts list
    teacher_prefix: list[int]
    response: list[int]
    rollout_logprobs: list[float] | None


def _pack(prefixes: list[list[int]], responses: list[list[int]], pad: int, device):
    """(ids, mask) of rows laid out [left pad | prefix | response | right pad], all responses starting
    in the same column. Returns int64 (B, P + R) ids and mask, with P / R the longest prefix / response."""
    import torch

    p = max(len(x) for x in prefixes)
    r = max(len(x) for x in responses)
    ids = torch.full((len(prefixes), p + r), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, (pre, resp) in enumerate(zip(prefixes, responses)):
        row = pre + resp
        ids[b, p - len(pre) : p - len(pre) + len(row)] = torch.tensor(row)
        mask[b, p - len(pre) : p - len(pre) + len(row)] = 1
    return ids.to(device), mask.to(device)


class SDPOUpdater:
    """Owns the optimiser and the teacher; `update(...)` performs one SDPO step on a batch.

    Args:
        model: the PeftModel with the student adapter "default" (model.attach_lora).
        tokenizer: its tokenizer (teacher prompts are chat-templated with it; pad id for padding).
        cfg: a config.SolveConfig; reads lr, weight_decay, grad_clip, topk, alpha, is_clip, adv_clip,
            temperature, teacher, ema_rate, mix, micro_batch_tokens, grad_checkpointing.
        rollout_correction: the sampler's log-probs come from another engine (vLLM): weight each
            token by min(p_trainer / p_sampler, is_clip).
    """

    def __init__(self, model, tokenizer, cfg, *, rollout_correction: bool = False):
        import torch

        from .teacher import Teacher

        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.teacher = Teacher(model, cfg.teacher, rate=cfg.ema_rate, mix=cfg.mix)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.rollout_correction = rollout_correction  # vLLM sampled: apply min(p_trainer/p_vllm, clip)
        self.share_prefixes = True  # run shared prompt prefixes once (see `update`); False for comparisons
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad or 0)  # padded positions are masked: any id works
        # bf16/fp16 base weights: the forwards run under autocast with peft's input casting off, so the
        # LoRA branch computes in the base dtype from its fp32 weights (as mixed-precision training does)
        # instead of copying every activation to fp32 and the sum back (measured ~15% of a CPU update).
        base_dtype = next(p.dtype for n, p in model.named_parameters() if "lora_" not in n and p.is_floating_point())
        self.autocast_dtype = base_dtype if base_dtype in (torch.bfloat16, torch.float16) else None
        base = model.get_base_model()
        if cfg.grad_checkpointing:
            # Non-reentrant checkpointing needs no input that requires grad and works under peft.
            # Only active in train mode: sampling and the teacher (eval mode, no grad) are unaffected.
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif getattr(base, "is_gradient_checkpointing", False):
            base.gradient_checkpointing_disable()

    @contextlib.contextmanager
    def _compute(self):
        """Context of every forward pass of the update (see `autocast_dtype` in __init__)."""
        import torch

        if self.autocast_dtype is None:
            yield
            return
        try:
            from peft.helpers import disable_input_dtype_casting
        except ImportError:  # older peft: its fp32 copies of the input stay, autocast still applies
            disable_input_dtype_casting = None
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.autocast(self.params[0].device.type, dtype=self.autocast_dtype))
            if disable_input_dtype_casting is not None:
                stack.enter_context(disable_input_dtype_casting(self.model))
            yield

    def _sync(self) -> None:
        """Wait for queued GPU work so the wall-clock timings below are the work's own."""
        import torch

        if self.params[0].device.type == "cuda":
            torch.cuda.synchronize(self.params[0].device)

    def _response_logits(self, prefix: list[int], response: list[int], teacher: bool):
        """(1, R, V) logits predicting each response token after `prefix` (exact ids, no re-tokenising)."""
        return self._batch_logits([prefix], [response], teacher)

    def _batch_logits(self, prefixes: list[list[int]], responses: list[list[int]], teacher: bool, shared=None):
        """(B, R, V) logits predicting each row's response tokens after its prefix (R = longest response;
        row b's logits beyond its own response length are padding). `shared`: key/values of tokens that
        come before every row's prefix (model.prefix_kv / Teacher.prefix)."""
        from .model import forward_logits

        ids, mask = _pack(prefixes, responses, self.pad_id, self.params[0].device)
        keep = max(len(r) for r in responses) + 1  # column P-1 predicts response[0]; the last column is dropped
        with self._compute():
            if teacher:
                return self.teacher.logits(ids, mask, logits_to_keep=keep, prefix=shared)[:, :-1]
            return forward_logits(self.model, ids, mask, logits_to_keep=keep, prefix=shared)[:, :-1]

    def update(self, problem, prompt_ids: list[int], attempts: list[Attempt]) -> dict:
        """One SDPO step. Returns the step's statistics (loss, KL, entropy, timings, ...).

        Shared prefixes: every student row starts with the same prompt, and the teacher prompts start
        with the same tokens too (chat header and question). Each shared prefix runs through the
        model once: the teacher's without grad, the student's with grad, its key/value tensors
        detached into leaves that every micro-batch reads; the gradient that reaches those leaves is
        summed and sent back through the one prefix graph at the end. Same objective and gradient as
        running full rows, minus (G - 1) copies of the prefix's forward and backward. Under gradient
        checkpointing (which cannot checkpoint layers that read a cache) student rows stay whole.

        Timings: time_forward_s = teacher + student forward passes and the loss; time_backward_s =
        backward; time_optimizer_s = gradient clip, AdamW step and EMA teacher update.
        """
        import torch

        from .loss import sdpo_loss, student_topk_ids, teacher_support_logprobs
        from .model import encode_chat, prefix_kv

        cfg = self.cfg
        msgs = teacher_messages(problem, [a.completion.text for a in attempts], [a.passed for a in attempts],
                                [a.verdict.feedback for a in attempts])
        rows = [
            _Row(i, encode_chat(self.tokenizer, m), a.completion.token_ids,
                 a.completion.logprobs if self.rollout_correction and a.completion.logprobs else None)
            for i, (a, m) in enumerate(zip(attempts, msgs))
            if m is not None and a.completion.token_ids  # no signal: zero loss, still counted in n
        ]
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        n = len(attempts)
        device = self.params[0].device
        t_fwd = t_bwd = t_opt = 0.0
        loss_sum = kl_sum = clip_sum = ent_sum = tok_sum = 0.0
        groups: list[list[int]] = []
        if rows:
            self._sync()
            t0 = time.perf_counter()
            # All but the last token of a prefix are shared: the last one's logits predict response[0].
            t_shared = _common_prefix_len([r.teacher_prefix for r in rows]) if self.share_prefixes else 0
            s_shared = len(prompt_ids) - 1 if self.share_prefixes and not cfg.grad_checkpointing else 0
            t_kv = s_kv = s_leaves = None
            with self._compute():
                if t_shared:
                    t_kv = self.teacher.prefix(rows[0].teacher_prefix[:t_shared])
                if s_shared:
                    s_kv = prefix_kv(self.model, prompt_ids[:s_shared])  # with grad: the graph back to the LoRA
            if s_kv:
                s_leaves = [(k.detach().requires_grad_(), v.detach().requires_grad_()) for k, v in s_kv]
            s_prefix = prompt_ids[s_shared:]
            self._sync()
            t_fwd += time.perf_counter() - t0
            budget = cfg.micro_batch_tokens or default_micro_batch_tokens(device.type)
            groups = micro_batches([max(len(r.teacher_prefix) - t_shared, len(s_prefix)) for r in rows],
                                   [len(r.response) for r in rows], budget)
        for group in groups:
            mb = [rows[i] for i in group]
            responses = [r.response for r in mb]
            lengths = torch.tensor([len(r) for r in responses], device=device)
            width = int(lengths.max())
            self._sync()
            t0 = time.perf_counter()
            t_logits = self._batch_logits([r.teacher_prefix[t_shared:] for r in mb], responses, True, t_kv)
            s_logits = self._batch_logits([s_prefix] * len(mb), responses, False, s_leaves)
            ids = student_topk_ids(s_logits, cfg.topk)
            support = teacher_support_logprobs(t_logits, ids, temperature=cfg.temperature)
            del t_logits
            mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).float()
            sampled = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in responses], device=device)
            rollout = None
            if any(r.rollout_logprobs is not None for r in mb):
                rollout = torch.tensor([(r.rollout_logprobs or [0.0] * len(r.response))
                                        + [0.0] * (width - len(r.response)) for r in mb], device=device)
            loss, stats = sdpo_loss(s_logits, None, mask, topk=cfg.topk, alpha=cfg.alpha, teacher_support=support,
                                    topk_ids=ids, sampled_ids=sampled, rollout_logprobs=rollout,
                                    is_clip=cfg.is_clip, adv_clip=cfg.adv_clip, temperature=cfg.temperature)
            self._sync()
            t1 = time.perf_counter()
            (loss * (len(mb) / n)).backward()  # loss = mean over this micro-batch's sequences
            self._sync()
            t2 = time.perf_counter()
            t_fwd += t1 - t0
            t_bwd += t2 - t1
            tokens = float(lengths.sum())
            loss_sum += float(loss.detach()) * len(mb)
            kl_sum += stats.kl * tokens
            ent_sum += stats.entropy * tokens
            clip_sum += max(stats.is_clipped_frac, stats.rollout_is_clipped_frac) * tokens
            tok_sum += tokens
            del s_logits, support, loss
        grad_norm = float("nan")
        stepped = False
        if rows:
            t0 = time.perf_counter()
            if s_kv is not None:  # the shared prompt's share of the gradient, summed over all rows
                torch.autograd.backward([t for kv in s_kv for t in kv], [t.grad for kv in s_leaves for t in kv])
                del s_kv, s_leaves
                self._sync()
                t_bwd += time.perf_counter() - t0
                t0 = time.perf_counter()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip))
            if math.isfinite(grad_norm):
                self.opt.step()
                self.teacher.update()  # once per step, after the optimiser step (paper Sec. 2.3)
                stepped = True
            self.opt.zero_grad(set_to_none=True)
            self._sync()
            t_opt = time.perf_counter() - t0
        return {
            "loss": loss_sum / n, "kl": kl_sum / tok_sum if tok_sum else 0.0,
            "is_clipped_frac": clip_sum / tok_sum if tok_sum else 0.0,
            "entropy": ent_sum / tok_sum if tok_sum else 0.0, "grad_norm": grad_norm, "updated": stepped,
            "active_sequences": len(rows), "micro_batches": len(groups), "time_forward_s": t_fwd,
            "time_backward_s": t_bwd, "time_optimizer_s": t_opt,
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

