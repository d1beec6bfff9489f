"""Verifier throughput, this checkout against an older one, interleaved in one run.

    .venv/bin/python bench/bench_verify.py [--old DIR] [--rounds 5] [--attempts 16] [--tests 20]

Workloads (each a batch of `attempts` replies arriving at once, all cores, as in a real SDPO step):
  stdio     attempts x tests stdin/stdout cases: one sandboxed process per test case, old and new.
  function  attempts x tests HumanEval-style `assert candidate(i) == ...` cases: the old verifier runs
            one sandboxed process per case; this one runs a judge and a candidate per attempt.
Each measurement is a fresh Python process that imports the checkout it measures (PYTHONPATH), warms
up with one reply, then times the batch. Rounds alternate the order (old, new / new, old) so load
changes on a shared machine hit both. Prints per workload and checkout min / median / max attempts/s
and the per-round ratio new / old (above 1: this checkout is faster). A round in which a correct reply
failed is reported and not counted (the old verifier shares one uid between all sandboxed programs
on the machine, so other processes' fork floods can fail its runs).

--old defaults to a git worktree of c419040 (the verifier before the judge/candidate split),
created under the system temp folder on first use: `git worktree add --detach DIR c419040`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "c419040"

CHILD = r"""
import json, os, sys, time
from sdpo_cli.problem import Problem
from sdpo_cli.verify import checkers, verify_many
from sdpo_cli.verify.sandbox import isolation
kind, attempts, n, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
os.environ["SDPO_VERIFY_WORKERS"] = str(workers)
if kind == "stdio":
    tests = [{"input": f"{i}\n", "output": f"{i * (i + 1) // 2}\n"} for i in range(n)]
    verifier = {"kind": "stdio", "tests": tests}
    reply = "```python\nn = int(input())\nprint(sum(range(n + 1)))\n```"
else:
    body = "".join(f"    assert candidate({i}) == {i * (i + 1) // 2}\n" for i in range(n))
    verifier = {"kind": "function", "name": "tri", "test_code": "def check(candidate):\n" + body}
    reply = "```python\ndef tri(n):\n    return sum(range(n + 1))\n```"
problem = Problem.model_validate({"id": "b", "title": "bench", "prompt": "q", "verifier": verifier})
verify_many(problem, [(reply, False)])  # warm-up
t = time.perf_counter()
vs = verify_many(problem, [(reply, False)] * attempts)
dt = time.perf_counter() - t
assert vs[0].n_total == n
print(json.dumps({"seconds": dt, "isolation": isolation(), "failed": sum(not v.passed for v in vs),
                  "why": sorted({v.feedback.splitlines()[1] if "\n" in v.feedback else v.status for v in vs if not v.passed})}))
"""


def old_checkout(path: str | None) -> Path:
    if path:
        return Path(path)
    d = Path(tempfile.gettempdir()) / f"sdpo-{OLD_COMMIT}"
    if not (d / "src" / "sdpo_cli").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(d), OLD_COMMIT], check=True)
    return d


def measure(src: Path, kind: str, attempts: int, tests: int, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(attempts), str(tests), str(workers)],
                         capture_output=True, text=True, env=env, timeout=1800, cwd=src)
    if out.returncode:
        raise SystemExit(f"{src}: {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(xs: list[float]) -> str:
    return f"min {min(xs):6.2f}  median {statistics.median(xs):6.2f}  max {max(xs):6.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", help=f"checkout to compare with (default: a worktree of {OLD_COMMIT})")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--attempts", type=int, default=16)
    ap.add_argument("--tests", type=int, default=20)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--kinds", default="stdio,function")
    a = ap.parse_args()
    checkouts = {"old": old_checkout(a.old), "new": ROOT}
    kinds = a.kinds.split(",")
    rate: dict = {(k, c): [] for k in kinds for c in checkouts}
    ratio: dict = {k: [] for k in kinds}
    mode = ""
    for r in range(a.rounds):
        for kind in kinds:
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            got, bad = {}, []
            for c in order:
                res = measure(checkouts[c], kind, a.attempts, a.tests, a.workers)
                got[c] = a.attempts / res["seconds"]
                mode = res["isolation"]
                if res["failed"]:  # a correct reply failed: the timing is not of a normal batch
                    bad.append(f"{c}: {res['failed']} of {a.attempts} correct replies failed {res['why']}")
            if bad:
                print(f"round {r + 1} {kind:8} not counted: " + "; ".join(bad), flush=True)
                continue
            for c in checkouts:
                rate[(kind, c)].append(got[c])
            ratio[kind].append(got["new"] / got["old"])
            print(f"round {r + 1} {kind:8} old {got['old']:6.2f}  new {got['new']:6.2f} attempts/s  "
                  f"new/old {ratio[kind][-1]:.2f}", flush=True)
    print(f"\nisolation: {mode}; {a.attempts} attempts x {a.tests} tests per batch, {a.workers} workers, "
          f"{a.rounds} rounds; old = {checkouts['old']}")
    for kind in kinds:
        if not ratio[kind]:
            print(f"{kind:8} no round counted")
            continue
        for c in checkouts:
            print(f"{kind:8} {c}: attempts/s {spread(rate[(kind, c)])}")
        print(f"{kind:8} new/old: {spread(ratio[kind])} ({len(ratio[kind])} rounds counted)")


if __name__ == "__main__":
    main()
