"""HFSampler on the tiny random Llama: shapes, EOS handling, exact log-probs, determinism."""

from __future__ import annotations

import copy

import pytest
import torch

from sdpo_cli.errors import ConfigError
from sdpo_cli.model import attach_lora, encode_chat
from sdpo_cli.sampling import SamplingParams
from sdpo_cli.sampling.hf import HFSampler


@pytest.fixture(scope="module")
def prompt_ids(tiny_tokenizer):
    return encode_chat(tiny_tokenizer, "What is 2+3?")


def _full_logits(model, prompt_ids, token_ids):
    """Independent teacher-forced forward pass: logits predicting each completion token, (T, V)."""
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    p = len(prompt_ids)
    return logits[p - 1 : p - 1 + len(token_ids)]


def _eos_biased_model(model, tokenizer, eos_logit_bias: float):
    """Copy of `model` whose LM head adds `eos_logit_bias` to the EOS logit (so rows stop early)."""
    model = copy.deepcopy(model)
    old = model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = eos_logit_bias
    model.lm_head = head
    return model


def test_shapes_logprobs_and_truncation(tiny_model, prompt_ids):
    model, tok = tiny_model
    out = HFSampler(model, tok).sample(prompt_ids, 3, SamplingParams(max_new_tokens=10, seed=0))
    assert len(out) == 3
    for c in out:
        assert len(c.token_ids) == len(c.logprobs)
        assert 1 <= len(c.token_ids) <= 10
        assert all(lp <= 0.0 and lp > float("-inf") for lp in c.logprobs)
        assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
        # A near-uniform random model over ~320 tokens essentially never emits EOS in 10 steps.
        assert c.truncated == (tok.eos_token_id not in c.token_ids)


def test_rows_stop_at_first_eos_which_is_kept(tiny_model, prompt_ids):
    # EOS logit +4 => p(EOS) ~ 14% per step: over 12 steps some rows stop, some run out.
    # pad == EOS here (as in SmolLM2), so stopped rows are padded with EOS and must be cut.
    base, tok = tiny_model
    model = _eos_biased_model(base, tok, 4.0)
    max_new = 12
    out = HFSampler(model, tok).sample(prompt_ids, 16, SamplingParams(max_new_tokens=max_new, seed=3))
    eos = tok.eos_token_id
    for c in out:
        if c.truncated:
            assert len(c.token_ids) == max_new and eos not in c.token_ids
        else:
            assert c.token_ids[-1] == eos and eos not in c.token_ids[:-1]
        assert len(c.logprobs) == len(c.token_ids)
        # The EOS token's log-prob is real, not the log-prob of padding.
        ref = torch.log_softmax(_full_logits(model, prompt_ids, c.token_ids), -1)
        got = torch.tensor(c.logprobs)
        want = ref.gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert any(c.truncated for c in out) and any(not c.truncated for c in out)


def test_logprobs_match_independent_forward_pass(tiny_model, prompt_ids):
    model, tok = tiny_model
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16, seed=7)
    out = HFSampler(model, tok).sample(prompt_ids, 4, params)
    for c in out:
        logp = torch.log_softmax(_full_logits(model, prompt_ids, c.token_ids), -1)
        want = logp.gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor(c.logprobs), want, atol=1e-4, rtol=0)


