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
