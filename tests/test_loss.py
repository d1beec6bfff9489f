"""Tests for sdpo_cli.loss: closed-form values on 2-3 token vocabularies, with the arithmetic in comments.

Logits are built as log-probabilities, so softmax(logits) is exactly the distribution written down.
"""

import math

import pytest
import torch

from sdpo_cli import loss as loss_module
from sdpo_cli.loss import (
    _SupportLogProbs,
    sdpo_loss,
    student_topk_ids,
    teacher_support_logprobs,
)


def logits_of(*rows: list[float]) -> torch.Tensor:
    """(1, T, V) logits whose softmax at position t is rows[t]."""
    return torch.log(torch.tensor([rows], dtype=torch.float32))


def ones_mask(b: int, t: int) -> torch.Tensor:
    return torch.ones(b, t)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Student p = [0.5, 0.5], teacher q = [0.25, 0.75] on a 2-token vocabulary.
P, Q = [0.5, 0.5], [0.25, 0.75]
# Reverse KL(p||q) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3) = 0.5 ln(4/3) ~= 0.14384
REVERSE_KL = 0.5 * math.log(4 / 3)
# Forward KL(q||p) = 0.25 ln(0.25/0.5) + 0.75 ln(0.75/0.5) = -0.17329 + 0.30410 ~= 0.13081
FORWARD_KL = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
# JSD at alpha 0.5: M = 0.5 p + 0.5 q = [0.375, 0.625]
#   KL(p||M) = 0.5 ln(0.5/0.375) + 0.5 ln(0.5/0.625) ~= 0.14384 - 0.11157 = 0.03227
#   KL(q||M) = 0.25 ln(0.25/0.375) + 0.75 ln(0.75/0.625) ~= -0.10137 + 0.13674 = 0.03537
#   loss = 0.5 * 0.03227 + 0.5 * 0.03537 ~= 0.03382
JSD_HALF = 0.5 * (0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625)) + 0.5 * (
    0.25 * math.log(0.25 / 0.375) + 0.75 * math.log(0.75 / 0.625)
)


@pytest.mark.parametrize("topk", [None, 2])  # topk=2 is the whole vocabulary plus an (empty) tail bucket
@pytest.mark.parametrize(("alpha", "expected"), [(1.0, REVERSE_KL), (0.0, FORWARD_KL), (0.5, JSD_HALF)])
def test_divergence_matches_closed_form(alpha, expected, topk):
    loss, stats = sdpo_loss(logits_of(P), logits_of(Q), ones_mask(1, 1), alpha=alpha, topk=topk)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats.kl == pytest.approx(expected, abs=1e-6)


def test_tail_bucket_matches_hand_computation():
    # V = 3, student p = [0.5, 0.3, 0.2], teacher q = [0.4, 0.4, 0.2], K = 1.
    # The student's top-1 is token 0, so the buckets are [token 0, tail]:
    #   student [0.5, 0.5], teacher [0.4, 0.6]
    #   reverse KL = 0.5 ln(0.5/0.4) + 0.5 ln(0.5/0.6) = 0.11157 - 0.09116 ~= 0.02041
    expected = 0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.6)
    loss, stats = sdpo_loss(logits_of([0.5, 0.3, 0.2]), logits_of([0.4, 0.4, 0.2]), ones_mask(1, 1), topk=1)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats.tail_mass == pytest.approx(0.5, abs=1e-6)  # the student's mass outside its top-1


def test_support_is_chosen_by_the_student_not_the_teacher():
    # Student p = [0.5, 0.3, 0.2], teacher q = [0.1, 0.2, 0.7], K = 1: the support is the student's
    # argmax (token 0) although the teacher prefers token 2. Buckets: student [0.5, 0.5], teacher
    # [0.1, 0.9]; reverse KL = 0.5 ln(0.5/0.1) + 0.5 ln(0.5/0.9) = 0.5 ln(25/9) ~= 0.51083.
    loss, _ = sdpo_loss(logits_of([0.5, 0.3, 0.2]), logits_of([0.1, 0.2, 0.7]), ones_mask(1, 1), topk=1)
    assert loss.item() == pytest.approx(0.5 * math.log(25 / 9), abs=1e-6)


