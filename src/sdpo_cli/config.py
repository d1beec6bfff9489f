"""Run hyperparameters: ONE declarative schema, validated once.

Every field of `SolveConfig` is at the same time
  * a flag of `sdpo solve` and `sdpo compare` (kebab-case: `ema_rate` -> `--ema-rate`; cli.py generates
    the options from this schema, so a knob is declared exactly once),
  * a key of a `--config FILE.yaml` (either spelling),
  * a key of the `config:` block a run directory saves, which `--resume` reads back through the same schema.

Precedence: these defaults < `--config FILE.yaml` < flags. `resolve_config()` merges them, checks every
value (type, range, finite, a device this torch can use) and fills the machine-dependent defaults, so the
rest of the program receives one frozen, complete `SolveConfig` and never validates again.

Defaults follow the paper's test-time column (Hübotter et al. 2026, Table 12 "TTT": 16 rollouts per step,
T = 1, top-K 20, reverse KL, IS clip 2, advantage clip 5, EMA teacher rate 0.01) except where a comment
says why we depart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

TEACHERS = ("ema", "trust-region", "base")
BACKENDS = ("hf", "vllm", "scripted")
DTYPES = ("auto", "fp32", "bf16")
MAX_SEED = 2**31 - 1  # batch seeds are seed * 1_000_003 + offset + step: must stay inside int64

# Knobs whose value None means "pick for this machine" (filled by resolve_config).
AUTO = ("device", "batch_size", "max_new_tokens")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class SolveConfig(BaseModel):
    """Every knob of a run. Frozen: change a copy with `cfg.replace(field=value)` (validated)."""

    # Strict types: a config file's `lora_rank: "4"` or `budget: 1.5` is an error, not a guess.
    # No NaN or infinity anywhere (`--lr nan` used to train on NaN losses without a word).
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid", frozen=True)

    # --- model and backend ---------------------------------------------------------------------------
    model: str = Field("smollm2-135m", min_length=1, description=(
        "Model: alias (smollm2-135m), local directory or Hugging Face id already in the local cache."))
    backend: Literal["hf", "vllm", "scripted"] = Field("hf", description=(
        "Sampling backend: hf (transformers), vllm (optional extra) or scripted (replays SDPO_SCRIPT)."))
    device: str | None = Field(None, description="cpu, cuda or cuda:N. [default: cuda if available, else cpu]")
    gpu_memory_utilization: float = Field(0.3, gt=0, lt=1, description=(
        "vLLM on GPU: fraction of GPU memory for the engine; the trainer uses the rest."))
    # "auto" is decided per device by detection and measurement (model.py): bf16 where the device has a
    # fast bf16 path (CUDA; CPUs with AVX512-BF16 / AMX), fp32 otherwise. LoRA weights, optimizer, EMA
    # and the loss math stay fp32 in every case.
    dtype: Literal["auto", "fp32", "bf16"] = Field("auto", description=(
        "Compute dtype of the frozen base model's matmuls: auto, fp32 or bf16 (LoRA, optimizer and loss "
        "stay fp32)."))

    # --- sampling and budget ---------------------------------------------------------------------------
    # Paper: 16 rollouts per step. On 2 CPU cores a step of 16 long attempts takes minutes, so the CPU
    # default is 8: the paper's batch-size ablation (Fig. 19 left) finds 8 as good for early discoveries.
    batch_size: int | None = Field(None, ge=1, le=4096, description=(
        "Attempts per step G (SDPO) and per batch (best-of-k). [default: 8 on CPU, 16 on CUDA]"))
    budget: int = Field(64, ge=1, le=10_000_000, description="Attempt budget (generations) per problem and run.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature (paper: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling top-p (paper: 1.0).")
    # Paper: up to 8192 tokens with Qwen3-8B. 2 CPU cores sample ~20-60 tokens/s with the 135M default
    # model, and the demo problems' base pass rates were measured at 192.
    max_new_tokens: int | None = Field(None, ge=1, le=1_000_000, description=(
        "Generation length limit in tokens. [default: 192 on CPU, 1024 on CUDA]"))
    seed: int = Field(0, ge=0, le=MAX_SEED, description=(
        "Random seed: same seed, same machine, same attempts (compare uses seed, seed+1, ...)."))

    # --- LoRA and optimiser ----------------------------------------------------------------------------
    # The paper fine-tunes all weights at lr 1e-6. We train a LoRA adapter (the EMA teacher is a second
    # adapter on the same base, so an 8B model fits one GPU); LoRA needs a ~10x larger lr (TRL's "LoRA
    # without regret" notes), and 1e-5 barely moved a rank-16 adapter of the 135M model in a few steps
    # (bench/bench_lr.py), so 1e-4.
    lora_rank: int = Field(16, ge=1, le=4096, description="LoRA rank (all linear layers but the LM head).")
    lora_alpha: float = Field(32.0, gt=0, le=1e6, description="LoRA alpha; the update is scaled by alpha / rank.")
    lr: float = Field(1e-4, gt=0, le=1.0, description="AdamW learning rate (constant).")
    weight_decay: float = Field(0.01, ge=0, le=1.0, description="AdamW weight decay (paper: 0.01).")
    grad_clip: float = Field(1.0, gt=0, le=1e6, description="Gradient-norm clip (paper: 1.0).")
    # Teacher and student forwards run over micro-batches of several sequences, sorted by length, with at
    # most this many (padded) tokens each; None picks a budget for the device. The loss is the same
    # per-sequence token mean as micro-batch 1.
    micro_batch_tokens: int | None = Field(None, ge=1, le=100_000_000, description=(
        "Token budget of one forward micro-batch in the update (padded tokens). [default: picked per device]"))
    grad_checkpointing: bool = Field(False, description=(
        "Recompute activations in the backward pass (less memory for long responses, ~30% more compute)."))

    # --- SDPO loss -------------------------------------------------------------------------------------
    topk: int = Field(20, ge=1, le=1_000_000, description="Distillation support: the student's top-K tokens + a tail bucket.")
    alpha: float = Field(1.0, ge=0, le=1, description="Divergence: 1 reverse KL, 0 forward KL, in between the generalised JSD.")
    is_clip: float = Field(2.0, gt=0, le=1e6, description="Upper clip of the importance weights (paper: 2).")
    # The paper's "clip advantages 5.0" (TTT only; not in the released code): our reading is an upper clip
    # of log q - log pi per support bucket inside the exact surrogate of the reverse KL (loss.py).
    adv_clip: float | None = Field(5.0, gt=0, le=1e6, description=(
        "Upper clip of the per-token advantage log q - log p (reverse KL only); --no-adv-clip turns it off."))

    # --- teacher ---------------------------------------------------------------------------------------
    teacher: Literal["ema", "trust-region", "base"] = Field("ema", description=(
        "Teacher regularisation: ema (second adapter), trust-region (logit mix with the base) or base (frozen)."))
    ema_rate: float = Field(0.01, gt=0, le=1, description="EMA teacher rate (paper, test time: 0.01).")
    # The official code builds its trust-region teacher with mix_coef = teacher_update_rate
    # (verl/workers/fsdp_workers.py, TrustRegionTeacher(..., mix_coef=teacher_update_rate)), i.e. 0.01
    # at test time. None follows that rule: the mix is --ema-rate.
    trust_region_mix: float | None = Field(None, ge=0, le=1, description=(
        "Trust-region teacher: weight of the student logits. [default: --ema-rate, as the official code]"))

    # ---- validators ---------------------------------------------------------------------------------------
    @field_validator("*", mode="before")
    @classmethod
    def _yaml_floats(cls, v: Any, info) -> Any:
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept exactly such numeric strings for float knobs.
        if isinstance(v, str) and info.field_name in _FLOAT_FIELDS and _NUMBER.fullmatch(v.strip()):
            return float(v)
        if isinstance(v, int) and not isinstance(v, bool) and info.field_name in _FLOAT_FIELDS:
            return float(v)  # `lr: 1` in YAML is an int; a float knob takes it
        return v

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"cpu|cuda(:\d{1,3})?", v):
            raise ValueError(f"{v!r} is not a device: use cpu, cuda or cuda:N")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SolveConfig":
        if self.adv_clip is not None and self.alpha != 1:
            raise ValueError("--adv-clip is defined for the reverse KL only (--alpha 1); pass --no-adv-clip or --alpha 1")
        return self

    # ---- helpers ----------------------------------------------------------------------------------------
    @property
    def mix(self) -> float:
        """The trust-region mix actually used (defaults to the EMA rate, as the official code)."""
        return self.ema_rate if self.trust_region_mix is None else self.trust_region_mix

    @property
    def resolved(self) -> bool:
        return all(getattr(self, k) is not None for k in AUTO)

    def replace(self, **changes: Any) -> "SolveConfig":
        """A validated copy with `changes` applied."""
        return make_config({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        return self.model_dump()


_FLOAT_FIELDS = {n for n, f in SolveConfig.model_fields.items() if "float" in str(f.annotation)}
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
FIELD_NAMES = tuple(SolveConfig.model_fields)

# Flags that are not a plain `--field VALUE` (cli.py adds them): `--no-adv-clip` sets adv_clip to None.
OFF_FLAGS = {"adv_clip": "--no-adv-clip"}


def _where(loc: tuple) -> str:
    return _flag(str(loc[0])) if loc else "(config)"


def make_config(values: dict, *, source: str | None = None) -> SolveConfig:
    """Validate `values` into a SolveConfig; every mistake becomes one line of a ConfigError.

    Args:
        values: field -> value (snake_case keys).
        source: what the values came from, for the messages (a file path); None for flags.
    """
    try:
        return SolveConfig.model_validate(values)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = _where(err["loc"])
            if source:
                where = f"{source}: {str(err['loc'][0]) if err['loc'] else '(top level)'}"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown option (see `sdpo solve --help`)"
            elif "input" in err and err["type"] not in ("value_error",):
                msg += f", got {err['input']!r}"[:200]
            lines.append(f"{where}: {msg}")
        raise ConfigError("; ".join(lines), lines=lines) from None


MAX_CONFIG_BYTES = 1 << 20


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file (check --config)")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config file is a few lines of option: value")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0][:120]}); fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (save it as UTF-8)") from None


def load_config_file(path: Path) -> dict:
    """Keys of a YAML config file (kebab- or snake-case), as given; validated by `resolve_config`."""
    data = _read_yaml(Path(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value (see `sdpo solve --help`)")
    out, errs = {}, []
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key not in FIELD_NAMES:
            errs.append(f"{path}: {k}: unknown option (see `sdpo solve --help`)")
        out[key] = v
    if errs:
        raise ConfigError("; ".join(errs), lines=errs)
    make_config(out, source=str(path))  # report the file's own mistakes against the file
    return out


def check_device(device: str) -> None:
    """Raise ConfigError unless this torch can use `device` (imports torch)."""
    import torch

    if device == "cpu":
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this torch ({torch.__version__}) cannot use CUDA "
                          f"(no GPU or a CPU-only build); use --device cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")


def resolve_config(file_values: dict | None = None, flag_values: dict | None = None) -> SolveConfig:
    """Defaults < config file < flags, validated, with the machine-dependent defaults filled in.

    Imports torch (to check the device); call it before any side effect and before loading a model.
    """
    merged = {**(file_values or {}), **{k: v for k, v in (flag_values or {}).items() if v is not None}}
    cfg = make_config(merged)
    return fill_auto(cfg)


def fill_auto(cfg: SolveConfig) -> SolveConfig:
    """Fill None = "pick for this machine" knobs and check the device (imports torch)."""
    if cfg.resolved:
        check_device(cfg.device)
        return cfg
    import torch

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    gpu = device.startswith("cuda")
    return cfg.replace(device=device,
                       batch_size=cfg.batch_size or (16 if gpu else 8),
                       max_new_tokens=cfg.max_new_tokens or (1024 if gpu else 192))
