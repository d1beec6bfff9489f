"""Teacher regularisations (paper Sec. 2.3) on the tiny Llama: EMA arithmetic, adapter trainability,
trust-region = lerp, base = disable_adapter, gradients and resume."""

from __future__ import annotations

import pytest
import torch

from sdpo_cli.errors import ConfigError, RunError
from sdpo_cli.model import attach_lora, encode_chat, forward_logits
from sdpo_cli.teacher import Teacher, ema_update


# ------------------------------------------------------------------------------------------------
# ema_update: pure tensor arithmetic


def test_ema_update_matches_hand_arithmetic():
    teacher = {"w": torch.tensor([1.0, 2.0, 4.0]), "b": torch.tensor([[10.0]])}
    student = {"w": torch.tensor([3.0, 2.0, 0.0]), "b": torch.tensor([[0.0]])}
    ema_update(student, teacher, 0.25)
    # (1 - 0.25) * teacher + 0.25 * student:
    #   w: 0.75*1 + 0.25*3 = 1.5 ; 0.75*2 + 0.25*2 = 2.0 ; 0.75*4 + 0.25*0 = 3.0
    #   b: 0.75*10 = 7.5
    assert teacher["w"].tolist() == [1.5, 2.0, 3.0]
    assert teacher["b"].tolist() == [[7.5]]
    assert student["w"].tolist() == [3.0, 2.0, 0.0]  # the student is read only


def test_ema_update_rate_zero_keeps_and_rate_one_copies():
    teacher = {"w": torch.tensor([1.0, -1.0])}
    ema_update({"w": torch.tensor([5.0, 5.0])}, teacher, 0.0)
    assert teacher["w"].tolist() == [1.0, -1.0]
    ema_update({"w": torch.tensor([5.0, 6.0])}, teacher, 1.0)
    assert teacher["w"].tolist() == [5.0, 6.0]


@pytest.mark.parametrize(
    "student, teacher, rate",
    [
        ({"a": torch.zeros(2)}, {"b": torch.zeros(2)}, 0.1),  # names differ
        ({"a": torch.zeros(2)}, {"a": torch.zeros(3)}, 0.1),  # shapes differ
        ({"a": torch.zeros(2)}, {"a": torch.zeros(2)}, 1.5),  # rate out of range
        ({"a": torch.zeros(2)}, {"a": torch.zeros(2)}, -0.1),
    ],
)
def test_ema_update_rejects_mismatches(student, teacher, rate):
    with pytest.raises(ValueError):
        ema_update(student, teacher, rate)


# ------------------------------------------------------------------------------------------------
# Teacher on a peft model


@pytest.fixture
def peft_model(fresh_tiny_model):
    model, tok = fresh_tiny_model
    return attach_lora(model, rank=4, alpha=8), tok