def _processed_logprobs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Reference temperature + nucleus filter, written from the definition: keep the smallest set of
    most likely tokens whose probability reaches top_p, renormalise. (T, V) -> (T, V) log-probs."""
    probs = torch.softmax(logits / temperature, -1)
    sorted_p, order = probs.sort(-1, descending=True)
    mass_before = sorted_p.cumsum(-1) - sorted_p  # mass of strictly more likely tokens
    keep_sorted = mass_before < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = torch.where(keep, probs, torch.zeros_like(probs))
    return torch.log(kept / kept.sum(-1, keepdim=True))


def test_logprobs_follow_temperature_and_top_p(tiny_model, prompt_ids):
    model, tok = tiny_model
    t, p = 0.7, 0.9
    params = SamplingParams(temperature=t, top_p=p, max_new_tokens=12, seed=11)
    out = HFSampler(model, tok).sample(prompt_ids, 4, params)
    for c in out:
        ref = _processed_logprobs(_full_logits(model, prompt_ids, c.token_ids), t, p)
        want = ref.gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
        assert torch.isfinite(want).all()  # every sampled token lies inside the nucleus
        torch.testing.assert_close(torch.tensor(c.logprobs), want, atol=1e-4, rtol=0)


def test_tiny_top_p_keeps_only_the_argmax(tiny_model, prompt_ids):
    model, tok = tiny_model
    out = HFSampler(model, tok).sample(prompt_ids, 2, SamplingParams(top_p=1e-6, max_new_tokens=8, seed=0))
    greedy = _full_logits(model, prompt_ids, out[0].token_ids).argmax(-1).tolist()
    for c in out:
        assert c.token_ids == greedy
        assert all(abs(lp) < 1e-6 for lp in c.logprobs)  # a one-token nucleus has probability 1


def test_greedy_ignores_seed_and_takes_argmax(tiny_model, prompt_ids):
    model, tok = tiny_model
    sampler = HFSampler(model, tok)
    a = sampler.sample(prompt_ids, 2, SamplingParams(temperature=0.0, max_new_tokens=8, seed=1))
    b = sampler.sample(prompt_ids, 1, SamplingParams(temperature=0.0, max_new_tokens=8, seed=2))
    assert a[0].token_ids == a[1].token_ids == b[0].token_ids
    assert a[0].token_ids == _full_logits(model, prompt_ids, a[0].token_ids).argmax(-1).tolist()


def test_same_seed_same_completions_other_seed_differs(tiny_model, prompt_ids):
    model, tok = tiny_model
    sampler = HFSampler(model, tok)
    params = SamplingParams(max_new_tokens=12, seed=5)
    a = sampler.sample(prompt_ids, 4, params)
    b = sampler.sample(prompt_ids, 4, params)
    c = sampler.sample(prompt_ids, 4, SamplingParams(max_new_tokens=12, seed=6))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.logprobs for x in a] == [x.logprobs for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    assert len({tuple(x.token_ids) for x in a}) > 1  # the G rows are different samples


def test_caller_rng_is_untouched(tiny_model, prompt_ids):
    model, tok = tiny_model
    state = torch.get_rng_state()
    HFSampler(model, tok).sample(prompt_ids, 2, SamplingParams(max_new_tokens=4, seed=9))
    assert torch.equal(torch.get_rng_state(), state)


def test_samples_from_the_live_adapter_and_restores_train_mode(fresh_tiny_model, prompt_ids):
    model, tok = fresh_tiny_model
    peft_model = attach_lora(model, rank=4, alpha=8)
    with torch.no_grad():  # a non-zero B makes the adapter change the distribution
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    peft_model.train()
    out = HFSampler(peft_model, tok).sample(prompt_ids, 2, SamplingParams(max_new_tokens=8, seed=0))
    assert peft_model.training
    peft_model.eval()
    for c in out:
        adapted = torch.log_softmax(_full_logits(peft_model, prompt_ids, c.token_ids), -1)
        want = adapted.gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor(c.logprobs), want, atol=1e-4, rtol=0)
        with peft_model.disable_adapter():
            base = torch.log_softmax(_full_logits(peft_model, prompt_ids, c.token_ids), -1)
        base_lp = base.gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
        assert not torch.allclose(base_lp, want, atol=1e-3)


def test_ignores_model_generation_defaults(fresh_tiny_model, prompt_ids):
    # Qwen3-style shipped defaults (top_k 20, temperature 0.6) must not leak into our distribution.
    model, tok = fresh_tiny_model
    model.generation_config.top_k = 1
    model.generation_config.temperature = 0.6
    model.generation_config.repetition_penalty = 1.5
    out = HFSampler(model, tok).sample(prompt_ids, 2, SamplingParams(max_new_tokens=8, seed=4))
    assert out[0].token_ids != out[1].token_ids  # top_k=1 would make every row the greedy one
    for c in out:
        logp = torch.log_softmax(_full_logits(model, prompt_ids, c.token_ids), -1)
        want = logp.gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor(c.logprobs), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "n, params",
    [
        (0, SamplingParams()),
        (1, SamplingParams(max_new_tokens=0)),
        (1, SamplingParams(temperature=-0.5)),
        (1, SamplingParams(top_p=0.0)),
        (1, SamplingParams(top_p=1.5)),
    ],
)
def test_bad_arguments_raise_config_error(tiny_model, prompt_ids, n, params):
    model, tok = tiny_model
    with pytest.raises(ConfigError):
        HFSampler(model, tok).sample(prompt_ids, n, params)


def test_empty_prompt_is_rejected(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ConfigError, match="encode_chat"):
        HFSampler(model, tok).sample([], 1, SamplingParams(max_new_tokens=2))


def test_get_sampler_builds_hf_and_rejects_unknown_names(tiny_model):
    from sdpo_cli.sampling import get_sampler

    model, tok = tiny_model
    assert isinstance(get_sampler("hf", model=model, tokenizer=tok), HFSampler)
    with pytest.raises(ConfigError, match="hf"):
        get_sampler("nope")


def test_get_sampler_missing_backend_gives_install_hint(monkeypatch):
    from sdpo_cli import sampling
    from sdpo_cli.errors import BackendUnavailable

    ghost = ("sdpo_cli.sampling.no_such_backend", "Ghost", "pip install ghost")
    monkeypatch.setitem(sampling.BACKENDS, "ghost", ghost)
    with pytest.raises(BackendUnavailable, match="pip install ghost"):
        sampling.get_sampler("ghost")


# --------------------------------------------------------------------------------------------------
# Sampling with the LoRA merged (model.merged_lora) and a shared prompt cache


def _adapted(model, *, dtype=torch.float32, teacher=True):
    """`model` in `dtype` with a non-zero student LoRA and, optionally, a different EMA teacher adapter."""
    from sdpo_cli.teacher import Teacher

    peft_model = attach_lora(copy.deepcopy(model).to(dtype), rank=4, alpha=8)
    if teacher:
        Teacher(peft_model, "ema")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=gen)
    return peft_model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("keep", ["device", "host"])
def test_many_merged_samples_leave_every_weight_bitwise_unchanged(tiny_model, prompt_ids, dtype, keep, monkeypatch):
    import sdpo_cli.sampling.hf as hf_mod
    from sdpo_cli.model import merged_lora

    model, tok = tiny_model
    peft_model = _adapted(model, dtype=dtype)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    monkeypatch.setattr(hf_mod, "merged_lora", lambda m: merged_lora(m, keep=keep))
    sampler = HFSampler(peft_model, tok)
    for seed in range(40):  # merge-unmerge arithmetic would drift by now, in bf16 at once
        sampler.sample(prompt_ids, 2, SamplingParams(max_new_tokens=3, seed=seed))
    for n, p in peft_model.named_parameters():  # base weights, student and EMA teacher adapters
        assert torch.equal(p, before[n]), n
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)  # adapters re-enabled, teacher frozen


@pytest.mark.parametrize("keep", ["device", "host"])
def test_merged_model_computes_the_adapted_model_and_restores_on_error(tiny_model, prompt_ids, keep):
    from sdpo_cli.model import merged_lora

    model, _ = tiny_model
    peft_model = _adapted(model).eval()
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        adapted = peft_model(input_ids=ids).logits
        with merged_lora(peft_model, keep=keep):
            merged = peft_model(input_ids=ids).logits
        with pytest.raises(RuntimeError, match="boom"), merged_lora(peft_model, keep=keep):
            raise RuntimeError("boom")
        after = peft_model(input_ids=ids).logits
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)
    assert not torch.allclose(merged, model(input_ids=ids).logits, atol=1e-3)  # the adapter matters here
    assert torch.equal(after, adapted)  # adapters back on, weights back, after an exception too


def test_merged_and_shared_prompt_sampling_match_the_plain_path(tiny_model, prompt_ids):
    model, tok = tiny_model
    peft_model = _adapted(model)
    params = SamplingParams(max_new_tokens=12, seed=5)
    plain = HFSampler(peft_model, tok, merge=False, share_prompt=False).sample(prompt_ids, 3, params)
    fast = HFSampler(peft_model, tok).sample(prompt_ids, 3, params)
    assert [c.token_ids for c in fast] == [c.token_ids for c in plain]
    for a, b in zip(fast, plain):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)


def test_bf16_merged_logprobs_match_an_unmerged_bf16_forward(tiny_model, prompt_ids):
    model, tok = tiny_model
    peft_model = _adapted(model, dtype=torch.bfloat16).eval()
    for c in HFSampler(peft_model, tok).sample(prompt_ids, 2, SamplingParams(max_new_tokens=8, seed=0)):
        logp = torch.log_softmax(_full_logits(peft_model, prompt_ids, c.token_ids), -1)
        want = logp.gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
        # bf16 rounds the merged weight W + BA once, the unmerged forward rounds W x and BA x apart.
        torch.testing.assert_close(torch.tensor(c.logprobs), want, atol=3e-2, rtol=0)


def test_min_new_tokens_forces_the_length(tiny_model, prompt_ids):
    base, tok = tiny_model
    model = _eos_biased_model(base, tok, 8.0)  # p(EOS) ~ 0.9 per step without the ban
    out = HFSampler(model, tok, min_new_tokens=6).sample(prompt_ids, 4, SamplingParams(max_new_tokens=10, seed=0))
    assert all(len(c.token_ids) >= 6 and tok.eos_token_id not in c.token_ids[:6] for c in out)


def test_inside_disable_adapter_the_sampler_samples_the_base_model(tiny_model, prompt_ids):
    model, tok = tiny_model
    peft_model = _adapted(model)
    params = SamplingParams(max_new_tokens=8, seed=3)
    with peft_model.disable_adapter():
        got = HFSampler(peft_model, tok).sample(prompt_ids, 2, params)
    want = HFSampler(model, tok).sample(prompt_ids, 2, params)  # the plain base model
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    for a, b in zip(got, want):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("keep", ["device", "host"])
def test_cuda_merged_sampling_keeps_weights_and_matches_the_adapter(tiny_model, prompt_ids, dtype, keep, monkeypatch):
    import sdpo_cli.sampling.hf as hf_mod
    from sdpo_cli.model import merged_lora

    model, tok = tiny_model
    peft_model = _adapted(model, dtype=dtype).to("cuda")
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    monkeypatch.setattr(hf_mod, "merged_lora", lambda m: merged_lora(m, keep=keep))
    sampler = HFSampler(peft_model, tok)
    for seed in range(10):
        out = sampler.sample(prompt_ids, 2, SamplingParams(max_new_tokens=6, seed=seed))
    assert all(torch.equal(p, before[n]) for n, p in peft_model.named_parameters())
    peft_model.eval()
    for c in out:
        ids = torch.tensor([prompt_ids + c.token_ids], device="cuda")
        with torch.no_grad():
            logits = peft_model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
        want = torch.log_softmax(logits, -1).gather(1, torch.tensor(c.token_ids, device="cuda")[:, None]).squeeze(1)
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        torch.testing.assert_close(torch.tensor(c.logprobs), want.cpu(), atol=tol, rtol=0)
def test_one_request_equals_transformers_own_seeded_sampling(tiny_model, prompt_ids):
    """sample() draws exactly what generate(do_sample=True) draws after torch.manual_seed(seed)."""
    from transformers import GenerationConfig

    model, tok = tiny_model
    params = SamplingParams(max_new_tokens=12, seed=11, temperature=0.9)
    ours = HFSampler(model, tok).sample(prompt_ids, 3, params)
    ids = torch.tensor([prompt_ids] * 3)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        cfg = GenerationConfig(do_sample=True, temperature=0.9, top_k=0, top_p=1.0, max_new_tokens=12,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
    for c, row in zip(ours, ref[:, len(prompt_ids):].tolist()):
        assert c.token_ids == row[: len(c.token_ids)]


def test_requests_batched_together_get_what_they_get_alone(tiny_model, prompt_ids):
    """Prompts of different lengths (left-padded), each with its own seed and n, in one generate call."""
    from sdpo_cli.model import encode_chat
    from sdpo_cli.sampling import SampleRequest

    model, tok = tiny_model
    s = HFSampler(model, tok)
    other = encode_chat(tok, [{"role": "user", "content": "A much longer question, with several more words in it?"}])
    assert len(other) != len(prompt_ids)
    requests = [SampleRequest(prompt_ids, 2, SamplingParams(max_new_tokens=16, seed=1)),
                SampleRequest(other, 1, SamplingParams(max_new_tokens=16, seed=2)),
                SampleRequest(prompt_ids, 1, SamplingParams(max_new_tokens=16, seed=3))]
    together = s.sample_many(requests)
    alone = [s.sample(r.prompt_ids, r.n, r.params) for r in requests]
    assert [[c.token_ids for c in cs] for cs in together] == [[c.token_ids for c in cs] for cs in alone]
    for cs_t, cs_a in zip(together, alone):
        for t, a in zip(cs_t, cs_a):
            assert t.truncated == a.truncated and t.text == a.text
            assert torch.allclose(torch.tensor(t.logprobs), torch.tensor(a.logprobs), atol=1e-5)
    assert len({tuple(c.token_ids) for cs in together for c in cs}) > 1  # really different samples


def test_keyed_prefix_reuse_samples_exactly_what_a_full_prefill_samples(tiny_model, prompt_ids):
    """Growing prompts under one prefix_key (a multi-turn chain): the second call reuses the first
    call's prompt KV for their common prefix and still draws the same tokens and log-probs."""
    from sdpo_cli.sampling import SampleRequest

    model, tok = tiny_model
    turn1 = {"a": prompt_ids, "b": prompt_ids[:-3]}
    turn2 = {"a": prompt_ids + prompt_ids[3:9], "b": prompt_ids[:-3] + prompt_ids[:11]}  # one grows more
    params = SamplingParams(max_new_tokens=12, seed=5)

    def run(sampler, prompts, seed):
        reqs = [SampleRequest(p, 1, SamplingParams(max_new_tokens=12, seed=seed + i), prefix_key=k)
                for i, (k, p) in enumerate(prompts.items())]
        return [(c.token_ids, c.logprobs) for cs in sampler.sample_many(reqs) for c in cs]

    reuse, fresh = HFSampler(model, tok), HFSampler(model, tok, prefix_cache_tokens=0)
    assert run(reuse, turn1, 1) == run(fresh, turn1, 1)
    assert set(reuse._prefixes) == {"a", "b"} and not fresh._prefixes
    got, want = run(reuse, turn2, 2), run(fresh, turn2, 2)
    for (ids, lp), (ids2, lp2) in zip(got, want):
        assert ids == ids2
        torch.testing.assert_close(torch.tensor(lp), torch.tensor(lp2), atol=1e-5, rtol=0)
    assert params.seed == 5  # untouched


