"""Run hyperparameters: ONE declarative table of knobs, validated once.

Every entry of `KNOBS` is at the same time
  * a flag of `sdpo solve` and `sdpo compare` (kebab-case: `ema_rate` -> `--ema-rate`; cli.py generates
    the options from this table, so a knob is declared exactly once),
  * a key of a `--config FILE.yaml` (either spelling),
  * a field of `SolveConfig`, the frozen pydantic model every run gets (and saves in its run directory,
    which `--resume` reads back through the same model).

Precedence: these defaults < `--config FILE.yaml` < flags. `resolve_config()` merges them, checks every
value (type, range, finite, a device this torch can use) and fills the machine-dependent defaults, so the
rest of the program receives one frozen, complete SolveConfig and never validates again.

The table is plain Python and `SolveConfig` is built from it on first use: `sdpo --help` lists every knob
without importing pydantic (measured by bench/bench_cli_help.py).

Defaults follow the paper's test-time column (Hübotter et al. 2026, Table 12 "TTT": 16 rollouts per step,
T = 1, top-K 20, reverse KL, IS clip 2, advantage clip 5, EMA teacher rate 0.01) except where a comment
says why we depart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

MAX_SEED = 2**31 - 1  # batch seeds are offset + seed * 1_000_003 + step: they must stay inside int64


@dataclass(frozen=True)
class Knob:
    """One knob: its type (bool, int, float or str), default and help, and the values it may take.

    `auto`: None is allowed and means "pick for this machine" (resolve_config fills it in).
    `nullable`: None is a real setting (e.g. --no-adv-clip turns the advantage clip off).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    auto: bool = False
    nullable: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


KNOBS: tuple[Knob, ...] = (
    # --- model and backend ------------------------------------------------------------------------------
    Knob("model", str, "smollm2-135m",
         "Model: alias (smollm2-135m), local directory or Hugging Face id already in the local cache."),
    Knob("backend", str, "hf", "Sampling backend: hf (transformers), vllm (optional extra) or scripted "
         "(replays SDPO_SCRIPT).", choices=("hf", "vllm", "scripted")),
    Knob("device", str, None, "cpu, cuda or cuda:N. [default: cuda if available, else cpu]", auto=True),
    Knob("gpu_memory_utilization", float, 0.3,
         "vLLM on GPU: fraction of GPU memory for the engine; the trainer uses the rest.", gt=0, lt=1),
    # "auto" is decided per device by detection and measurement (model.py): bf16 where the device has a fast
    # bf16 path, fp32 otherwise. LoRA weights, optimizer state, EMA and the loss math stay fp32 in every case.
    Knob("dtype", str, "auto", "Compute dtype of the frozen base model's matmuls: auto, fp32 or bf16 (LoRA, "
         "optimizer and loss stay fp32).", choices=("auto", "fp32", "bf16")),

    # --- sampling and budget ----------------------------------------------------------------------------
    # Paper: 16 rollouts per step. On 2 CPU cores a step of 16 long attempts takes minutes, so the CPU default
    # is 8: the paper's batch-size ablation (Fig. 19 left) finds 8 as good for early discoveries.
    Knob("batch_size", int, None, "Attempts per step G (SDPO) and per batch (best-of-k). "
         "[default: 8 on CPU, 16 on CUDA]", ge=1, le=4096, auto=True),
    Knob("budget", int, 64, "Attempt budget (generations) per problem and run.", ge=1, le=10_000_000),
    Knob("temperature", float, 1.0, "Sampling temperature (paper: 1.0).", gt=0, le=10),
    Knob("top_p", float, 1.0, "Nucleus sampling top-p (paper: 1.0).", gt=0, le=1),
    # Paper: up to 8192 tokens with Qwen3-8B. 2 CPU cores sample ~20-60 tokens/s with the 135M default model,
    # and the demo problems' base pass rates were measured at 192.
    Knob("max_new_tokens", int, None, "Generation length limit in tokens. [default: 192 on CPU, 1024 on CUDA]",
         ge=1, le=1_000_000, auto=True),
    Knob("seed", int, 0, "Random seed: same seed, same machine, same attempts (compare uses seed, seed+1, ...).",
         ge=0, le=MAX_SEED),
    # Batching across requests gives every request what it would get alone (sampling.hf): exactly in fp32,
    # up to bf16 rounding in bf16, so this knob changes speed and memory, not the distribution.
    Knob("max_batch", int, None, "Most sequences sampled in one generate call where a plan can batch more "
         "(multi-turn chains, several best-of-k batches); the same samples as unbatched in fp32, up to "
         "rounding in bf16. "
         "[default: 64 on CUDA, 16 on CPU]", ge=1, le=100_000, auto=True),

    # --- LoRA and optimiser -----------------------------------------------------------------------------
    # The paper fine-tunes all weights at lr 1e-6. We train a LoRA adapter (the EMA teacher is a second adapter
    # on the same base, so an 8B model fits one GPU); LoRA needs a ~10x larger lr (TRL's "LoRA without regret"
    # notes), and 1e-5 barely moved a rank-16 adapter of the 135M model in a few steps (bench/bench_lr.py).
    Knob("lora_rank", int, 16, "LoRA rank (all linear layers but the LM head).", ge=1, le=4096),
    Knob("lora_alpha", float, 32.0, "LoRA alpha; the update is scaled by alpha / rank.", gt=0, le=1e6),
    Knob("lr", float, 1e-4, "AdamW learning rate (constant).", gt=0, le=1.0),
    Knob("weight_decay", float, 0.01, "AdamW weight decay (paper: 0.01).", ge=0, le=1.0),
    Knob("grad_clip", float, 1.0, "Gradient-norm clip (paper: 1.0).", gt=0, le=1e6),
    # The update's forwards run over micro-batches of several sequences, sorted by length, with at most this
    # many (padded) tokens each; the loss stays the per-sequence token mean of micro-batch 1 (update.py).
    Knob("micro_batch_tokens", int, None, "Token budget of one forward micro-batch in the update (padded "
         "tokens). [default: 384 on CPU, 4096 on CUDA]", ge=1, le=100_000_000, auto=True),
    Knob("grad_checkpointing", bool, False, "Recompute activations in the backward pass (less memory for long "
         "responses, more compute)."),

    # --- SDPO loss --------------------------------------------------------------------------------------
    Knob("topk", int, 20, "Distillation support: the student's top-K tokens + a tail bucket.", ge=1, le=1_000_000),
    Knob("alpha", float, 1.0, "Divergence: 1 reverse KL, 0 forward KL, in between the generalised JSD.", ge=0, le=1),
    Knob("is_clip", float, 2.0, "Upper clip of the importance weights (paper: 2).", gt=0, le=1e6),
    # The paper's "clip advantages 5.0" (TTT only; not in the released code): our reading is an upper clip of
    # log q - log pi per support bucket inside the exact surrogate of the reverse KL (loss.py).
    Knob("adv_clip", float, 5.0, "Upper clip of the per-token advantage log q - log p (reverse KL only); "
         "--no-adv-clip turns it off.", gt=0, le=1e6, nullable=True),

    # --- teacher ----------------------------------------------------------------------------------------
    Knob("teacher", str, "ema", "Teacher regularisation: ema (second adapter), trust-region (logit mix with "
         "the base) or base (frozen).", choices=("ema", "trust-region", "base")),
    Knob("ema_rate", float, 0.01, "EMA teacher rate (paper, test time: 0.01).", gt=0, le=1),
    # The official code builds its trust-region teacher with mix_coef = teacher_update_rate
    # (verl/workers/fsdp_workers.py, TrustRegionTeacher(..., mix_coef=teacher_update_rate)), i.e. 0.01 at test
    # time. Unset, the mix follows that rule: it is --ema-rate.
    Knob("trust_region_mix", float, None, "Trust-region teacher: weight of the student logits. "
         "[default: --ema-rate, as the official code]", ge=0, le=1, nullable=True),
)

