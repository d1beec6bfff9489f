"""What one process loads once and every job reuses: the base model, its tokenizer, the backend.

    session = load_session(cfg)                      # model + tokenizer (+ the vLLM engine)
    with session.lora(cfg) as peft_model:            # a fresh student adapter for one SDPO run
        sampler = session.sampler(peft_model)
        ...
    sampler = session.sampler(session.model)         # baselines sample the unchanged base model

A Session holds loaded objects only. It has no configuration of its own: every job passes its own
(already validated) SolveConfig. `key(cfg)` says which configs a session can serve, so a runner
reloads only when the model, backend, device or dtype changes. LoRA is attached and removed by the
`lora` context manager, so the base model is the same object, unchanged, after every job. Every
backend is built through the sampling registry (`sampling.get_sampler`).

Tests build a Session directly from a tiny in-process model: `Session(model, tokenizer)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


def session_key(cfg) -> tuple:
    """The config fields that decide what a session loads."""
    return (cfg.model, cfg.backend, cfg.device, cfg.dtype)


@dataclass
class Session:
    model: Any  # the base causal LM (eval mode); jobs wrap it in LoRA only inside `lora()`
    tokenizer: Any
    backend: str = "hf"
    engine: Any = None  # the vLLM engine (backend "vllm"): one per process, created before the model
    key: tuple | None = None  # session_key of the config it was loaded for (None: built by hand)

    @contextmanager
    def lora(self, cfg) -> Iterator[Any]:
        """A fresh LoRA adapter on the base model for one run; removed again afterwards.

        The adapter initialisation is seeded with `cfg.seed` (same seed, same run). peft injects the
        LoRA layers into the base model in place; `unload()` takes them out again and returns that
        same object, so `self.model` needs no reassignment.
        """
        import torch

        from .model import attach_lora

        torch.manual_seed(cfg.seed)
        peft_model = attach_lora(self.model, rank=cfg.lora_rank, alpha=cfg.lora_alpha)
        try:
            yield peft_model
        finally:
            base = peft_model.unload()
            assert base is self.model, "peft unload returned a different model object"

    def sampler(self, model, *, attempts_done: int = 0, checkpoint: dict | None = None):
        """The Sampler one run uses, sampling from `model` (the peft model for SDPO, the base otherwise).

        Args:
            model: what the hf backend samples from (the live model; adapter updates apply at once).
            attempts_done: attempts the run already made (the scripted backend continues its script).
            checkpoint: the run's checkpoint, for what a resumed run sampled with (vLLM's adapter).
        """
        from .sampling import get_sampler

        if self.backend == "vllm":
            return self.engine.for_run((checkpoint or {}).get("adapter_dir"))
        if self.backend == "scripted":
            return get_sampler("scripted", tokenizer=self.tokenizer, attempts_done=attempts_done)
        return get_sampler("hf", model=model, tokenizer=self.tokenizer)


def load_session(cfg) -> Session:
    """Load what `cfg` (resolved: device filled in) needs: the vLLM engine first, then model and tokenizer.

    The vLLM engine must exist before the trainer allocates accelerator memory: it sizes its KV cache
    from the GPU memory that is free when it starts (vLLM checks free memory against
    gpu_memory_utilization at start-up).
    """
    from .model import configure_threads, load_model
    from .sampling import get_sampler

    configure_threads()
    engine = None
    if cfg.backend == "vllm":
        engine = get_sampler("vllm", model=cfg.model, lora_rank=cfg.lora_rank, seed=cfg.seed,
                             gpu_memory_utilization=cfg.gpu_memory_utilization)
    model, tokenizer = load_model(cfg.model, device=cfg.device, dtype=None if cfg.dtype == "auto" else cfg.dtype)
    return Session(model, tokenizer, backend=cfg.backend, engine=engine, key=session_key(cfg))
