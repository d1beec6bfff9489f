"""The SDPO self-distillation loss (paper Eq. 1 and App. A; official code
`verl/trainer/ppo/core_algos.py::compute_self_distillation_loss`): a pure tensor-in, tensor-out function.

Owns: the choice of distillation support (student top-K plus a tail bucket, or the full vocabulary),
the divergence (reverse KL, forward KL or generalised JSD), the detached per-token importance weights,
the optional advantage clip, masking and per-sequence aggregation, and a few logging statistics.

Does not own: running the student or the teacher, building teacher prompts, aligning the teacher's
logits with the student's response tokens (the caller passes both already aligned on the same tokens),
optimiser steps, or the EMA teacher. Imports only torch (and math).

Usage:
    loss, stats = sdpo_loss(student_logits, teacher_logits, mask)            # paper TTT defaults
    loss.backward()

Memory-lean usage (the trainer frees the teacher's full logits before the student's backward):
    ids = student_topk_ids(student_logits, 20)
    with torch.no_grad():
        support = teacher_support_logprobs(teacher_model(...).logits, ids)   # (B, T, 21)
    loss, stats = sdpo_loss(student_logits, None, mask, teacher_support=support, topk_ids=ids)

Shape notation: B = sequences in the batch, T = response tokens (student and teacher aligned on the
same sampled tokens), V = vocabulary size, K = top-K support size, N = support size seen by the
divergence (K + 1 with the tail bucket, K without it, V for the full vocabulary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# The tail bucket is log(1 - sum_topK p). When the top-K already holds (numerically) all the mass the
# sum is 0 in log space and log(-expm1(0)) = -inf; clamping the log-sum to <= -1e-7 keeps the tail
# finite (about log(1e-7) = -16.1), as the released code does (dp_actor.py::_forward_micro_batch).
_TAIL_LOGSUM_MAX = -1e-7
# The released code clamps the log importance ratio to +-20 before exp (core_algos.py).
_LOG_RATIO_CLAMP = 20.0
# Row-chunk size (elements) of the logsumexp buffer: 16M float32 = 64 MiB whatever B*T is. (On CPU,
# buffers above glibc's 32 MiB mmap ceiling go back to the OS when freed instead of staying resident.)
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class LossStats:
    """Cheap logging statistics of one `sdpo_loss` call; all means are over active (mask != 0) tokens.

    Attributes:
        kl: Mean per-token divergence (the one selected by `alpha`), before importance weights. With
            `adv_clip` it is still the reverse KL, not the clipped surrogate.
        is_clipped_frac: Fraction of active tokens whose SDPO IS ratio pi/pi_old was above `is_clip`
            (so the weight was cut to `is_clip`). 0.0 when `old_logprobs` is not given.
        active_frac: Fraction of all B*T tokens that are active.
        rollout_is_clipped_frac: Same as `is_clipped_frac` for the rollout-correction weight
            pi_old/pi_rollout. 0.0 when `rollout_logprobs` is not given.
        tail_mass: Mean student probability outside its top-K (how much the support leaves out).
            0.0 for the full-vocabulary support.
        entropy: Mean entropy (nats) of the student's full next-token distribution at `temperature`.
        logprob_gap: Mean log q(y_t) - log pi(y_t) on the sampled token (positive: the teacher likes
            the sampled token more than the student). None unless `sampled_ids` and the full
            `teacher_logits` are given (precomputed `teacher_support` may not contain y_t).
    """

    kl: float
    is_clipped_frac: float
    active_frac: float
    rollout_is_clipped_frac: float = 0.0
    tail_mass: float = 0.0
    entropy: float = 0.0
    logprob_gap: float | None = None


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half/bf16/float32 inputs, float64 for float64 (gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)


def _row_chunks(logits: torch.Tensor):
    """Yield (b, t-slice) index pairs covering a (B, T, V) tensor in chunks of ~_CHUNK_ELEMENTS.

    Chunks index (b, t-range) rather than a flattened view: logits sliced out of a longer sequence
    (logits[:, -T - 1 : -1]) cannot be flattened without a full copy.
    """
    batch, length, vocab = logits.shape
    rows = max(1, _CHUNK_ELEMENTS // vocab)
    for b in range(batch):
        for start in range(0, length, rows):
            yield b, slice(start, start + rows)


class _SupportLogProbs(torch.autograd.Function):
    """log p(v) = logits[v]/temperature - logsumexp(logits/temperature) at the ids only, in float32.

    Written as an autograd Function for memory: autograd through `log_softmax(...).gather(...)` or
    through `logits/temperature` keeps an extra (B, T, V) tensor alive until backward. Here only the
    input logits (which the model's output holds anyway) and the small logsumexp are saved. Forward
    and backward both work in row chunks of one reused float32 buffer, so the only (B, T, V) tensor
    they allocate is the gradient itself, in the logits' dtype. The arithmetic is float32 so bf16
    logits do not lose the ~1e-2 precision of a bf16 logsumexp (float64 stays float64, for gradcheck).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ids: torch.Tensor, temperature: float):
        # logits (B, T, V), ids (B, T, K) -> logprobs (B, T, K), lse (B, T, 1), entropy (B, T, 1),
        # all float32. The entropy of the full distribution comes almost free from the same pass, so
        # the trainer need not build a full log_softmax to log it.
        dtype = _compute_dtype(logits)
        lse = torch.empty(*logits.shape[:-1], 1, dtype=dtype, device=logits.device)
        entropy = torch.empty_like(lse)
        for b, rows in _row_chunks(logits):
            shifted = logits[b, rows].to(dtype, copy=True).div_(temperature)
            row_max = shifted.amax(dim=-1, keepdim=True)
            exp = shifted.sub_(row_max).exp_()  # e = exp(x - max), in place
            total = exp.sum(dim=-1, keepdim=True)
            lse[b, rows] = total.log() + row_max
            # With p = e / S: H = -sum p log p = log S - sum(e log e) / S; xlogy gives 0 log 0 = 0.
            entropy[b, rows] = total.log() - exp.xlogy_(exp).sum(dim=-1, keepdim=True) / total
        ctx.save_for_backward(logits, ids, lse)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(lse, entropy)
        return logits.gather(-1, ids).to(dtype) / temperature - lse, lse, entropy

    @staticmethod
    def backward(ctx, grad_logprobs: torch.Tensor, _grad_lse: torch.Tensor, _grad_entropy: torch.Tensor):
        logits, ids, lse = ctx.saved_tensors
        t = ctx.temperature
        dtype = _compute_dtype(logits)
        grad_logprobs = grad_logprobs.to(dtype)
        # d logp_k / d logit_v = (1[v == id_k] - softmax_v) / t, so
        # grad_v = (scatter(grad)_v - softmax_v * sum_k grad_k) / t.
        neg_total = grad_logprobs.sum(-1, keepdim=True).neg()  # (B, T, 1)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for b, rows in _row_chunks(logits):
            work = logits[b, rows].to(dtype, copy=True).div_(t).sub_(lse[b, rows]).exp_()
            work.mul_(neg_total[b, rows]).scatter_add_(-1, ids[b, rows], grad_logprobs[b, rows])
            grad[b, rows] = work.div_(t)
        return grad, None, None


