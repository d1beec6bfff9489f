"""The transformers sampling backend: G completions of one prompt from the live in-memory model.

Owns `HFSampler`, the default backend (runs on CPU and CUDA). It samples with whatever LoRA adapter
is active on the model object it was given, so after an optimizer step the next `sample` call
already uses the new weights: no adapter files, no reloads. `adapter_dir` is therefore ignored
(it exists in the Sampler protocol for backends that serve adapters from disk, such as vLLM).

Does not own: chat templating (model.encode_chat), verification, or training.

    sampler = HFSampler(peft_model, tokenizer)
    completions = sampler.sample(prompt_ids, n=4, params=SamplingParams(max_new_tokens=128, seed=1))

How it samples: one `generate` call on G copies of the prompt (identical lengths, so no padding).
Temperature and top-p are applied by our own processors followed by a recorder, and the model's own
generation defaults are neutralised, so the recorded log-probs are exactly those of the
distribution the token was drawn from (the "processed" log-probs; SPEC §1.7 uses them as the old
policy in importance sampling). The recorder keeps only one (G, V) step at a time, unlike
`output_scores`, which would hold every step's (G, V) scores.

Determinism: the global torch RNG is forked, seeded with `params.seed` right before `generate`,
and restored afterwards, so the same seed, prompt, weights and machine give the same completions on
CPU and callers' RNG streams are untouched. On CUDA results are usually but not provably identical
(non-deterministic kernels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from ..errors import ConfigError
from . import Completion, SamplingParams, check_request

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class _SampledTokenLogprobs(LogitsProcessor):
    """Records log p(sampled token) under the final processed scores, one step at a time.

    Must be the last processor, so the scores it sees are the ones `generate` softmaxes and samples
    from. At call t it learns the token drawn at step t-1 (the last column of `input_ids`), gathers
    that token's log-prob from the distribution it kept from step t-1, then keeps step t's.
    """

    def __init__(self) -> None:
        self._prev: torch.Tensor | None = None  # (G, V) log-probs of the latest step
        self.steps: list[torch.Tensor] = []  # one (G,) tensor per finished step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prev is not None:
            self.steps.append(self._prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self._prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated: torch.Tensor) -> torch.Tensor:
        """Log-probs of every generated token.

        Args:
            generated: (G, S) tokens after the prompt.

        Returns:
            (G, S) float32 log-probs.
        """
        n_steps = generated.shape[1]
        if len(self.steps) < n_steps and self._prev is not None:  # the last step has no later call
            self.steps.append(self._prev.gather(1, generated[:, len(self.steps)].unsqueeze(1)).squeeze(1))
        # generate may run one extra forward and undo it (deferred stop check); drop it here.
        return torch.stack(self.steps[:n_steps], dim=1)


def _eos_ids(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos is not None:
        ids.update(int(i) for i in gen_eos)
    if not ids:
        raise ConfigError("the tokenizer has no EOS token; generation could never stop before max_new_tokens")
    return sorted(ids)


class HFSampler:
    """Sampler backed by transformers `generate` on the live (peft) model.

    Args:
        model: causal LM, usually the PeftModel being trained (its active adapter is used).
        tokenizer: the matching tokenizer (for EOS / pad ids and decoding).
    """

    name = "hf"
    rollout_correction = False  # the trainer's own model samples: nothing to correct

    def __init__(self, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_ids[0]

    def after_update(self, model, directory) -> dict:
        """Nothing to do: `sample` runs the live model, which already holds the updated adapter."""
        return {}

    def sample(
        self, prompt_ids: list[int], n: int, params: SamplingParams, adapter_dir: str | None = None
    ) -> list[Completion]:
        """Sample `n` completions of one prompt.

        Args:
            prompt_ids: chat-templated prompt token ids (see model.encode_chat).
            n: number of completions G.
            params: temperature (0 = greedy), top_p, max_new_tokens, seed.
            adapter_dir: ignored; the live model's active adapter is used (see module docstring).

        Returns:
            `n` Completions. `token_ids` stop after the first EOS (included); `logprobs[i]` is the
            log-prob of `token_ids[i]` after temperature and top-p (for greedy, T = 0, the
            log-prob under the unmodified model distribution); `truncated` is True when no EOS was
            produced within `max_new_tokens`.
        """
        check_request(prompt_ids, n, params)

        greedy = params.temperature == 0
        processors = LogitsProcessorList()
        if not greedy:
            if params.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(params.temperature))
            if params.top_p < 1.0:
                processors.append(TopPLogitsWarper(params.top_p))
        recorder = _SampledTokenLogprobs()
        processors.append(recorder)

        # Every knob that would add a warper after our recorder, or change the distribution, is set
        # explicitly to its neutral value: `generate` fills unset (None) fields from the model's own
        # generation_config (e.g. Qwen3 ships temperature 0.6, top_k 20, top_p 0.95).
        gen_config = GenerationConfig(
            do_sample=not greedy,
            max_new_tokens=params.max_new_tokens,
            min_length=0,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            num_return_sequences=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            use_cache=True,
            return_dict_in_generate=False,
            output_scores=False,
        )

        device = next(self.model.parameters()).device
        # G identical rows: same length, so no padding and no attention-mask subtleties.
        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device).repeat(n, 1)
        attention_mask = torch.ones_like(input_ids)

        was_training = self.model.training
        self.model.eval()  # no LoRA dropout while sampling
        fork_devices = [device.index or 0] if device.type == "cuda" else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(params.seed)  # seeds CPU and all CUDA generators
                sequences = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=gen_config,
                    logits_processor=processors,
                )
        finally:
            self.model.train(was_training)

        generated = sequences[:, len(prompt_ids) :]
        logprobs = recorder.finish(generated).cpu()
        generated = generated.cpu()
        eos = torch.tensor(self.eos_ids)

        completions = []
        for row, row_lp in zip(generated.tolist(), logprobs.tolist()):
            is_eos = torch.isin(torch.tensor(row, dtype=torch.long), eos)
            if bool(is_eos.any()):
                # Finished rows are padded (often with EOS itself) until every row stops: cut there.
                cut = int(is_eos.nonzero()[0, 0]) + 1
                truncated = False
            else:
                cut = len(row)
                truncated = True
            ids = row[:cut]
            completions.append(
                Completion(
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    token_ids=ids,
                    logprobs=row_lp[:cut],
                    truncated=truncated,
                )
            )
        return completions