KNOB = {k.name: k for k in KNOBS}
FIELD_NAMES = tuple(KNOB)
AUTO = tuple(k.name for k in KNOBS if k.auto)  # None = "pick for this machine"
OFF_FLAGS = {"adv_clip": "--no-adv-clip"}  # flags that set a nullable knob to None (cli.py adds them)
# Knobs that decide where and how fast a run computes, not what: a resumed comparison may change them.
EXECUTION_KNOBS = ("device", "max_batch", "micro_batch_tokens", "grad_checkpointing")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


# --------------------------------------------------------------------------------------------------
# The pydantic model, built from KNOBS on first use


def _build_model():
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

    float_fields = {k.name for k in KNOBS if k.type is float}

    class _Config(BaseModel):
        """Every knob of a run (fields: config.KNOBS). Frozen: change a copy with `cfg.replace(...)`."""

        # Strict types: a config file's `lora_rank: "4"` or `budget: 1.5` is an error, not a guess. No NaN or
        # infinity anywhere (`--lr nan` used to train on NaN losses without a word).
        model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid", frozen=True)

        @field_validator("*", mode="before")
        @classmethod
        def _yaml_numbers(cls, v: Any, info) -> Any:
            if info.field_name in float_fields:
                # YAML 1.1 reads `1e-4` (no dot) as a string and `lr: 1` as an int: a float knob takes both.
                if isinstance(v, str) and _NUMBER.fullmatch(v.strip()):
                    return float(v)
                if isinstance(v, int) and not isinstance(v, bool):
                    return float(v)
            return v

        @field_validator("device", check_fields=False)
        @classmethod
        def _device_name(cls, v: str | None) -> str | None:
            if v is not None and not re.fullmatch(r"cpu|cuda(:\d{1,3})?", v):
                raise ValueError(f"{v!r} is not a device: use cpu, cuda or cuda:N")
            return v

        @model_validator(mode="after")
        def _consistent(self):
            if self.adv_clip is not None and self.alpha != 1:
                raise ValueError("--adv-clip is defined for the reverse KL only (--alpha 1); pass --no-adv-clip "
                                 "or --alpha 1")
            return self

        @property
        def mix(self) -> float:
            """The trust-region mix actually used (the EMA rate unless set, as the official code)."""
            return self.ema_rate if self.trust_region_mix is None else self.trust_region_mix

        @property
        def resolved(self) -> bool:
            return all(getattr(self, k) is not None for k in AUTO)

        def replace(self, **changes: Any):
            """A validated copy with `changes` applied."""
            return make_config({**self.to_dict(), **changes})

        def to_dict(self) -> dict:
            return self.model_dump()

    fields = {}
    for k in KNOBS:
        typ = Literal[k.choices] if k.choices else k.type
        if k.auto or k.nullable:
            typ = typ | None
        bounds = {b: getattr(k, b) for b in ("ge", "gt", "le", "lt") if getattr(k, b) is not None}
        if k.type is str and not k.choices:
            bounds["min_length"] = 1
        fields[k.name] = (typ, Field(k.default, description=k.help, **bounds))
    return create_model("SolveConfig", __base__=_Config, **fields)


