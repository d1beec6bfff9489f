"""Samplers: generate G completions of one prompt with the current LoRA adapter.

Every backend (transformers, vLLM, the scripted test sampler) implements `Sampler`, so nothing above
this package knows which backend runs. Every backend is built by name with `get_sampler` (the
session does it; the training loop never constructs a sampler itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `seed` makes a batch reproducible on the same machine and backend."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0


@dataclass
class Completion:
    """One sampled attempt.

    Attributes:
        text: decoded response (special tokens skipped).
        token_ids: the exact sampled token ids, EOS included when generation stopped on it.
            The teacher re-scores exactly these ids (never a re-tokenisation of `text`).
        logprobs: log-probability of each sampled token under the sampling distribution
            (after temperature / top-p), same length as `token_ids`.
        truncated: generation hit `max_new_tokens` without emitting EOS.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float] = field(default_factory=list)
    truncated: bool = False


@dataclass(frozen=True)
class SampleRequest:
    """`n` completions of one chat-templated prompt, drawn with `params` (its seed included).

    `prefix_key` names a conversation whose prompts grow (a multi-turn chain): a backend may keep the
    prompt's KV cache under it and reuse the common prefix next time (vLLM's prefix caching does this
    by itself). It never changes what is sampled, only how fast; use it only while the weights stay
    the same (the baselines sample the unchanged base model).
    """

    prompt_ids: list[int]
    n: int
    params: SamplingParams
    prefix_key: str | None = None


def sample_batched(samplers: list, requests: list[SampleRequest]) -> list[list[Completion]]:
    """Sample `requests[i]` with `samplers[i]`, in one call where the samplers allow it.

    Samplers with the same `batch_key` (e.g. the transformers backend on one model, or vLLM on one
    adapter) share a single batched call; others (the scripted backend, whose replies follow each run's
    own attempt count) are called one by one. Either way each request gets what it would get alone.
    """
    first = samplers[0].batch_key
    if first is not None and all(s.batch_key == first for s in samplers):
        return samplers[0].sample_many(requests)
    return [s.sample(r.prompt_ids, r.n, r.params) for s, r in zip(samplers, requests)]


def check_request(prompt_ids: list[int], n: int, params: SamplingParams) -> None:
    """Reject a sampling request every backend would get wrong (ConfigError, one line)."""
    from ..errors import ConfigError

    if n < 1:
        raise ConfigError(f"number of samples must be >= 1, got {n}")
    if not prompt_ids:
        raise ConfigError("prompt_ids is empty; encode the prompt with model.encode_chat first")
    if params.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if params.temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {params.temperature}")
    if not 0.0 < params.top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {params.top_p}")


class Sampler(Protocol):
    """A sampling backend, as one run uses it.

    `prompt_ids` is the chat-templated prompt, already tokenised, so that every backend and the
    trainer see the same prefix. The backend-specific parts of a training loop live here too:

    * `rollout_correction`: True when the samples come from another engine than the trainer's
      forward pass (vLLM), so the loss applies the per-token weight min(p_trainer / p_sampler, clip).
    * `sample_many(requests)`: several prompts (each with its own n and seed) in one batched call,
      each getting what it would get alone.
    * `after_update(model, directory)`: after an optimizer step, make the next `sample` call use the
      updated adapter. The transformers backend samples from the live model and does nothing; vLLM
      saves the adapter to a new `directory` and serves it under a new name. Returns what a resumed
      run needs to continue with the same adapter (stored in the run's checkpoint).
    """

    name: str
    rollout_correction: bool
    batch_key: object  # samplers with equal (non-None) keys can share one `sample_many` call

    def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Completion]: ...

    def sample_many(self, requests: list[SampleRequest]) -> list[list[Completion]]: ...

    def after_update(self, model, directory) -> dict: ...


# name -> (module, class, install hint). Modules are imported only when chosen, so `--backend hf`
# never imports vllm and `sdpo --help` imports neither.
BACKENDS: dict[str, tuple[str, str, str]] = {
    "hf": ("sdpo_cli.sampling.hf", "HFSampler", "pip install -c constraints.txt -e ."),
    "vllm": (
        "sdpo_cli.sampling.vllm",
        "VLLMSampler",
        "pip install 'sdpo-cli[vllm]' (see scripts/setup_vllm_env.sh) or use --backend hf",
    ),
    # Replays SDPO_SCRIPT responses (tests and dry runs; see sampling/scripted.py).
    "scripted": ("sdpo_cli.sampling.scripted", "ScriptedSampler", ""),
}


def get_sampler(name: str, **kwargs):
    """Build the backend `name` ("hf", "vllm", "scripted"), importing its module only now.

    Args:
        name: backend name, a key of `BACKENDS`.
        **kwargs: passed to the backend's constructor (hf: model=, tokenizer=; scripted: tokenizer=;
            vllm: model=, lora_rank=, ... — vLLM's object is an engine; `engine.for_run(...)` gives
            the per-run Sampler).

    Raises:
        ConfigError: unknown backend name.
        BackendUnavailable: the backend's module or one of its dependencies cannot be imported.
    """
    import importlib

    from ..errors import BackendUnavailable, ConfigError

    if name not in BACKENDS:
        raise ConfigError(f"--backend {name!r} is not one of {', '.join(BACKENDS)}")
    module_name, class_name, hint = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendUnavailable(f"backend '{name}' is unavailable ({e}); {hint}") from e
    return getattr(module, class_name)(**kwargs)