def test_prefix_store_is_capped_least_recently_used_first(tiny_model, prompt_ids):
    from sdpo_cli.sampling import SampleRequest

    model, tok = tiny_model
    s = HFSampler(model, tok, prefix_cache_tokens=2 * len(prompt_ids))
    for key in ("a", "b", "c"):
        s.sample_many([SampleRequest(prompt_ids, 1, SamplingParams(max_new_tokens=2, seed=1), prefix_key=key)])
    assert list(s._prefixes) == ["b", "c"]


def test_prefix_store_is_dropped_when_the_weights_change(fresh_tiny_model, prompt_ids):
    """An optimizer step (an in-place write to a parameter) makes stored KV stale: they are not reused."""
    from sdpo_cli.sampling import SampleRequest

    model, tok = fresh_tiny_model
    s = HFSampler(model, tok)
    req = SampleRequest(prompt_ids, 1, SamplingParams(max_new_tokens=4, seed=1), prefix_key="chain")
    s.sample_many([req])
    assert "chain" in s._prefixes
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    grown = SampleRequest(prompt_ids + prompt_ids[:5], 1, SamplingParams(max_new_tokens=4, seed=2), prefix_key="x")
    s.sample_many([grown])
    assert "chain" not in s._prefixes and "x" in s._prefixes