def test_without_tail_the_topk_is_renormalised():
    # V = 3, K = 2 (tokens 0 and 1), add_tail=False: both sides renormalised over {0, 1}.
    #   student [0.5, 0.3] / 0.8 = [0.625, 0.375], teacher [0.4, 0.4] / 0.8 = [0.5, 0.5]
    #   reverse KL = 0.625 ln(1.25) + 0.375 ln(0.75) = 0.13947 - 0.10788 ~= 0.03158
    expected = 0.625 * math.log(1.25) + 0.375 * math.log(0.75)
    loss, _ = sdpo_loss(
        logits_of([0.5, 0.3, 0.2]), logits_of([0.4, 0.4, 0.2]), ones_mask(1, 1), topk=2, add_tail=False
    )
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.0, 0.3])
def test_topk_equal_to_vocab_with_tail_equals_full_vocabulary(alpha):
    student = torch.randn(2, 5, 7, requires_grad=True)
    teacher = torch.randn(2, 5, 7)
    mask = ones_mask(2, 5)
    full, _ = sdpo_loss(student, teacher, mask, topk=None, alpha=alpha)
    (full_grad,) = torch.autograd.grad(full, student)
    topk, _ = sdpo_loss(student, teacher, mask, topk=7, alpha=alpha)
    (topk_grad,) = torch.autograd.grad(topk, student)
    assert topk.item() == pytest.approx(full.item(), abs=1e-5)
    torch.testing.assert_close(topk_grad, full_grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("topk", [None, 3])
@pytest.mark.parametrize("alpha", [1.0, 0.0, 0.5])
def test_zero_when_student_equals_teacher(alpha, topk):
    logits = torch.randn(2, 4, 9)
    loss, stats = sdpo_loss(logits, logits.clone(), ones_mask(2, 4), alpha=alpha, topk=topk)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert stats.kl == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("topk", [None, 3])
def test_no_gradient_reaches_the_teacher(topk):
    student = torch.randn(2, 4, 9, requires_grad=True)
    teacher = torch.randn(2, 4, 9, requires_grad=True)  # the caller forgot no_grad: still stop-grad
    loss, _ = sdpo_loss(student, teacher, ones_mask(2, 4), topk=topk)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize("topk", [None, 3])
def test_all_masked_batch_is_zero_with_graph_attached(topk):
    student = torch.randn(2, 4, 9, requires_grad=True)
    loss, stats = sdpo_loss(student, torch.randn(2, 4, 9), torch.zeros(2, 4), topk=topk)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()  # must not raise
    assert torch.count_nonzero(student.grad) == 0
    assert stats.active_frac == 0.0 and stats.kl == 0.0


def test_per_sequence_mean_weighs_sequences_equally():
    # Three sequences of T = 4 tokens, student p = [0.5, 0.5] everywhere.
    #   seq 0: 1 active token, teacher [0.25, 0.75] -> d0 = 0.5 ln(4/3)  ~= 0.14384
    #   seq 1: 4 active tokens, teacher [0.1, 0.9]  -> d1 = 0.5 ln(25/9) ~= 0.51083 each
    #   seq 2: no active token (no teacher signal) -> contributes 0, still counts
    # loss = (d0 + d1 + 0) / 3 ~= 0.21822, whereas a global token mean would be (d0 + 4 d1) / 5.
    d0, d1 = 0.5 * math.log(4 / 3), 0.5 * math.log(25 / 9)
    student = torch.log(torch.full((3, 4, 2), 0.5))
    teacher = torch.log(torch.tensor([0.1, 0.9])).expand(3, 4, 2).clone()
    teacher[0, 0] = torch.log(torch.tensor([0.25, 0.75]))
    teacher[0, 1:] = torch.log(torch.tensor([0.99, 0.01]))  # masked: must not matter
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    loss, stats = sdpo_loss(student, teacher, mask, topk=None)
    assert loss.item() == pytest.approx((d0 + d1) / 3, abs=1e-6)
    assert loss.item() != pytest.approx((d0 + 4 * d1) / 5, abs=1e-3)
    assert stats.active_frac == pytest.approx(5 / 12)
    assert stats.kl == pytest.approx((d0 + 4 * d1) / 5, abs=1e-6)  # the stat is a token mean


def test_sdpo_is_ratio_is_clipped_and_multiplies_the_token_loss():
    # Three tokens, student p = [0.5, 0.5], teacher q = [0.25, 0.75]: each token's divergence is
    # d = 0.5 ln(4/3). The sampled token is 0, so log pi(y_t) = ln 0.5 at every position.
    #   old = ln 0.5 - ln 3 -> ratio 3   -> clipped to 2
    #   old = ln 0.5 + ln 2 -> ratio 0.5 -> 0.5
    #   old = ln 0.5        -> ratio 1   -> 1
    # loss = d * (2 + 0.5 + 1) / 3; one of three tokens clipped.
    d = REVERSE_KL
    lp = math.log(0.5)
    old = torch.tensor([[lp - math.log(3), lp + math.log(2), lp]])
    loss, stats = sdpo_loss(
        logits_of(P, P, P), logits_of(Q, Q, Q), ones_mask(1, 3),
        old_logprobs=old, sampled_ids=torch.zeros(1, 3, dtype=torch.long), is_clip=2.0,
    )
    assert loss.item() == pytest.approx(d * 3.5 / 3, abs=1e-6)
    assert stats.is_clipped_frac == pytest.approx(1 / 3)
    assert stats.rollout_is_clipped_frac == 0.0
    assert stats.kl == pytest.approx(d, abs=1e-6)  # the divergence stat is unweighted


def test_rollout_correction_uses_current_logprob_when_no_old_logprobs():
    # Same tokens as above; no old_logprobs, so the behaviour log-prob is the current ln 0.5.
    #   rollout = ln 0.5 - ln 4 -> ratio 4 -> clipped to 2;  rollout = ln 0.5 + ln 2 -> 0.5;  = -> 1
    lp = math.log(0.5)
    rollout = torch.tensor([[lp - math.log(4), lp + math.log(2), lp]])
    loss, stats = sdpo_loss(
        logits_of(P, P, P), logits_of(Q, Q, Q), ones_mask(1, 3),
        rollout_logprobs=rollout, sampled_ids=torch.zeros(1, 3, dtype=torch.long),
    )
    assert loss.item() == pytest.approx(REVERSE_KL * 3.5 / 3, abs=1e-6)
    assert stats.rollout_is_clipped_frac == pytest.approx(1 / 3)
    assert stats.is_clipped_frac == 0.0


def test_both_importance_weights_multiply():
    # Token 0: pi/old = 1.5, old/rollout = 1.2 -> 1.8 (neither clipped)
    # Token 1: pi/old = 0.5, old/rollout = 3   -> 0.5 * 2 = 1 (rollout weight clipped)
    # loss = d * (1.8 + 1) / 2
    lp = math.log(0.5)
    old = torch.tensor([[lp - math.log(1.5), lp + math.log(2)]])
    rollout = old - torch.tensor([[math.log(1.2), math.log(3)]])
    loss, stats = sdpo_loss(
        logits_of(P, P), logits_of(Q, Q), ones_mask(1, 2),
        old_logprobs=old, rollout_logprobs=rollout, sampled_ids=torch.zeros(1, 2, dtype=torch.long),
    )
    assert loss.item() == pytest.approx(REVERSE_KL * 2.8 / 2, abs=1e-6)
    assert stats.is_clipped_frac == 0.0
    assert stats.rollout_is_clipped_frac == pytest.approx(0.5)


def test_importance_weights_are_detached():
    # The weight must not add a gradient term: with a constant weight w the gradient is w * grad(KL).
    student = torch.randn(1, 1, 4, requires_grad=True)
    teacher = torch.randn(1, 1, 4)
    ids = torch.zeros(1, 1, dtype=torch.long)
    current = torch.log_softmax(student.detach(), -1)[..., 0]
    plain, _ = sdpo_loss(student, teacher, ones_mask(1, 1), topk=None)
    (plain_grad,) = torch.autograd.grad(plain, student)
    weighted, _ = sdpo_loss(
        student, teacher, ones_mask(1, 1), topk=None, old_logprobs=current - math.log(1.5), sampled_ids=ids
    )
    (weighted_grad,) = torch.autograd.grad(weighted, student)
    torch.testing.assert_close(weighted_grad, 1.5 * plain_grad)


@pytest.mark.parametrize("topk", [None, 3])
def test_unclipped_advantage_surrogate_has_the_reverse_kl_gradient(topk):
    # L = -sum_b pi(b) sg[log q(b) - log pi(b)]; its gradient is grad KL(pi||q) because the support
    # sums to 1 (paper Eq. 1 in advantage form). A clip of 1e9 never binds.
    student = torch.randn(2, 3, 6, requires_grad=True)
    teacher = torch.randn(2, 3, 6) * 3
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    kl, _ = sdpo_loss(student, teacher, mask, topk=topk)
    (kl_grad,) = torch.autograd.grad(kl, student)
    surrogate, _ = sdpo_loss(student, teacher, mask, topk=topk, adv_clip=1e9)
    (surrogate_grad,) = torch.autograd.grad(surrogate, student)
    assert surrogate.item() == pytest.approx(kl.item(), abs=1e-6)  # same value too
    torch.testing.assert_close(surrogate_grad, kl_grad, atol=1e-7, rtol=1e-5)


def test_advantage_clip_caps_large_advantages():
    # Student p = [0.999, 0.001], teacher q = [0.5, 0.5], full vocabulary:
    #   A = ln q - ln p = [ln(0.5/0.999), ln(500)] = [-0.69215, 6.21461]; with adv_clip 5 -> [-0.69215, 5]
    #   value = -(0.999 * -0.69215 + 0.001 * 5) = 0.69146 - 0.005 = 0.68646 (reverse KL would be 0.68524)
    #   gradient wrt logits: dL/dz_j = -p_j (A_j - sum_b p_b A_b)  (softmax Jacobian, A held fixed)
    p = torch.tensor([0.999, 0.001])
    a_clipped = torch.log(torch.tensor([0.5, 0.5]) / p).clamp(max=5.0)
    student = torch.log(p).view(1, 1, 2).requires_grad_(True)
    teacher = logits_of([0.5, 0.5])
    loss, stats = sdpo_loss(student, teacher, ones_mask(1, 1), topk=None, adv_clip=5.0)
    loss.backward()
    assert loss.item() == pytest.approx(-(p * a_clipped).sum().item(), abs=1e-6)
    expected_grad = -p * (a_clipped - (p * a_clipped).sum())
    torch.testing.assert_close(student.grad.view(2), expected_grad, atol=1e-7, rtol=1e-5)
    # ... and this differs from the reverse-KL gradient, whose advantage at token 1 is 6.21 not 5.
    kl_student = torch.log(p).view(1, 1, 2).requires_grad_(True)
    kl, _ = sdpo_loss(kl_student, teacher, ones_mask(1, 1), topk=None)
    kl.backward()
    assert not torch.allclose(kl_student.grad, student.grad, atol=1e-5)
    assert stats.kl == pytest.approx(kl.item(), abs=1e-6)  # the stat stays the reverse KL


def test_advantage_clip_only_for_reverse_kl():
    with pytest.raises(ValueError, match="alpha"):
        sdpo_loss(logits_of(P), logits_of(Q), ones_mask(1, 1), alpha=0.5, adv_clip=5.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 1.5},
        {"old_logprobs": torch.zeros(1, 1)},  # no sampled_ids
        {"rollout_logprobs": torch.zeros(1, 1)},  # no sampled_ids and no old_logprobs
        {"topk": None, "topk_ids": torch.zeros(1, 1, 1, dtype=torch.long)},
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        sdpo_loss(logits_of(P), logits_of(Q), ones_mask(1, 1), **kwargs)


@pytest.mark.parametrize("topk", [None, 2])
def test_temperature_divides_both_logits(topk):
    # Logits 2 ln p at temperature 2 are the distribution p, so the loss equals the T=1 loss on ln p.
    # The gradient wrt the doubled logits is half the gradient wrt ln p (chain rule through z / 2).
    p_student = [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]
    p_teacher = [[0.3, 0.3, 0.4], [0.5, 0.25, 0.25]]
    base = logits_of(*p_student).requires_grad_(True)
    ref, _ = sdpo_loss(base, logits_of(*p_teacher), ones_mask(1, 2), topk=topk)
    ref.backward()
    hot = (2 * logits_of(*p_student)).requires_grad_(True)
    loss, _ = sdpo_loss(hot, 2 * logits_of(*p_teacher), ones_mask(1, 2), topk=topk, temperature=2.0)
    loss.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
    torch.testing.assert_close(hot.grad, base.grad / 2)
    # and temperature does change the loss on the same logits
    other, _ = sdpo_loss(base, logits_of(*p_teacher), ones_mask(1, 2), topk=topk, temperature=2.0)
    assert other.item() != pytest.approx(ref.item(), abs=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_support_logprobs_gradient_matches_autograd_reference(temperature):
    # The hand-written backward against gradcheck (finite differences) and against plain autograd
    # through log_softmax + gather.
    logits = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 6, (2, 3, 4))
    assert torch.autograd.gradcheck(lambda x: _SupportLogProbs.apply(x, ids, temperature)[0], (logits,))
    out, _, _ = _SupportLogProbs.apply(logits, ids, temperature)
    ref = torch.log_softmax(logits / temperature, -1).gather(-1, ids)
    weights = torch.randn_like(ref)
    (grad,) = torch.autograd.grad((out * weights).sum(), logits)
    (ref_grad,) = torch.autograd.grad((ref * weights).sum(), logits)
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=0)


