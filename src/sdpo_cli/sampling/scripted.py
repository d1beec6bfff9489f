"""A scripted sampler: replays fixed responses, for tests and dry runs of the whole pipeline.

    SDPO_SCRIPT=responses.json sdpo solve p.yaml --backend scripted --model ./tiny-model

The script is a JSON list of response texts; the k-th attempt of a run (1-based, counted across
steps, like the budget) gets script[(k - 1) % len(script)], so a test knows exactly which attempt
passes. Token ids come from the real tokenizer (EOS appended), log-probs are 0 (unknown). The SDPO
update still runs on the real model, so everything but the sampling is exercised for real.
SDPO_SCRIPT_DELAY_S=SECONDS makes every sampling call take that long, like a slow model (tests of
scheduling and interruption use it so that a job is still running when they act on it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..errors import ConfigError
from . import Completion, SamplingParams


class ScriptedSampler:
    name = "scripted"
    rollout_correction = False
    batch_key = None  # replies follow this run's own attempt count: never batched with another run

    def __init__(self, tokenizer, responses: list[str] | None = None, script: str | None = None,
                 attempts_done: int = 0):
        if responses is None:
            path = script or os.environ.get("SDPO_SCRIPT")
            if not path or not Path(path).is_file():
                raise ConfigError("--backend scripted needs SDPO_SCRIPT=FILE (a JSON list of response texts)")
            responses = json.loads(Path(path).read_text())
        if not responses:
            raise ConfigError("the scripted sampler needs at least one response")
        self.responses = list(responses)
        self.tokenizer = tokenizer
        self.calls = attempts_done  # attempts handed out so far (a resumed run continues the script)
        self.delay_s = float(os.environ.get("SDPO_SCRIPT_DELAY_S") or 0)

    def after_update(self, model, directory) -> dict:
        return {}

    def sample_many(self, requests) -> list[list[Completion]]:
        return [self.sample(r.prompt_ids, r.n, r.params) for r in requests]

    def sample(self, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Completion]:
        time.sleep(self.delay_s)
        out = []
        for _ in range(n):
            text = self.responses[self.calls % len(self.responses)]
            self.calls += 1
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: params.max_new_tokens]
            truncated = len(ids) >= params.max_new_tokens
            if not truncated and self.tokenizer.eos_token_id is not None:
                ids = ids + [self.tokenizer.eos_token_id]
            out.append(Completion(text=text, token_ids=ids, logprobs=[0.0] * len(ids), truncated=truncated))
        return out