def student_topk_ids(student_logits: torch.Tensor, topk: int) -> torch.Tensor:
    """The student's top-K token ids at every position: the distillation support (paper Eq. 11; the
    official code picks them from the student's training forward pass).

    Temperature does not change the order of the logits, so the ids are the same at any temperature.

    Args:
        student_logits: (B, T, V) student logits; not differentiated.
        topk: K; values above V are reduced to V.

    Returns:
        (B, T, K) int64 token ids, largest logit first.
    """
    k = min(topk, student_logits.shape[-1])
    return student_logits.detach().topk(k, dim=-1).indices


def _append_tail(logprobs: torch.Tensor) -> torch.Tensor:
    """(..., K) full-vocabulary log-probs -> (..., K + 1) with log(1 - sum p) as the last bucket."""
    log_mass = torch.logsumexp(logprobs, dim=-1, keepdim=True).clamp(max=_TAIL_LOGSUM_MAX)
    return torch.cat([logprobs, torch.log(-torch.expm1(log_mass))], dim=-1)


def _support_from_topk(topk_logprobs: torch.Tensor, add_tail: bool) -> torch.Tensor:
    """(..., K) full-vocabulary log-probs -> the distribution the divergence sees, (..., N)."""
    if add_tail:
        return _append_tail(topk_logprobs)
    # Renormalising over the top-K (distillation_add_tail=False): a different objective, kept for ablations.
    # Subtracting the log of the top-K mass equals log_softmax of the top-K logits.
    return topk_logprobs - torch.logsumexp(topk_logprobs, dim=-1, keepdim=True)


