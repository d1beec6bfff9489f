"""Measure the base model's pass rate on problems (to pick demo problems: aim for 1-20%).

    .venv/bin/python scripts/base_pass_rate.py problems/demo_*.yaml --samples 64 [--max-new-tokens 256] \
        [--jsonl attempts.jsonl]

Samples N attempts per problem from the unchanged base model (temperature 1, the solve defaults),
verifies them with the problem's own verifier and prints pass rate, a 90% Wilson interval and the
most common failure statuses. The numbers recorded in each demo problem's `meta` come from this.
`--jsonl` appends every attempt (problem id, text, status, feedback) to a file, to read why they fail.
`--record` writes the result into each problem file's `meta` (base_pass_rate, base_pass,
measured_with), re-serialised with the importers' writer: use it on imported files (a hand-written
file would lose its comments). A later `sdpo import` keeps these keys.
"""

import argparse
import collections
import datetime
import json
import math
import os
import shlex
import time

import yaml

from sdpo_cli.attempt import attempt_batch
from sdpo_cli.importers import dump_problem
from sdpo_cli.model import configure_threads, encode_chat, load_model
from sdpo_cli.problem import load_problem
from sdpo_cli.sampling import SamplingParams
from sdpo_cli.sampling.hf import HFSampler


def wilson(c, n, z=1.645):
    p = c / n
    d = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, mid - half), min(1.0, mid + half)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("problems", nargs="+")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=384)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--jsonl", help="append every attempt's record (with problem id) to this file")
    ap.add_argument("--record", action="store_true", help="write the result into each problem file's meta")
    a = ap.parse_args()
    configure_threads()
    model, tok = load_model(a.model)
    sampler = HFSampler(model, tok)
    for path in a.problems:
        problem = load_problem(path)
        prompt = encode_chat(tok, problem.messages())
        passed, statuses, t0, done = 0, collections.Counter(), time.perf_counter(), 0
        while done < a.samples:
            n = min(a.batch_size, a.samples - done)
            params = SamplingParams(temperature=a.temperature, max_new_tokens=a.max_new_tokens, seed=a.seed + done)
            attempts, _, _ = attempt_batch(sampler, problem, prompt, n, params, step=0, first_number=done + 1)
            passed += sum(x.passed for x in attempts)
            statuses.update(x.verdict.status for x in attempts)
            if a.jsonl:
                with open(a.jsonl, "a") as f:
                    f.writelines(json.dumps({"problem": problem.id, **x.record()}) + "\n" for x in attempts)
            done += n
            print(f"  {path}: {passed}/{done} so far ({time.perf_counter() - t0:.0f}s)", flush=True)
        lo, hi = wilson(passed, done)
        print(f"{path}: {passed}/{done} = {passed / done:.1%} (90% CI {lo:.1%}-{hi:.1%}); "
              f"{dict(statuses.most_common())}; {time.perf_counter() - t0:.0f}s", flush=True)
        if a.record:
            record(path, a, passed, done, lo, hi)


def record(path: str, a, passed: int, n: int, lo: float, hi: float) -> None:
    """Write the measurement into the file's meta (atomically: the file is whole before and after)."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    cmd = ["scripts/base_pass_rate.py", path, "--samples", n, "--max-new-tokens", a.max_new_tokens,
           "--batch-size", a.batch_size]
    cmd += ["--model", a.model] if a.model != "smollm2-135m" else []
    cmd += ["--temperature", a.temperature] if a.temperature != 1.0 else []
    data.setdefault("meta", {}).update({
        "base_pass_rate": round(passed / n, 3),
        "base_pass": (f"{passed}/{n} (90% CI {lo:.1%}-{hi:.1%}); {a.model}, temperature {a.temperature:g}, "
                      f"{a.max_new_tokens} new tokens; {datetime.date.today()}"),
        "measured_with": ".venv/bin/python " + shlex.join(map(str, cmd)),
    })
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(dump_problem(data))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