def test_chunked_logsumexp_handles_partial_chunks_and_sliced_logits(monkeypatch):
    # Force 2-row chunks (13 // 6) over T = 5 (chunks of 2, 2, 1) and feed logits sliced out of a
    # longer sequence, as a trainer does with logits[:, -T - 1 : -1]; compare with plain autograd.
    monkeypatch.setattr(loss_module, "_CHUNK_ELEMENTS", 13)
    full = torch.randn(2, 8, 6, dtype=torch.float64, requires_grad=True)
    sliced = full[:, 2:7]
    assert not sliced.is_contiguous()
    ids = torch.randint(0, 6, (2, 5, 3))
    out, lse, entropy = _SupportLogProbs.apply(sliced, ids, 0.9)
    ref = torch.log_softmax(sliced / 0.9, -1).gather(-1, ids)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(lse, torch.logsumexp(sliced / 0.9, -1, keepdim=True))
    ref_lp = torch.log_softmax(sliced / 0.9, -1)
    torch.testing.assert_close(entropy, -(ref_lp.exp() * ref_lp).sum(-1, keepdim=True))
    (grad,) = torch.autograd.grad(out.sum(), full)
    (ref_grad,) = torch.autograd.grad(ref.sum(), full)
    torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize("add_tail", [True, False])
