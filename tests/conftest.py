"""Shared pytest fixtures: a tiny random causal LM and a real tokenizer, built in-process.

Nothing here downloads or reads the Hugging Face hub. Tiers:

    .venv/bin/pytest                    fast tier (default: not slow, not vllm, not gpu)
    .venv/bin/pytest -m slow            real default model (SmolLM2-135M) and multi-second runs
    .venv/bin/pytest -m gpu             CUDA-only checks (skipped without a GPU)

Fixtures:
    tiny_tokenizer    byte-level BPE (~300 tokens) with a ChatML chat template; EOS = pad = <|im_end|>
                      like SmolLM2. Any text encodes (byte fallback), so tests can use real prompts.
    tiny_model        (model, tokenizer): a 2-layer random Llama, fp32, CPU, eval mode. Session-scoped
                      and shared: treat it as read-only. Anything that attaches LoRA (peft injects
                      layers in place), trains or edits weights must use `fresh_tiny_model`.
    fresh_tiny_model  (model, tokenizer): a private deep copy of the same weights, per test.
"""

from __future__ import annotations

import copy

import pytest
import torch

from sdpo_cli.model import configure_threads

# Respect OMP_NUM_THREADS (1 on shared CI boxes) before any torch work; see model.configure_threads.
configure_threads()

TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, like SmolLM2 / Qwen. `enable_thinking` is accepted and ignored, as in templates without it.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_TINY_CORPUS = [
    "What is 2+3? The answer is 5.",
    "def solve(n):\n    return n * (n + 1) // 2\n",
    "Read the input, print the output. Correctly solve the original question.",
    "The following is feedback from your unsuccessful earlier attempt:",
    "for i in range(10):\n    print(i)\n",
    "import sys\ndata = sys.stdin.read().split()\n",
] * 4


def build_tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer trained on a few strings, wrapped for transformers.

    Returns:
        PreTrainedTokenizerFast with bos <|im_start|>, eos = pad = <|im_end|>, ChatML template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes
        show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=TINY_CHAT_TEMPLATE,
    )


def build_tiny_model(tokenizer, *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2):
    """A random-initialised LlamaForCausalLM sized for the tokenizer (fp32, CPU, eval mode).

    Untied LM head, so tests may edit the output layer without touching the embeddings.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    """(model, tokenizer), shared by the whole session: do not mutate (see module docstring)."""
    return build_tiny_model(tiny_tokenizer), tiny_tokenizer


@pytest.fixture
def fresh_tiny_model(tiny_model):
    """(model, tokenizer) with a private copy of the tiny model's weights."""
    model, tokenizer = tiny_model
    return copy.deepcopy(model), tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tmp_path_factory):
    """The tiny model + tokenizer saved as a local model directory (for `--model DIR` in CLI tests)."""
    model, tokenizer = tiny_model
    d = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def run_cli(args: list, env: dict | None = None) -> tuple[int, list[str]]:
    """The console-script entry point (`cli.main`, with its error mapping) in-process, for speed:
    (exit code, the non-empty lines of stdout + stderr)."""
    import sys

    from click.testing import CliRunner

    from sdpo_cli.cli import main

    argv = sys.argv
    with CliRunner().isolation(env={"SDPO_DEBUG": None, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}) as (_, _, out):
        sys.argv = ["sdpo", *map(str, args)]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            sys.argv = argv
            sys.stdout.flush()
            sys.stderr.flush()
    return code, [ln for ln in out.getvalue().decode("utf-8", "replace").splitlines() if ln.strip()]


def stopped_sdpo_run(root, problem_file, model_tok, model_dir, script_file, *, steps: int = 2):
    """A real SDPO run (tiny model, scripted replies from `script_file`, budget 8, batch 2) stopped after
    `steps` committed steps, as Ctrl-C leaves it: resumable. Returns its directory."""
    import os

    from sdpo_cli.config import make_config
    from sdpo_cli.problem import load_problem
    from sdpo_cli.runs import RunDir
    from sdpo_cli.session import Session
    from sdpo_cli.trainer import sdpo

    os.environ["SDPO_SCRIPT"] = str(script_file)
    cfg = make_config(dict(model=str(model_dir), backend="scripted", device="cpu", budget=8, batch_size=2,
                           max_new_tokens=12, lora_rank=2, micro_batch_tokens=4096, max_batch=16))
    problem = load_problem(problem_file)
    run = RunDir.create(root, problem, "sdpo", 0, cfg.to_dict())
    events = sdpo(problem, cfg, Session(copy.deepcopy(model_tok[0]), model_tok[1], backend="scripted"), run)
    done = 0
    for ev in events:
        done += type(ev).__name__ == "Step"
        if done == steps:
            break
    events.close()
    assert run.summary()["status"] == "interrupted" and run.checkpoint()["step"] == steps - 1
    return run.path


def tree_digest(path) -> str:
    """SHA-256 of a folder's names and file contents: equal digests = nothing was written or changed."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def multi_turn_alone_and_batched(problem, session, root, cfg, *, seeds=(0, 1, 2), max_batch=None, **kw):
    """Run the multi-turn chains of `seeds` one at a time, then as one batch per turn.

    cfg(seed, **overrides) builds each chain's config; `max_batch` caps the batched calls; `kw` go to
    both paths (e.g. window_tokens). Returns (alone RunDirs, batched RunDirs, the batched path's events).
    """
    from sdpo_cli.baselines import multi_turn, multi_turn_chains
    from sdpo_cli.runs import RunDir

    alone = []
    for seed in seeds:
        alone.append(RunDir.create(root / "alone", problem, "multi-turn", seed, cfg(seed).to_dict()))
        list(multi_turn(problem, cfg(seed), session, alone[-1], **kw))
    batched = [RunDir.create(root / "batched", problem, "multi-turn", s, cfg(s).to_dict()) for s in seeds]
    extra = {} if max_batch is None else {"max_batch": max_batch}
    chains = [(problem, cfg(s, **extra), run, False) for s, run in zip(seeds, batched)]
    return alone, batched, list(multi_turn_chains(chains, session, **kw))