@torch.no_grad()
def teacher_support_logprobs(
    teacher_logits: torch.Tensor,
    topk_ids: torch.Tensor | None,
    *,
    temperature: float = 1.0,
    add_tail: bool = True,
) -> torch.Tensor:
    """Reduce the teacher's logits to its log-probs on the student's support (gathered at the student's ids).

    Lets the trainer free the teacher's (B, T, V) logits before the student's backward; pass the
    result to `sdpo_loss(..., teacher_support=..., topk_ids=topk_ids)` with the same `temperature`
    and `add_tail`. Runs without gradient: the teacher is a stop-gradient target (paper Sec. 2.3).

    Args:
        teacher_logits: (B, T, V) teacher logits aligned with the student's response tokens.
        topk_ids: (B, T, K) ids from `student_topk_ids`, or None for the full vocabulary.
        temperature: Sampling temperature, applied before normalising.
        add_tail: Append the tail bucket (True) or renormalise over the top-K (False).

    Returns:
        log-probs in float32 (float64 for float64 logits): (B, T, K + 1) with the tail, (B, T, K)
        without, (B, T, V) if `topk_ids` is None. Normalised over the full vocabulary before the
        tail/renormalisation step.
    """
    if topk_ids is None:
        return torch.log_softmax(teacher_logits.to(_compute_dtype(teacher_logits)) / temperature, dim=-1)
    topk_logprobs, _, _ = _SupportLogProbs.apply(teacher_logits.detach(), topk_ids, temperature)
    return _support_from_topk(topk_logprobs, add_tail)