def test_precomputed_teacher_support_equals_full_teacher_logits(add_tail):
    student = torch.randn(2, 4, 11, requires_grad=True)
    teacher = torch.randn(2, 4, 11)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    full, _ = sdpo_loss(student, teacher, mask, topk=5, add_tail=add_tail, temperature=0.8)
    (full_grad,) = torch.autograd.grad(full, student)
    ids = student_topk_ids(student, 5)
    support = teacher_support_logprobs(teacher, ids, temperature=0.8, add_tail=add_tail)
    assert support.shape == (2, 4, 6 if add_tail else 5)
    del teacher  # the point: the full teacher logits are gone before the loss and backward
    reduced, _ = sdpo_loss(
        student, None, mask, topk=5, add_tail=add_tail, temperature=0.8, teacher_support=support, topk_ids=ids
    )
    (reduced_grad,) = torch.autograd.grad(reduced, student)
    assert reduced.item() == pytest.approx(full.item(), abs=1e-7)
    torch.testing.assert_close(reduced_grad, full_grad)


def test_teacher_support_needs_its_topk_ids():
    support = teacher_support_logprobs(logits_of(Q), student_topk_ids(logits_of(P), 1))
    with pytest.raises(ValueError, match="topk_ids"):
        sdpo_loss(logits_of(P), None, ones_mask(1, 1), topk=1, teacher_support=support)
    with pytest.raises(ValueError, match="exactly one"):
        sdpo_loss(logits_of(P), None, ones_mask(1, 1), topk=1)


