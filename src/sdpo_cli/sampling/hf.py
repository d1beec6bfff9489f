"""The transformers sampling backend: G completions of one prompt from the live in-memory model.

Owns `HFSampler`, the default backend (runs on CPU and CUDA). It samples with whatever LoRA adapter
is active on the model object it was given, so after an optimizer step the next `sample` call
already uses the new weights: no adapter files, no reloads (`after_update` has nothing to do).

Does not own: chat templating (model.encode_chat), verification, or training.

    sampler = HFSampler(peft_model, tokenizer)
    completions = sampler.sample(prompt_ids, n=4, params=SamplingParams(max_new_tokens=128, seed=1))

How it samples: one `generate` call for a whole batch of requests. `sample(prompt, n, params)` is one
request (G copies of one prompt); `sample_many` takes several (e.g. the next turn of every multi-turn
seed, or several best-of-k batches), left-pads their prompts to one length with the matching attention
mask (positions are computed from the mask), and runs them together. Temperature and top-p are applied by
our own processors, then a recorder keeps the log-probs of the distribution each token was drawn from (the
"processed" log-probs, the old policy of the loss's importance weights), and the model's own generation
defaults are neutralised. The recorder keeps only one (rows, V) step at a time, unlike `output_scores`.

Speed: the active LoRA adapter is folded into copies of the base weights while `generate` runs
(model.merged_lora: base-model speed, the exact base weights back afterwards), and when every row
has the same prompt (one request, or several of one prompt) the prompt runs through the model once
and its KV cache is repeated for the rows. Both change only float rounding, not the distribution.

Determinism: every request draws its tokens from its own torch.Generator seeded with its `params.seed`
(one multinomial per step over the request's rows), so a request gets the same completions whether it is
sampled alone or batched with others, and the same as transformers' own sampling seeded with that seed
(torch.manual_seed, one multinomial over the rows). The global RNG is not touched. Batched and alone are
equal up to floating-point differences of the batch shape (padding changes matmul shapes); on the tiny
test model and on CPU they are identical (tests/test_hf_sampler.py). On CUDA results are usually but not
provably identical (non-deterministic kernels).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    MinNewTokensLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from ..errors import ConfigError
from ..model import merged_lora
from . import Completion, SampleRequest, SamplingParams, check_request

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


class _PerRequestSampler(LogitsProcessor):
    """Draws each row's next token with its request's own generator; returns scores where only that token
    is finite, so `generate`'s greedy argmax takes it.

    Rows [a, b) of a request draw `multinomial(softmax(scores[a:b]), 1, generator=g)` once per step: the
    same arithmetic and RNG stream as transformers' own sampling (softmax, then one multinomial over the
    batch) with `torch.manual_seed(seed)`, so one request alone reproduces `generate(do_sample=True)`.
    """

    def __init__(self, spans: list[tuple[int, int]], generators: list[torch.Generator]) -> None:
        self.spans, self.generators = spans, generators

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        for (a, b), g in zip(self.spans, self.generators):
            probs = torch.nn.functional.softmax(scores[a:b], dim=-1)
            chosen[a:b] = torch.multinomial(probs, num_samples=1, generator=g).squeeze(1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen.unsqueeze(1), 0.0)


class _quiet_generation_config:
    """Silence transformers' "generation flags are not valid and may be ignored" warning for one call: the
    model's own sampling defaults are merged into our greedy config and would be reported every call."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger("transformers.generation.configuration_utils")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


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
        merge: fold the active LoRA adapter into the base weights while generating (model.merged_lora).
        share_prompt: when all rows have the same prompt, run it once and repeat its KV cache.
        prefix_cache_tokens: how many prompt tokens of keyed requests (`SampleRequest.prefix_key`, e.g.
            a multi-turn chain) to keep the KV cache of, least recently used first out. The next
            request with the same key reuses the KV of its longest common token prefix with the
            earlier prompt instead of recomputing it (0 turns this off).
        min_new_tokens: EOS is banned before this many tokens (benchmarks use it to force lengths;
            the recorded log-probs are then those of the distribution with EOS removed).
    """

    name = "hf"
    rollout_correction = False  # the trainer's own model samples: nothing to correct

    def __init__(
        self,
        model: "PreTrainedModel",
        tokenizer: "PreTrainedTokenizerBase",
        *,
        merge: bool = True,
        share_prompt: bool = True,
        min_new_tokens: int = 0,
        prefix_cache_tokens: int = 1 << 16,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_ids[0]
        self.merge = merge
        self.share_prompt = share_prompt
        self.min_new_tokens = min_new_tokens
        self.prefix_cache_tokens = prefix_cache_tokens
        # prefix_key -> (prompt ids, [(K, V) per layer], each (1, kv_heads, len, head_dim)); LRU order.
        self._prefixes: OrderedDict = OrderedDict()
        self._prefix_weights: tuple | None = None  # the weights the stored KV were computed with

    def after_update(self, model, directory) -> dict:
        """Nothing to do: `sample` runs the live model, which already holds the updated adapter."""
        return {}

    @property
    def batch_key(self):
        """Samplers with equal keys can share one `sample_many` call (same live model)."""
        return ("hf", id(self.model))

    def _prompt_cache(self, prompt: list[int], n: int, device):
        """KV cache of all prompt tokens but the last, computed once and repeated for the `n` rows
        (`generate` then runs only the last prompt token and the new tokens). None for a 1-token prompt."""
        if len(prompt) < 2:
            return None
        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([prompt[:-1]], dtype=torch.long, device=device)
        self.model(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache, use_cache=True,
                   logits_to_keep=1)
        if n > 1:
            cache.batch_repeat_interleave(n)
        return cache

    def _full_attention_only(self) -> bool:
        """Keyed prefix reuse needs every layer to keep the whole context (no sliding windows)."""
        if not hasattr(self, "_full_attention"):
            from transformers.cache_utils import DynamicLayer

            layers = DynamicCache(config=self.model.config).layers
            self._full_attention = bool(layers) and all(type(x) is DynamicLayer for x in layers)
        return self._full_attention

    def _layout(self, requests: list[SampleRequest], rows: list[list[int]], device):
        """(input_ids, attention_mask, cache or None, the columns of each row's prompt) for one call.

        Without reusable prefixes the prompts are left-padded to one width. Where keyed requests have a
        stored prefix (the KV of an earlier prompt under the same `prefix_key`), row i reuses r_i tokens:
        the longest common token prefix with the stored prompt, at least one token left to run. Its row
        is [zeros][r_i cached tokens] [pads][the other tokens]: the cached parts fill the first C = max r_i
        columns (the cache), the rest of every row after them. The attention mask hides the holes and
        the positions come from the mask, so every token sits at its true position. Each row reuses
        exactly its own common prefix whatever else is in the batch, so a chain samples the same tokens
        batched or alone.
        """
        per_row = [(None, 0)] * len(rows)
        if self._prefixes and self._weights_version() != self._prefix_weights:
            self._prefixes.clear()  # the weights changed (an optimizer step): stored KV are stale
        if self.prefix_cache_tokens and self._prefixes and self._full_attention_only():
            per_row = []
            for r in requests:
                entry = self._prefixes.get(r.prefix_key) if r.prefix_key is not None else None
                common = 0
                if entry is not None:
                    old, limit = entry[0], min(len(entry[0]), len(r.prompt_ids) - 1)
                    while common < limit and old[common] == r.prompt_ids[common]:
                        common += 1
                per_row += [(entry, common)] * r.n
        if not any(c for _, c in per_row):
            width = max(len(x) for x in rows)
            ids = [[self.pad_id] * (width - len(x)) + x for x in rows]
            mask = [[0] * (width - len(x)) + [1] * len(x) for x in rows]
            cols = [list(range(width - len(x), width)) for x in rows]
            cache = None
        else:
            C = max(c for _, c in per_row)
            U = max(len(x) - c for x, (_, c) in zip(rows, per_row))
            ids, mask, cols = [], [], []
            for x, (_, c) in zip(rows, per_row):
                gap = U - (len(x) - c)
                ids.append([self.pad_id] * (C - c) + x[:c] + [self.pad_id] * gap + x[c:])
                mask.append([0] * (C - c) + [1] * c + [0] * gap + [1] * (len(x) - c))
                cols.append(list(range(C - c, C)) + list(range(C + gap, C + U)))
            layers = []
            some = next(e for e, c in per_row if c)[1]
            for layer, (k0, v0) in enumerate(some):
                keys = k0.new_zeros((len(rows), k0.shape[1], C, k0.shape[3]))
                values = v0.new_zeros((len(rows), v0.shape[1], C, v0.shape[3]))
                for i, (entry, c) in enumerate(per_row):
                    if c:
                        k, v = entry[1][layer]
                        keys[i, :, C - c:] = k[0, :, :c]
                        values[i, :, C - c:] = v[0, :, :c]
                layers.append((keys, values))
            cache = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
        return as_tensor(ids), as_tensor(mask), cache, cols

    def _weights_version(self) -> tuple:
        """Changes whenever a parameter is replaced or modified in place (torch counts in-place writes)."""
        return tuple((id(p), p._version) for p in self.model.parameters())

    def _store_prefixes(self, requests: list[SampleRequest], cols: list[list[int]], cache) -> None:
        """Keep the prompt KV of every keyed request (its first row) for the next call with that key."""
        if not self.prefix_cache_tokens or cache is None or not self._full_attention_only():
            return
        self._prefix_weights = self._weights_version()
        start = 0
        for r in requests:
            if r.prefix_key is not None:
                where = torch.tensor(cols[start], device=cache.layers[0].keys.device)
                kv = [(layer.keys[start:start + 1].index_select(2, where).clone(),
                       layer.values[start:start + 1].index_select(2, where).clone()) for layer in cache.layers]
                self._prefixes.pop(r.prefix_key, None)
                self._prefixes[r.prefix_key] = (list(r.prompt_ids), kv)
            start += r.n
        while sum(len(e[0]) for e in self._prefixes.values()) > self.prefix_cache_tokens:
            self._prefixes.popitem(last=False)

    def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Completion]:
        """Sample `n` completions of one prompt (see `sample_many`)."""
        return self.sample_many([SampleRequest(prompt_ids, n, params)])[0]

    def sample_many(self, requests: list[SampleRequest]) -> list[list[Completion]]:
        """Sample several requests in one `generate` call (prompts left-padded to one length).

        Args:
            requests: (prompt_ids, n, params) each; they must agree on temperature, top_p and
                max_new_tokens (one set of processors per call); each has its own seed.

        Returns:
            per request, its `n` Completions. `token_ids` stop after the first EOS (included);
            `logprobs[i]` is the log-prob of `token_ids[i]` after temperature and top-p (for greedy,
            T = 0, under the unmodified model distribution); `truncated` is True when no EOS was produced
            within `max_new_tokens`.
        """
        for r in requests:
            check_request(r.prompt_ids, r.n, r.params)
        p0 = requests[0].params
        if any((r.params.temperature, r.params.top_p, r.params.max_new_tokens)
               != (p0.temperature, p0.top_p, p0.max_new_tokens) for r in requests):
            raise ConfigError("requests sampled together must share temperature, top_p and max_new_tokens")

        device = next(self.model.parameters()).device
        rows = [r.prompt_ids for r in requests for _ in range(r.n)]
        input_ids, attention_mask, cache, cols = self._layout(requests, rows, device)
        width = input_ids.shape[1]

        greedy = p0.temperature == 0
        processors = LogitsProcessorList()
        if self.min_new_tokens:
            processors.append(MinNewTokensLengthLogitsProcessor(width, self.min_new_tokens, self.eos_ids,
                                                                device=str(device)))
        if not greedy:
            if p0.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(p0.temperature))
            if p0.top_p < 1.0:
                processors.append(TopPLogitsWarper(p0.top_p))
        recorder = _SampledTokenLogprobs()
        processors.append(recorder)
        if not greedy:
            spans, start = [], 0
            for r in requests:
                spans.append((start, start + r.n))
                start += r.n
            generators = [torch.Generator(device=device).manual_seed(r.params.seed) for r in requests]
            processors.append(_PerRequestSampler(spans, generators))

        # Sampling itself is done by our processors (_PerRequestSampler), so `generate` runs greedily on
        # one-token scores: with do_sample=False it adds no warper of its own, whatever the model's
        # generation_config says (e.g. Qwen3 ships temperature 0.6, top_k 20, top_p 0.95). The sampling
        # fields stay unset so `generate` does not warn that they are ignored in greedy mode; the knobs that
        # would change the distribution in greedy mode too are set to their neutral values.
        gen_config = GenerationConfig(
            do_sample=False,
            max_new_tokens=p0.max_new_tokens,
            min_length=0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            num_return_sequences=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            use_cache=True,
            return_dict_in_generate=True,
            output_scores=False,
        )

        was_training = self.model.training
        self.model.eval()  # no LoRA dropout while sampling
        merged = merged_lora(self.model) if self.merge else contextlib.nullcontext()
        one_prompt = self.share_prompt and all(x == rows[0] for x in rows)
        keyed = any(r.prefix_key is not None for r in requests)
        try:
            with torch.no_grad(), _quiet_generation_config(), merged:
                if cache is None and one_prompt:
                    cache = self._prompt_cache(rows[0], len(rows), device)
                out = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=gen_config,
                    logits_processor=processors,
                    past_key_values=cache,
                )
                sequences = out.sequences
                if keyed:
                    self._store_prefixes(requests, cols, out.past_key_values)
        finally:
            self.model.train(was_training)

        generated = sequences[:, width:]
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
        out, start = [], 0
        for r in requests:
            out.append(completions[start:start + r.n])
            start += r.n
        return out