_MODEL = None


def __getattr__(name: str):
    """`config.SolveConfig`: the pydantic model of KNOBS, built on first use."""
    global _MODEL
    if name == "SolveConfig":
        if _MODEL is None:
            _MODEL = _build_model()
        return _MODEL
    raise AttributeError(name)


def make_config(values: dict, *, source: str | None = None):
    """Validate `values` (field -> value) into a SolveConfig; every mistake becomes one line of a ConfigError.

    Args:
        values: snake_case knob names -> values.
        source: what the values came from, for the messages (a file path); None for flags.
    """
    from pydantic import ValidationError

    model = __getattr__("SolveConfig")
    try:
        return model.model_validate(values)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = str(err["loc"][0]) if err["loc"] else ""
            where = f"{source}: {loc or '(top level)'}" if source else (KNOB[loc].flag if loc in KNOB else loc)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown option (see `sdpo solve --help`)"
            elif "input" in err and err["type"] != "value_error":
                msg += f", got {err['input']!r}"[:200]
            lines.append(f"{where}: {msg}" if where else msg)
        raise ConfigError("; ".join(lines), lines=lines) from None


# --------------------------------------------------------------------------------------------------
# Config files, devices, resolving

MAX_CONFIG_BYTES = 1 << 20


def _read_yaml(path: Path) -> Any:
    """A config file as plain data, read like problem files (yamldata: no duplicate keys, dates or tags)."""
    from . import yamldata

    if not path.is_file():
        raise ConfigError(f"{path}: no such config file (check --config)")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config file is a few lines of option: value")
    try:
        return yamldata.load(path.read_text(encoding="utf-8"))
    except yamldata.YamlDataError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (save it as UTF-8)") from None


def load_config_file(path: Path) -> dict:
    """Keys of a YAML config file (kebab- or snake-case), checked against the schema (ConfigError)."""
    data = _read_yaml(Path(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value (see `sdpo solve --help`)")
    out, errs = {}, []
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key not in KNOB:
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


def resolve_config(file_values: dict | None = None, flag_values: dict | None = None):
    """Defaults < config file < flags (None = not given), validated, machine-dependent defaults filled in.

    Imports torch (to check the device): call it before any side effect and before loading a model.
    """
    merged = {**(file_values or {}), **{k: v for k, v in (flag_values or {}).items() if v is not None}}
    return fill_auto(make_config(merged))


def fill_auto(cfg):
    """Fill the None = "pick for this machine" knobs and check the device (imports torch)."""
    if cfg.resolved:
        check_device(cfg.device)
        return cfg
    import torch

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    gpu = device.startswith("cuda")
    return cfg.replace(device=device,
                       batch_size=cfg.batch_size or (16 if gpu else 8),
                       max_new_tokens=cfg.max_new_tokens or (1024 if gpu else 192),
                       max_batch=cfg.max_batch or (64 if gpu else 16),
                       micro_batch_tokens=cfg.micro_batch_tokens or default_micro_batch_tokens(device))


def default_micro_batch_tokens(device: str) -> int:
    """Padded tokens per forward micro-batch of the update when --micro-batch-tokens is not given.

    CPU 384, about one sequence of the CPU defaults: batching more gained < 5% of CPU time there and
    grew the update's peak memory by ~0.7 GB per extra sequence (bench/bench_update.py, README).
    CUDA 4096: large enough to keep a GPU's matmuls efficient, small enough for an 8B model's
    activations (~7 MB per token with LoRA on every linear layer, so ~30 GB) beside its weights.
    """
    return 4096 if device.startswith("cuda") else 384
