"""Verifier throughput: attempts verified per second when 16 attempts x 20 stdio tests arrive at once.

    .venv/bin/python bench/bench_verify.py [--attempts 16] [--tests 20]

Runs the same batch with 1 worker and with all usable cores (SDPO_VERIFY_WORKERS), side by side in
one process, and prints attempts/s, test runs/s and the speed-up, plus the sandbox isolation mode.
"""

import argparse
import os
import time

from sdpo_cli.problem import Problem
from sdpo_cli.verify import checkers, verify_many
from sdpo_cli.verify.sandbox import isolation

SOLUTION = "```python\nn = int(input())\nprint(sum(range(n + 1)))\n```"


def run(problem, replies, workers):
    os.environ["SDPO_VERIFY_WORKERS"] = str(workers)
    checkers._POOL = None  # rebuild the pool with this many workers
    t = time.perf_counter()
    vs = verify_many(problem, replies)
    dt = time.perf_counter() - t
    assert all(v.passed for v in vs)
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attempts", type=int, default=16)
    ap.add_argument("--tests", type=int, default=20)
    a = ap.parse_args()
    tests = [{"input": f"{i}\n", "output": f"{i * (i + 1) // 2}\n"} for i in range(a.tests)]
    problem = Problem.model_validate({"id": "b", "title": "bench", "prompt": "q", "verifier": {"kind": "stdio", "tests": tests}})
    replies = [(SOLUTION, False)] * a.attempts
    cores = len(os.sched_getaffinity(0))
    run(problem, replies[:1], 1)  # warm-up
    one = run(problem, replies, 1)
    many = run(problem, replies, cores)
    n_runs = a.attempts * a.tests
    print(f"isolation: {isolation()}, batch: {a.attempts} attempts x {a.tests} tests = {n_runs} sandboxed runs")
    print(f"1 worker:  {one:6.2f} s  {a.attempts / one:5.2f} attempts/s  {n_runs / one:6.1f} runs/s")
    print(f"{cores} workers: {many:6.2f} s  {a.attempts / many:5.2f} attempts/s  {n_runs / many:6.1f} runs/s")
    print(f"speed-up with {cores} workers: {one / many:.2f}x")


if __name__ == "__main__":
    main()
