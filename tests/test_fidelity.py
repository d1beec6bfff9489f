"""Details where sdpo must match the official SDPO code (lasgroup/SDPO), checked on the tiny model.

  * A sequence with no teacher signal (no demonstration, feedback empty after .strip()) gets zero loss
    but still counts in the mean over the batch's sequences (the official loss divides by every
    sequence of the micro-batch; with micro-batch 1 that is the mean over all sequences).
  * The student's, the teacher's and the sampler's log-probabilities line up on the exact sampled ids
    at a temperature other than 1 too (both models' logits are divided by the sampling temperature).
  * The teacher's support follows the student's compute dtype (float64 stays float64).
"""

from __future__ import annotations

import pytest
import torch

from sdpo_cli.attempt import Attempt
from sdpo_cli.config import make_config
from sdpo_cli.loss import sdpo_loss, student_topk_ids, teacher_support_logprobs
from sdpo_cli.model import attach_lora, encode_chat
from sdpo_cli.problem import Problem
from sdpo_cli.sampling import Completion, SamplingParams
from sdpo_cli.sampling.hf import HFSampler
from sdpo_cli.update import SDPOUpdater, teacher_messages
from sdpo_cli.verify import Verdict

PROBLEM = Problem.model_validate({"id": "add", "title": "t", "prompt": "Print 2+3.",
                                  "verifier": {"kind": "stdio", "tests": [{"input": "", "output": "5"}]}})
CFG = dict(batch_size=3, budget=9, max_new_tokens=12, lora_rank=4, lora_alpha=8, lr=1e-2, device="cpu",
           teacher="base", grad_clip=1e6)


def _attempt(tok, text: str, feedback: str, i: int = 1) -> Attempt:
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    v = Verdict(passed=False, status="wrong_answer", n_passed=0, n_total=1, feedback=feedback)
    return Attempt(0, i, i, Completion(text, ids, [0.0] * len(ids)), v, 0.0, 0.0)


def test_whitespace_feedback_is_no_teacher_signal():
    msgs = teacher_messages(PROBLEM, ["a", "b", "c"], [False] * 3, ["Wrong Answer", "  \n\t", ""])
    assert msgs[0] is not None and msgs[1] is None and msgs[2] is None


def test_a_sequence_without_teacher_signal_still_counts_in_the_mean(tiny_model):
    """Loss and gradient of [a, b] times 2/3 equal those of [a, b, c] where c has only whitespace feedback."""
    import copy

    def run(attempts):
        model, tok = copy.deepcopy(tiny_model[0]), tiny_model[1]
        torch.manual_seed(0)
        peft = attach_lora(model, rank=4, alpha=8)
        with torch.no_grad():  # a non-zero student, so the student differs from the base teacher
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        stats = SDPOUpdater(peft, tok, make_config(CFG)).update(PROBLEM, encode_chat(tok, PROBLEM.messages()), attempts)
        return stats

    tok = tiny_model[1]
    a, b = _attempt(tok, "print(4)", "Wrong Answer", 1), _attempt(tok, "x = 1 + 2", "Runtime Error", 2)
    two = run([a, b])
    three = run([a, b, _attempt(tok, "zzz", "  \n", 3)])
    assert two["active_sequences"] == 2 and three["active_sequences"] == 2
    assert three["loss"] == pytest.approx(two["loss"] * 2 / 3, rel=1e-5)
    assert three["grad_norm"] == pytest.approx(two["grad_norm"] * 2 / 3, rel=1e-4)  # the denominator is 3


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_student_teacher_and_sampler_line_up_at_a_temperature(fresh_tiny_model, temperature):
    """At T != 1 the sampler's recorded log-prob of each sampled id is the student's logits / T, and the
    teacher (the base, here equal to the fresh student) gives the same support on the same positions."""
    model, tok = fresh_tiny_model
    peft = attach_lora(model, rank=4, alpha=8)
    prompt = encode_chat(tok, PROBLEM.messages())
    comps = HFSampler(peft, tok).sample(prompt, 2, SamplingParams(max_new_tokens=10, seed=3, temperature=temperature))
    upd = SDPOUpdater(peft, tok, make_config(dict(CFG, temperature=temperature)))
    for c in comps:
        with torch.no_grad():
            student = upd._response_logits(prompt, c.token_ids, teacher=False)
            teacher = upd._response_logits(prompt, c.token_ids, teacher=True)
        lp = torch.log_softmax(student[0] / temperature, -1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(lp, torch.tensor(c.logprobs), atol=1e-4, rtol=0)
        ids = student_topk_ids(student, 5)
        mask = torch.ones(student.shape[:2])
        loss, stats = sdpo_loss(student, None, mask, topk=5, temperature=temperature,
                                teacher_support=teacher_support_logprobs(teacher, ids, temperature=temperature),
                                topk_ids=ids, sampled_ids=torch.tensor([c.token_ids]))
        assert abs(float(loss)) < 1e-6 and abs(stats.kl) < 1e-6  # same model: zero divergence at any T


def test_teacher_support_keeps_float64():
    torch.manual_seed(0)
    s = torch.randn(1, 4, 30, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 4, 30, dtype=torch.float64)
    ids = student_topk_ids(s, 6)
    support = teacher_support_logprobs(t, ids)
    full = teacher_support_logprobs(t, None)
    assert support.dtype == full.dtype == torch.float64
    a, _ = sdpo_loss(s, t, torch.ones(1, 4), topk=6)
    b, _ = sdpo_loss(s, None, torch.ones(1, 4), topk=6, teacher_support=support, topk_ids=ids)
    assert a.dtype == torch.float64 and abs(float((a - b).detach())) < 1e-12