def test_bf16_logits_are_normalised_in_float32():
    # A bf16 logsumexp would round the normaliser to ~3 significant digits (errors ~1e-2 on logits of
    # size ~10); the loss on bf16 logits must match the float32 loss on the same (bf16-exact) values.
    student = (torch.randn(2, 8, 300) * 4 + 10).to(torch.bfloat16).requires_grad_(True)
    teacher = (torch.randn(2, 8, 300) * 4 + 10).to(torch.bfloat16)
    loss, _ = sdpo_loss(student, teacher, ones_mask(2, 8))
    ref, _ = sdpo_loss(student.detach().float(), teacher.float(), ones_mask(2, 8))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    loss.backward()
    assert student.grad.dtype == torch.bfloat16
    ref_student = student.detach().float().requires_grad_(True)
    ref, _ = sdpo_loss(ref_student, teacher.float(), ones_mask(2, 8))
    ref.backward()
    torch.testing.assert_close(student.grad.float(), ref_student.grad, atol=1e-5, rtol=1e-2)


def test_logprob_gap_stat():
    # Sampled token 0: log q(0) - log p(0) = ln 0.25 - ln 0.5 = -ln 2 (the teacher likes it less).
    ids = torch.zeros(1, 1, dtype=torch.long)
    for topk in (None, 1):
        _, stats = sdpo_loss(logits_of(P), logits_of(Q), ones_mask(1, 1), topk=topk, sampled_ids=ids)
        assert stats.logprob_gap == pytest.approx(-math.log(2), abs=1e-6)
    # Unknown when only the teacher's top-K support is given (y_t may lie outside it).
    support = teacher_support_logprobs(logits_of(Q), student_topk_ids(logits_of(P), 1))
    _, stats = sdpo_loss(
        logits_of(P), None, ones_mask(1, 1), topk=1, teacher_support=support,
        topk_ids=student_topk_ids(logits_of(P), 1), sampled_ids=ids,
    )
    assert stats.logprob_gap is None


@pytest.mark.parametrize("topk", [None, 1])
def test_entropy_stat(topk):
    # Position 0: p = [0.5, 0.5, 1e-30] -> H = ln 2 + O(1e-28) ~= 0.69315
    # Position 1: p = [0.7, 0.2, 0.1] -> H = -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) ~= 0.80182
    # Position 1 is masked, so the stat is ln 2.
    student = logits_of([0.5, 0.5, 1e-30], [0.7, 0.2, 0.1])
    teacher = logits_of([0.4, 0.4, 0.2], [0.3, 0.3, 0.4])
    _, stats = sdpo_loss(student, teacher, torch.tensor([[1.0, 0.0]]), topk=topk)
    assert stats.entropy == pytest.approx(math.log(2), abs=1e-6)
    # Unmasked: mean of the two entropies.
    h1 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    _, stats = sdpo_loss(student[:, 1:], teacher[:, 1:], ones_mask(1, 1), topk=topk)
    assert stats.entropy == pytest.approx(h1, abs=1e-6)