@pytest.fixture
def batch(tiny_tokenizer):
    """Two left-padded teacher sequences: (B=2, L) ids and mask."""
    rows = [encode_chat(tiny_tokenizer, "What is 2+3? feedback: wrong"), encode_chat(tiny_tokenizer, "hi")]
    width = max(map(len, rows))
    pad = tiny_tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _randomise(model, adapter: str, seed: int, std: float = 0.3) -> None:
    """Give one adapter non-zero LoRA weights so it changes the model's output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f".{adapter}." in name and "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def _params(model, adapter: str) -> dict[str, torch.Tensor]:
    return {
        n.replace(f".{adapter}.", "."): p.detach().clone()
        for n, p in model.named_parameters()
        if f".{adapter}." in n and "lora_" in n
    }


def _trainable(model, adapter: str) -> list[bool]:
    return [p.requires_grad for n, p in model.named_parameters() if f".{adapter}." in n and "lora_" in n]


def test_ema_teacher_starts_equal_to_student_and_untrainable(peft_model):
    model, _ = peft_model
    _randomise(model, "default", seed=1)
    Teacher(model, "ema")
    student, teacher = _params(model, "default"), _params(model, "teacher")
    assert student.keys() == teacher.keys() and len(student) > 0
    assert all(torch.equal(student[k], teacher[k]) for k in student)
    assert model.active_adapter == "default"
    assert all(_trainable(model, "default"))
    assert not any(_trainable(model, "teacher"))


def test_teacher_pass_leaves_student_active_and_trainable(peft_model, batch):
    model, _ = peft_model
    teacher = Teacher(model, "ema")
    model.train()
    logits = teacher.logits(*batch)
    assert not logits.requires_grad
    assert model.active_adapter == "default"
    assert all(_trainable(model, "default"))
    assert not any(_trainable(model, "teacher"))
    assert model.training  # train mode restored after the eval-mode teacher pass


def test_ema_logits_use_teacher_weights_and_update_moves_by_rate(peft_model, batch):
    model, _ = peft_model
    _randomise(model, "default", seed=1)
    teacher = Teacher(model, "ema", rate=0.25)
    ids, mask = batch
    with torch.no_grad():
        before = forward_logits(model, ids, mask)
    torch.testing.assert_close(teacher.logits(ids, mask), before)  # theta'_0 = theta_0

    _randomise(model, "default", seed=2)  # stands in for an optimizer step on the student
    with torch.no_grad():
        student_now = forward_logits(model, ids, mask)
    t_logits = teacher.logits(ids, mask)
    torch.testing.assert_close(t_logits, before)  # teacher did not follow the student yet
    assert not torch.allclose(t_logits, student_now, atol=1e-3)

    old_t, student = _params(model, "teacher"), _params(model, "default")
    teacher.update()
    new_t = _params(model, "teacher")
    for k in old_t:  # theta' <- theta' + r (theta - theta')
        torch.testing.assert_close(new_t[k], old_t[k] + 0.25 * (student[k] - old_t[k]))
    assert all(torch.equal(student[k], v) for k, v in _params(model, "default").items())


def test_student_gradients_survive_the_teacher_pass(peft_model, batch):
    # Trainer order: student forward (graph built), teacher pass (toggles requires_grad), backward.
    model, _ = peft_model
    _randomise(model, "default", seed=1)
    teacher = Teacher(model, "ema")
    ids, mask = batch
    model.train()
    student_logits = forward_logits(model, ids, mask)
    teacher_logits = teacher.logits(ids, mask)
    loss = (torch.log_softmax(student_logits, -1) - torch.log_softmax(teacher_logits, -1)).pow(2).sum()
    loss = loss + student_logits.sum() * 1e-3  # non-zero even though student == teacher here
    loss.backward()
    for n, p in model.named_parameters():
        if ".default." in n and "lora_" in n:
            assert p.grad is not None and torch.isfinite(p.grad).all()
        elif ".teacher." in n:
            assert p.grad is None
        else:
            assert p.grad is None  # base weights stay frozen
    student_grads = [p.grad for n, p in model.named_parameters() if ".default." in n and "lora_" in n]
    assert any(g.abs().sum() > 0 for g in student_grads)


def test_optimizer_step_changes_only_the_student(peft_model, batch):
    model, _ = peft_model
    teacher = Teacher(model, "ema")
    ids, mask = batch
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    before_t = _params(model, "teacher")
    before_s = _params(model, "default")
    model.train()
    forward_logits(model, ids, mask).logsumexp(-1).sum().backward()
    teacher.logits(ids, mask)
    opt.step()
    assert all(torch.equal(before_t[k], v) for k, v in _params(model, "teacher").items())
    assert any(not torch.equal(before_s[k], v) for k, v in _params(model, "default").items())


def test_trust_region_is_lerp_of_base_and_student(peft_model, batch):
    model, _ = peft_model
    _randomise(model, "default", seed=3)
    teacher = Teacher(model, "trust-region", mix=0.3)
    ids, mask = batch
    with torch.no_grad():
        student = forward_logits(model, ids, mask)
        with model.disable_adapter():
            base = forward_logits(model, ids, mask)
    assert not torch.allclose(base, student, atol=1e-3)
    torch.testing.assert_close(teacher.logits(ids, mask), 0.7 * base + 0.3 * student)
    assert all(_trainable(model, "default"))


def test_base_teacher_equals_disabled_adapter(peft_model, batch):
    model, _ = peft_model
    _randomise(model, "default", seed=4)
    teacher = Teacher(model, "base")
    ids, mask = batch
    with torch.no_grad(), model.disable_adapter():
        base = forward_logits(model, ids, mask)
    got = teacher.logits(ids, mask)
    torch.testing.assert_close(got, base)
    with torch.no_grad():
        assert not torch.allclose(got, forward_logits(model, ids, mask), atol=1e-3)
    assert "teacher" not in model.peft_config  # no second adapter for non-EMA kinds


def test_logits_to_keep_returns_the_last_positions(peft_model, batch):
    model, _ = peft_model
    teacher = Teacher(model, "ema")
    ids, mask = batch
    full = teacher.logits(ids, mask)
    last = teacher.logits(ids, mask, logits_to_keep=3)
    assert last.shape == (ids.shape[0], 3, full.shape[-1])
    torch.testing.assert_close(last, full[:, -3:])


def test_state_dict_round_trip_restores_ema_weights(peft_model):
    model, _ = peft_model
    _randomise(model, "default", seed=5)
    teacher = Teacher(model, "ema", rate=0.5)
    saved = teacher.state_dict()
    _randomise(model, "default", seed=6)
    teacher.update()
    moved = _params(model, "teacher")
    teacher.load_state_dict(saved)
    restored = _params(model, "teacher")
    assert all(torch.equal(restored[k], saved["adapter"][k]) for k in restored)
    assert any(not torch.equal(restored[k], moved[k]) for k in restored)
    assert saved["kind"] == "ema" and saved["rate"] == 0.5


def test_load_state_dict_of_another_kind_fails(peft_model):
    model, _ = peft_model
    with pytest.raises(RunError, match="--teacher"):
        Teacher(model, "base").load_state_dict({"kind": "ema", "rate": 0.01, "mix": 0.01, "adapter": {}})


@pytest.mark.parametrize(
    "kind, kw",
    [("nope", {}), ("ema", {"rate": 0.0}), ("ema", {"rate": 1.5}), ("trust-region", {"mix": -0.1})],
)
def test_bad_teacher_settings_raise_config_error(peft_model, kind, kw):
    model, _ = peft_model
    with pytest.raises(ConfigError):
        Teacher(model, kind, **kw)


def test_teacher_needs_a_lora_model(fresh_tiny_model):
    model, _ = fresh_tiny_model
    with pytest.raises(ConfigError, match="attach_lora"):
        Teacher(model, "ema")