def _divergence(student: torch.Tensor, teacher: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-token divergence summed over the support (core_algos.py::compute_self_distillation_loss).

    Args:
        student: (B, T, N) student log-probs S.
        teacher: (B, T, N) teacher log-probs T (detached).
        alpha: 1.0 reverse KL(S||T), 0.0 forward KL(T||S), otherwise generalised JSD.

    Returns:
        (B, T) divergence.
    """
    # The endpoints are explicit branches, not limits: the generalised JSD tends to 0 as alpha -> 0.
    if alpha == 1.0:
        return (student.exp() * (student - teacher)).sum(-1)
    if alpha == 0.0:
        return (teacher.exp() * (teacher - student)).sum(-1)
    # M = (1 - a) S + a T, computed in log space.
    log_m = torch.logaddexp(student + math.log1p(-alpha), teacher + math.log(alpha))
    kl_s = (student.exp() * (student - log_m)).sum(-1)
    kl_t = (teacher.exp() * (teacher - log_m)).sum(-1)
    return torch.lerp(kl_s, kl_t, alpha)


def _clip_weight(log_ratio: torch.Tensor, is_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """min(exp(clamp(log_ratio, +-20)), is_clip) and a bool mask of where the clip changed the value."""
    ratio = torch.exp(log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
    return ratio.clamp(max=is_clip), ratio > is_clip


def sdpo_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    topk: int | None = 20,
    alpha: float = 1.0,
    add_tail: bool = True,
    old_logprobs: torch.Tensor | None = None,
    rollout_logprobs: torch.Tensor | None = None,
    sampled_ids: torch.Tensor | None = None,
    is_clip: float = 2.0,
    adv_clip: float | None = None,
    temperature: float = 1.0,
    teacher_support: torch.Tensor | None = None,
    topk_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """SDPO self-distillation loss: divergence of the student from a stop-grad self-teacher.

    Per token t, with S and T the student's and teacher's log-probs on the support:
        loss_t = w_t * D_alpha(S_t, T_t),   w_t = w_is * w_rollout (detached),
    then loss = mean over sequences of (sum_t mask * loss_t / active tokens of that sequence)
    (the official code's token-mean per micro-batch of one sequence). A sequence with no active token
    contributes 0 and still counts in the mean.

    Support (paper Eq. 11): the student's top-K ids, the teacher gathered at the same ids, both
    normalised over the full vocabulary, plus a tail bucket log(1 - sum p) on each side (K + 1
    buckets). The gradient reaches every student logit through the logsumexp. `topk=None` uses the
    full vocabulary (one more (B, T, V) tensor per side). `add_tail=False` renormalises both sides over
    the top-K instead (a different objective; gradient only reaches the top-K logits).

    Advantage clip (`adv_clip`; paper Table 12 "Clip advantages 5.0", not in the released code). We use
    the exact surrogate of the reverse KL in advantage form (paper Sec. 2.1) per token:
    L_t = -sum_b pi(b) * sg[min(A(b), adv_clip)] with
    A(b) = log q(b) - log pi(b) over the support buckets. Unclipped, its value and gradient equal the
    reverse KL (the support sums to 1). The clip is upper-only: it caps how hard a bucket the teacher
    prefers far more than the student (q/pi > e^adv_clip) is pushed up, and leaves the push-down of
    buckets the student over-weights untouched (the run scripts carry only a `CLIP_ADV_HIGH` knob).

    Args:
        student_logits: (B, T, V) student logits on the response tokens; carries the gradient.
            Logits must be finite (raw model outputs are; -inf "banned token" logits give nan).
        teacher_logits: (B, T, V) teacher logits on the same tokens, or None when `teacher_support`
            is given. Detached here whatever the caller does (stop-gradient, paper Sec. 2.3).
        mask: (B, T) float or bool; nonzero = active token (response token of a sample that has a
            teacher signal).
        topk: Support size K chosen by the student (paper TTT: 20); None = full vocabulary.
        alpha: 1.0 reverse KL(student||teacher) (paper TTT), 0.0 forward KL, in between the
            generalised JSD (the official code's `alpha`). Must lie in [0, 1].
        add_tail: Append the tail bucket (True, paper) or renormalise over the top-K (False).
        old_logprobs: (B, T) log pi_old(y_t) at sampling time (same temperature); enables the SDPO IS
            weight min(exp(clamp(log pi(y_t) - old, +-20)), is_clip) (core_algos.py). Needs
            `sampled_ids`.
        rollout_logprobs: (B, T) log-probs the sampler (e.g. vLLM) reported for y_t; enables the
            rollout-correction weight min(exp(old - rollout), is_clip) where `old` is `old_logprobs`
            if given, else the current student log-prob (rollout_corr_helper.py). Needs `sampled_ids`
            when `old_logprobs` is not given.
        sampled_ids: (B, T) int64 sampled token ids y_t; used for IS weights and `logprob_gap`.
        is_clip: Upper clip of both importance weights (paper: 2.0).
        adv_clip: Upper clip of the per-bucket advantage (paper TTT: 5.0); None = no clip. Only valid
            with alpha == 1.
        temperature: Sampling temperature; both logits are divided by it before normalising.
        teacher_support: (B, T, N) teacher log-probs from `teacher_support_logprobs`, computed with
            the same `topk_ids`, `temperature` and `add_tail`; replaces `teacher_logits`.
        topk_ids: (B, T, K) support ids from `student_topk_ids`; required with `teacher_support` and
            a top-K support, optional otherwise (computed from the student logits).

    Returns:
        (loss, stats): a scalar float32 tensor attached to the student's graph (exactly 0 for an
        all-masked batch, still differentiable), and a `LossStats`.

    Raises:
        ValueError: alpha outside [0, 1]; adv_clip with alpha != 1; IS weights without the
            sampled ids they need; neither or both of teacher_logits / teacher_support; a
            teacher_support top-K support without topk_ids.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if adv_clip is not None and alpha != 1.0:
        raise ValueError(f"adv_clip is defined for the reverse KL only (alpha=1.0), got alpha={alpha}")
    if (teacher_logits is None) == (teacher_support is None):
        raise ValueError("pass exactly one of teacher_logits and teacher_support")
    if old_logprobs is not None and sampled_ids is None:
        raise ValueError("old_logprobs needs sampled_ids to read the student's log-prob of y_t")
    if rollout_logprobs is not None and old_logprobs is None and sampled_ids is None:
        raise ValueError("rollout_logprobs needs old_logprobs or sampled_ids")
    if topk is None and topk_ids is not None:
        raise ValueError("topk_ids given with topk=None (full vocabulary); drop one of them")
    if teacher_support is not None and topk is not None and topk_ids is None:
        raise ValueError("teacher_support needs the topk_ids it was gathered at")
    assert student_logits.dim() == 3, f"student_logits must be (B, T, V), got {tuple(student_logits.shape)}"
    assert mask.shape == student_logits.shape[:2], (
        f"mask {tuple(mask.shape)} vs logits {tuple(student_logits.shape)}"
    )
    if teacher_logits is not None:
        assert teacher_logits.shape == student_logits.shape, (
            f"teacher {tuple(teacher_logits.shape)} vs student {tuple(student_logits.shape)}"
        )
        teacher_logits = teacher_logits.detach()

    # ---- support log-probs: student (with grad), teacher (without), (B, T, N) ------------------------
    # The sampled token's log-probs (B, T) are read on the side, detached, for the IS weights and stats.
    student_sampled_lp = teacher_sampled_lp = tail_mass = None
    if topk is None:
        student_lp = torch.log_softmax(student_logits.to(_compute_dtype(student_logits)) / temperature, dim=-1)
        with torch.no_grad():
            entropy = -(student_lp.exp() * student_lp).sum(-1)
        if teacher_support is None:
            teacher_support = teacher_support_logprobs(teacher_logits, None, temperature=temperature)
            if sampled_ids is not None:
                teacher_sampled_lp = teacher_support.gather(-1, sampled_ids.unsqueeze(-1)).squeeze(-1)
        if sampled_ids is not None:
            student_sampled_lp = student_lp.detach().gather(-1, sampled_ids.unsqueeze(-1)).squeeze(-1)
    else:
        if topk_ids is None:
            topk_ids = student_topk_ids(student_logits, topk)
        topk_lp, student_lse, entropy = _SupportLogProbs.apply(student_logits, topk_ids, temperature)
        entropy = entropy.squeeze(-1)
        student_lp = _support_from_topk(topk_lp, add_tail)
        with torch.no_grad():
            tail_mass = 1.0 - topk_lp.exp().sum(-1)
            if sampled_ids is not None:
                student_sampled_lp = (
                    student_logits.detach().gather(-1, sampled_ids.unsqueeze(-1)).to(student_lse.dtype) / temperature
                    - student_lse
                ).squeeze(-1)
            if teacher_support is None:
                # Gather the sampled token in the same pass over the teacher's vocabulary (one
                # logsumexp), same as teacher_support_logprobs plus one extra id.
                ids = topk_ids
                if sampled_ids is not None:
                    ids = torch.cat([topk_ids, sampled_ids.unsqueeze(-1)], dim=-1)
                teacher_topk_lp, _, _ = _SupportLogProbs.apply(teacher_logits, ids, temperature)
                if sampled_ids is not None:
                    teacher_sampled_lp = teacher_topk_lp[..., -1]
                    teacher_topk_lp = teacher_topk_lp[..., :-1]
                teacher_support = _support_from_topk(teacher_topk_lp, add_tail)
    # The teacher's support follows the student's compute dtype (float32, or float64 in gradient checks).
    teacher_lp = teacher_support.detach().to(student_lp.dtype)
    assert teacher_lp.shape == student_lp.shape, (
        f"teacher support {tuple(teacher_lp.shape)} vs student support {tuple(student_lp.shape)}: "
        "same topk_ids / add_tail / topk?"
    )

    # ---- per-token divergence (B, T) ------------------------------------------------------------------
    divergence = _divergence(student_lp, teacher_lp, alpha)
    if adv_clip is None:
        per_token = divergence
    else:
        # Exact surrogate of the reverse KL with an upper clip on the (detached) advantage.
        advantage = (teacher_lp - student_lp).detach().clamp(max=adv_clip)
        per_token = -(student_lp.exp() * advantage).sum(-1)

    # ---- detached importance weights (core_algos.py, rollout_corr_helper.py) --------------------------
    weight = is_clipped = rollout_clipped = None
    with torch.no_grad():
        if old_logprobs is not None:
            weight, is_clipped = _clip_weight(student_sampled_lp - old_logprobs.to(student_lp.dtype), is_clip)
        if rollout_logprobs is not None:
            behaviour = old_logprobs.to(student_lp.dtype) if old_logprobs is not None else student_sampled_lp
            rollout_weight, rollout_clipped = _clip_weight(behaviour - rollout_logprobs.to(student_lp.dtype), is_clip)
            weight = rollout_weight if weight is None else weight * rollout_weight
    if weight is not None:
        per_token = per_token * weight

    # ---- aggregation: per-sequence token mean, then mean over sequences (core_algos.py agg_loss) -----
    # torch.where (not a multiply) so masked tokens contribute exactly 0 even if their value is not
    # finite; the result stays attached to the student's graph when every token is masked.
    active = mask != 0
    per_token = torch.where(active, per_token, torch.zeros_like(per_token))
    tokens_per_seq = active.sum(-1).clamp(min=1)
    loss = (per_token.sum(-1) / tokens_per_seq).mean()

    # ---- statistics -------------------------------------------------------------------------------------
    n_active = int(active.sum().item())

    def active_mean(x: torch.Tensor | None) -> float:
        if x is None or n_active == 0:
            return 0.0
        return (x.detach().float() * active).sum().item() / n_active

    logprob_gap = None
    if student_sampled_lp is not None and teacher_sampled_lp is not None and n_active > 0:
        logprob_gap = active_mean(teacher_sampled_lp - student_sampled_lp)
    stats = LossStats(
        kl=active_mean(divergence),
        is_clipped_frac=active_mean(is_clipped),
        active_frac=n_active / active.numel(),
        rollout_is_clipped_frac=active_mean(rollout_clipped),
        tail_mass=active_mean(tail_mass),
        entropy=active_mean(entropy),
        logprob_gap=logprob_gap,
    )
    return loss, stats
