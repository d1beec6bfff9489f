"""The self-teacher: how its logits are computed and how it is kept close to a slower reference.

Owns `Teacher` (three regularisations, paper Sec. 2.3 and Table 4) and the tensor-level
`ema_update`. All three kinds live on the one PeftModel being trained, so no second copy of the base
weights is held:

  "ema" (default)  a second LoRA adapter "teacher", initialised equal to the student adapter and
                   moved theta' <- (1 - r) theta' + r theta once per training step (official code:
                   DataParallelPPOActor._update_teacher; test-time rate r = 0.01, paper Table 12).
                   The official code EMAs full weights; we EMA the LoRA factors A and B separately,
                   so the teacher's update B'A' is not exactly the EMA of the student's BA (a
                   factor-EMA bias). With r = 0.01 the gap is second order in the student's drift.
  "trust-region"   logits = lerp(base_logits, student_logits, mix) = (1 - mix) base + mix student,
                   both on the teacher prompt, base via `disable_adapter()` (paper Eq. 10).
                   The official code reuses teacher_update_rate as the mix, so the default mix is
                   the EMA rate (0.01 at test time; config.py, --trust-region-mix).
  "base"           the frozen initial model via `disable_adapter()` (paper Table 4 "frozen initial
                   teacher"). With LoRA the initial student equals the base, so this is exact.

Every teacher pass runs under no_grad in eval mode (stop-gradient, paper Sec. 2.3) and leaves the
student adapter "default" active and trainable, and the "teacher" adapter never trainable: peft's
`set_adapter(name)` makes `name` trainable and freezes the rest unless inference_mode=True
(peft 0.21), so we switch with inference_mode=True and switch back with set_adapter("default").

`prefix(ids)` runs tokens that every row of the next `logits` calls starts with once, under the
teacher's weights, and `logits(..., prefix=...)` continues from their key/value tensors (the
update shares the chat header and question this way; update.py).

Does not own: building teacher prompts (feedback.py), aligning teacher and student positions, or
the loss (loss.py).

    teacher = Teacher(peft_model, "ema", rate=0.01)
    t_logits = teacher.logits(teacher_ids, teacher_mask, logits_to_keep=T + 1)  # no grad
    ... loss.backward(); optimizer.step(); teacher.update()
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from .errors import ConfigError, RunError
from .model import STUDENT_ADAPTER, forward_logits, prefix_kv

if TYPE_CHECKING:
    from peft import PeftModel

TEACHER_ADAPTER = "teacher"
TEACHER_KINDS = ("ema", "trust-region", "base")
DEFAULT_RATE = 0.01  # paper Table 12: teacher EMA rate 0.01 for Sec. 4 and test time
# The trust-region mix is not a separate setting in the official code: the worker builds
# TrustRegionTeacher(..., mix_coef=teacher_update_rate) (verl/workers/fsdp_workers.py). So one constant.
DEFAULT_MIX = DEFAULT_RATE


@torch.no_grad()
def ema_update(
    student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor], rate: float
) -> None:
    """EMA step on matching tensors: teacher <- (1 - rate) * teacher + rate * student, in place.

    Args:
        student: name -> tensor (read only).
        teacher: name -> tensor with the same names and shapes (updated in place).
        rate: in [0, 1]; 0 keeps the teacher, 1 copies the student.

    Raises:
        ValueError: the names or shapes differ, or rate is outside [0, 1].
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
    if student.keys() != teacher.keys():
        missing = sorted(set(student) ^ set(teacher))[:3]
        raise ValueError(f"student and teacher tensors differ in names, e.g. {missing}")
    for name, t in teacher.items():
        s = student[name]
        if s.shape != t.shape:
            raise ValueError(f"{name}: student shape {tuple(s.shape)} != teacher shape {tuple(t.shape)}")
        t.lerp_(s.to(dtype=t.dtype, device=t.device), rate)  # t + rate * (s - t)


def _adapter_params(model: "PeftModel", adapter: str) -> dict[str, torch.nn.Parameter]:
    """LoRA parameters of one adapter keyed by their name with the adapter name removed.

    peft names them `...q_proj.lora_A.<adapter>.weight`; dropping `.<adapter>` makes student and
    teacher names comparable.
    """
    marker = f".{adapter}."
    return {
        name.replace(marker, "."): p
        for name, p in model.named_parameters()
        if "lora_" in name and marker in name
    }


