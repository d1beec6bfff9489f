"""Run hyperparameters: one dataclass, defaults from the paper's test-time column (SPEC §3.2, §4)
unless a comment says why we depart. Precedence: these defaults < `--config FILE.yaml` < flags.

Every field is a flag of `sdpo solve` (kebab-case: `ema_rate` -> `--ema-rate`) and a key of the
config file (either spelling). `resolve()` applies device-dependent defaults (None = "pick for this
machine") and `validate()` gathers every mistake into one ConfigError.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from .errors import ConfigError

TEACHERS = ("ema", "trust-region", "base")
BACKENDS = ("hf", "vllm", "scripted")
DTYPES = ("auto", "fp32", "bf16")


@dataclass
class SolveConfig:
    # --- model and backend -------------------------------------------------------------------
    model: str = "smollm2-135m"  # alias, local directory or Hugging Face id (cached locally)
    backend: str = "hf"  # sampler: hf (transformers, CPU/GPU), vllm (optional extra), scripted (tests)
    device: str | None = None  # None: cuda if available, else cpu
    # vLLM only: fraction of GPU memory for the engine (weights + KV cache); the trainer gets the rest.
    gpu_memory_utilization: float = 0.3

    # --- sampling and budget -------------------------------------------------------------------
    # Paper: 16 rollouts per step on GPU. On 2 CPU cores a step of 16 x 256 tokens takes minutes,
    # so the CPU default is 8: Fig. 19 (SPEC §3.2) finds 8 as good as 16 for early discoveries.
    batch_size: int | None = None  # attempts per step (G); None: 16 on CUDA, 8 on CPU
    budget: int = 64  # total attempts (generations) before giving up
    temperature: float = 1.0  # paper: T=1.0, top-p 1
    top_p: float = 1.0
    max_new_tokens: int | None = None  # None: 1024 on CUDA, 192 on CPU (paper: 8192 with Qwen3-8B; 2 CPU cores sample ~20-60 tokens/s)
    seed: int = 0

    # --- LoRA and optimiser (paper: full fine-tuning at lr 1e-6; LoRA needs ~10x, PEERS §C) -----
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lr: float = 1e-4  # measured: 1e-5 barely moves a rank-16 adapter of a 135M model in a few steps
    weight_decay: float = 0.01
    grad_clip: float = 1.0

    # --- SDPO loss (SPEC §1.3-1.7; TTT: top-K 20, reverse KL, IS clip 2, advantage clip 5) -------
    topk: int = 20
    alpha: float = 1.0  # 1 reverse KL, 0 forward KL, between: generalised JSD
    is_clip: float = 2.0
    adv_clip: float | None = 5.0

    # --- speed and memory of the update (results are the same up to float rounding) ----------------
    dtype: str = "auto"  # base weights: auto (bf16 where this GPU/CPU multiplies bf16 natively, else fp32), fp32, bf16
    micro_batch_tokens: int | None = None  # padded tokens per update forward; None: 384 on CPU (batching gains <5% there, memory grows), 4096 on CUDA (~30 GB of activations for an 8B model)
    grad_checkpointing: bool = False  # recompute activations in backward: less memory for long responses, ~1.3x slower

    # --- teacher (SPEC §1.5) --------------------------------------------------------------------
    teacher: str = "ema"  # ema | trust-region | base
    ema_rate: float = 0.01  # paper TTT
    trust_region_mix: float = 0.5  # trust-region: teacher logits = lerp(base, student, mix)

    def resolve(self, device: str) -> "SolveConfig":
        """Fill machine-dependent defaults (device: "cuda" or "cpu")."""
        gpu = device.startswith("cuda")
        out = SolveConfig(**asdict(self))
        out.device = device
        if out.batch_size is None:
            out.batch_size = 16 if gpu else 8
        if out.max_new_tokens is None:
            out.max_new_tokens = 1024 if gpu else 192
        if out.micro_batch_tokens is None:
            out.micro_batch_tokens = 4096 if gpu else 384
        return out

    def validate(self) -> "SolveConfig":
        errs = []
        pos = ("budget", "lora_rank", "topk")
        for name in pos:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                errs.append(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        for name in ("batch_size", "max_new_tokens", "micro_batch_tokens"):
            v = getattr(self, name)
            if v is not None and v < 1:
                errs.append(f"--{name.replace('_', '-')}: must be >= 1, got {v}")
        if not 0 <= self.alpha <= 1:
            errs.append(f"--alpha: must be in [0, 1] (1 = reverse KL), got {self.alpha}")
        if self.adv_clip is not None and self.alpha != 1:
            errs.append("--adv-clip: only defined for reverse KL (--alpha 1); pass --no-adv-clip or --alpha 1")
        if not 0 < self.temperature <= 10:
            errs.append(f"--temperature: must be in (0, 10], got {self.temperature}")
        if not 0 < self.gpu_memory_utilization < 1:
            errs.append(f"--gpu-memory-utilization: must be in (0, 1), got {self.gpu_memory_utilization}")
        if not 0 < self.top_p <= 1:
            errs.append(f"--top-p: must be in (0, 1], got {self.top_p}")
        if not 0 < self.ema_rate <= 1:
            errs.append(f"--ema-rate: must be in (0, 1], got {self.ema_rate}")
        if not 0 <= self.trust_region_mix <= 1:
            errs.append(f"--trust-region-mix: must be in [0, 1], got {self.trust_region_mix}")
        if self.teacher not in TEACHERS:
            errs.append(f"--teacher: {self.teacher!r} is not one of {', '.join(TEACHERS)}")
        if self.dtype not in DTYPES:
            errs.append(f"--dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.backend not in BACKENDS:
            errs.append(f"--backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.lr <= 0 or self.is_clip <= 0 or self.grad_clip <= 0:
            errs.append("--lr, --is-clip and --grad-clip must be > 0")
        if errs:
            raise ConfigError("; ".join(errs), lines=errs)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


FIELD_NAMES = {f.name for f in fields(SolveConfig)}


def load_config_file(path: Path) -> dict:
    """Keys of a YAML config file (kebab- or snake-case), checked against the known fields."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file (check --config)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    out, errs = {}, []
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key not in FIELD_NAMES:
            errs.append(f"{path}: {k}: unknown option (see `sdpo solve --help`)")
        out[key] = v
    if errs:
        raise ConfigError("; ".join(errs), lines=errs)
    return out


def build_config(file_values: dict, flag_values: dict) -> SolveConfig:
    """Defaults < config file < flags given on the command line (None = flag not given)."""
    merged = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    try:
        return SolveConfig(**merged)
    except TypeError as e:
        raise ConfigError(f"invalid option: {e}") from None