class Teacher:
    """Teacher logits for SDPO, with one of three regularisations (see module docstring).

    Args:
        model: the PeftModel being trained, with the student adapter "default".
        kind: "ema", "trust-region" or "base".
        rate: EMA rate r (kind "ema"), in (0, 1].
        mix: trust-region weight of the student logits (kind "trust-region"), in [0, 1].

    Raises:
        ConfigError: unknown kind, a rate / mix out of range, or a model without the "default"
            LoRA adapter.
    """

    def __init__(
        self, model: "PeftModel", kind: str = "ema", *, rate: float = DEFAULT_RATE, mix: float = DEFAULT_MIX
    ) -> None:
        if kind not in TEACHER_KINDS:
            raise ConfigError(f"teacher {kind!r} is not one of {', '.join(TEACHER_KINDS)}")
        if kind == "ema" and not 0.0 < rate <= 1.0:
            raise ConfigError(f"teacher EMA rate must be in (0, 1], got {rate}")
        if kind == "trust-region" and not 0.0 <= mix <= 1.0:
            raise ConfigError(f"teacher trust-region mix must be in [0, 1], got {mix}")
        peft_config = getattr(model, "peft_config", None)
        if not peft_config or STUDENT_ADAPTER not in peft_config:
            raise ConfigError(
                "the teacher needs a model with a LoRA adapter 'default'; call attach_lora first"
            )
        self.model = model
        self.kind = kind
        self.rate = rate
        self.mix = mix
        if kind == "ema":
            if TEACHER_ADAPTER not in peft_config:
                # Same LoRA config as the student; added adapters start untrainable.
                model.add_adapter(TEACHER_ADAPTER, peft_config[STUDENT_ADAPTER])
            self._student = _adapter_params(model, STUDENT_ADAPTER)
            self._teacher = _adapter_params(model, TEACHER_ADAPTER)
            with torch.no_grad():  # theta'_0 = theta_0, as the official code's ref model
                for name, t in self._teacher.items():
                    t.copy_(self._student[name])
            # add_adapter may leave the new adapter active; the student must be the active one.
            model.set_adapter(STUDENT_ADAPTER)
            for t in self._teacher.values():
                t.requires_grad_(False)

    # Which weights each kind reads: "teacher" = the EMA adapter, "base" = adapters disabled,
    # "student" = the live student adapter (no grad).
    _WEIGHTS = {"ema": ("teacher",), "base": ("base",), "trust-region": ("base", "student")}

    @contextlib.contextmanager
    def _weights(self, which: str):
        if which == "base":
            with self.model.disable_adapter():
                yield
        elif which == "teacher":
            # inference_mode=True freezes every adapter while the teacher's is active.
            self.model.set_adapter(TEACHER_ADAPTER, inference_mode=True)
            try:
                yield
            finally:
                # Re-activates the student AND makes it trainable; freezes the teacher.
                self.model.set_adapter(STUDENT_ADAPTER)
        else:
            yield

    @contextlib.contextmanager
    def _eval(self):
        was_training = self.model.training
        self.model.eval()  # deterministic teacher: no LoRA dropout
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train(was_training)

    def prefix(self, prefix_ids: list[int]) -> dict[str, list]:
        """Key/value tensors of a prefix shared by the next `logits` calls' rows, under the teacher's
        weights (one set per weight setting the kind reads). Valid until the weights change."""
        with self._eval():
            out = {}
            for which in self._WEIGHTS[self.kind]:
                with self._weights(which):
                    out[which] = prefix_kv(self.model, prefix_ids)
            return out

    def logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        logits_to_keep: int = 0,
        prefix: dict[str, list] | None = None,
    ) -> torch.Tensor:
        """Teacher logits on (left-padded) teacher prompts + the student's sampled response tokens.

        Args:
            input_ids: (B, L) teacher-prompt + response token ids (after `prefix`, if given).
            attention_mask: (B, L) 1 for real tokens, 0 for padding.
            logits_to_keep: if > 0, return only the last `logits_to_keep` positions.
            prefix: from `prefix(ids)`: every row continues these tokens.

        Returns:
            (B, L, V) or (B, logits_to_keep, V) logits, no grad (model dtype; trust-region in
            float32 so the lerp of two close tensors keeps its precision).
        """
        with self._eval():
            out = {}
            for which in self._WEIGHTS[self.kind]:
                with self._weights(which):
                    out[which] = forward_logits(self.model, input_ids, attention_mask, logits_to_keep=logits_to_keep,
                                                prefix=prefix[which] if prefix else None)
            if self.kind == "trust-region":
                # float32 at least, so the lerp of two close tensors keeps its precision (float64 stays).
                dtype = torch.promote_types(out["student"].dtype, torch.float32)
                return torch.lerp(out["base"].to(dtype), out["student"].to(dtype), self.mix)
            return out[self._WEIGHTS[self.kind][0]]

    def update(self) -> None:
        """One EMA step towards the student (kind "ema"; no-op otherwise).

        Call once per training step, after the optimizer step(s) (official code:
        DataParallelPPOActor._update_teacher at the end of update_policy); skip it when no
        step was taken (e.g. the gradient was not finite), as the official code does.
        """
        if self.kind == "ema":
            ema_update(self._student, self._teacher, self.rate)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: kind, rate, mix and (EMA) the teacher adapter weights (CPU copies)."""
        state: dict[str, Any] = {"kind": self.kind, "rate": self.rate, "mix": self.mix}
        if self.kind == "ema":
            state["adapter"] = {k: v.detach().cpu().clone() for k, v in self._teacher.items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned (the kind must match; rate / mix are taken from it).

        Raises:
            RunError: the saved kind differs or the saved teacher weights do not fit this model.
        """
        if state.get("kind") != self.kind:
            raise RunError(
                f"saved teacher is {state.get('kind')!r} but this run uses {self.kind!r}; "
                "resume with the same --teacher"
            )
        self.rate = float(state.get("rate", self.rate))
        self.mix = float(state.get("mix", self.mix))
        if self.kind == "ema":
            saved = state["adapter"]
            if saved.keys() != self._teacher.keys():
                raise RunError(
                    "saved teacher adapter does not match this model's LoRA layout (different rank or model?)"
                )
            try:
                ema_update(saved, self._teacher, 1.0)  # rate 1 = copy, with shape checks
            except ValueError as e:
                raise RunError(f"saved teacher adapter does not fit this model: {e}") from e
