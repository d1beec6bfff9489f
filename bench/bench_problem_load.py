"""Problem-file load time: the strict loader against PyYAML's safe_load, on a problem file near the size cap.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_problem_load.py [--mb 8] [--rounds 5]

Writes two problem files of about --mb MB into a temporary folder: `function` (test arguments that are
lists of integers: about 0.75 million YAML scalars at 8 MB, the slow case) and `stdio` (a few hundred
long input strings). Each round loads each file, in turn, with:

  strict         load_problem (libyaml events -> yamldata.load -> pydantic), what sdpo uses
  strict-pure    the same with PyYAML's pure-Python parser (an install without libyaml)
  safe_load      yaml.safe_load + pydantic: the loader before the strict one
  CSafeLoader    yaml.load(Loader=CSafeLoader) + pydantic: libyaml, without the limits

Methods are interleaved within each round so drift on a shared machine hits them alike. Prints seconds
and the per-round ratio to `strict`, each as min / median / max over rounds. Then times the refusals
that used to hang or crash: a 50 MB file (refused by its size) and 100,000 nested `[` (refused by depth).
"""

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from sdpo_cli import yamldata
from sdpo_cli.errors import ProblemError
from sdpo_cli.problem import Problem, load_problem


def write_files(folder: Path, mb: float) -> dict[str, Path]:
    rng = random.Random(0)
    target = int(mb * (1 << 20) * 0.97)
    paths = {}
    # function: `- {args: [[50 ints], k], expected: [i, j]}`, about 650 bytes per test
    tests = []
    size = 0
    while size < target:
        line = (f"  - {{args: [[{', '.join(str(rng.randint(-10**9, 10**9)) for _ in range(50))}], "
                f"{rng.randint(0, 100)}], expected: [{rng.randint(0, 50)}, {rng.randint(0, 50)}]}}\n")
        size += len(line)
        tests.append(line)
    paths["function"] = folder / "function.yaml"
    paths["function"].write_text("id: big-function\ntitle: t\nprompt: q\nverifier:\n  kind: function\n  name: f\n"
                                 "  tests:\n" + "".join(tests[:-1]))
    # stdio: inputs of 100 lines x 100 numbers as literal block scalars
    tests, size = [], 0
    while size < target:
        body = "\n".join("      " + " ".join(str(rng.randint(0, 10**9)) for _ in range(100)) for _ in range(100))
        item = f"  - input: |\n{body}\n    output: '1'\n"
        size += len(item)
        tests.append(item)
    paths["stdio"] = folder / "stdio.yaml"
    paths["stdio"].write_text("id: big-stdio\ntitle: t\nprompt: q\nverifier:\n  kind: stdio\n  tests:\n" + "".join(tests[:-1]))
    return paths


def strict(path):
    return load_problem(path, max_bytes=64 << 20)


def strict_pure(path):
    saved, yamldata._LIBYAML = yamldata._LIBYAML, None
    try:
        return load_problem(path, max_bytes=64 << 20)
    finally:
        yamldata._LIBYAML = saved


def safe_load(path):
    return Problem.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def c_safe_loader(path):
    return Problem.model_validate(yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader))


METHODS = {"strict": strict, "strict-pure": strict_pure, "safe_load": safe_load, "CSafeLoader": c_safe_loader}


def timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def refusal_times(folder: Path) -> None:
    big = folder / "big50.yaml"
    with open(big, "w") as f:
        line = "# " + "x" * 97 + "\n"
        f.write(line * (50 * (1 << 20) // len(line)))
    deep = folder / "deep.yaml"
    deep.write_text("[" * 100_000)
    for name, path in (("50 MB file", big), ("100,000 nested [", deep)):
        t = time.perf_counter()
        try:
            load_problem(path)
            outcome = "loaded?!"
        except ProblemError as e:
            outcome = e.lines[0].split(": ", 1)[1][:70]
        print(f"refuse {name:18s} {time.perf_counter() - t:8.4f} s  {outcome}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    print(f"libyaml: {yamldata._LIBYAML is not None}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), a.mb)
        for kind, path in paths.items():
            n = len(strict(path).verifier.tests)
            print(f"{kind}: {path.stat().st_size / (1 << 20):.2f} MB, {n} tests")
        times = {(k, m): [] for k in paths for m in METHODS}
        for r in range(a.rounds):
            for kind, path in paths.items():
                for m, fn in METHODS.items():
                    times[kind, m].append(timed(fn, path))
            print(f"round {r + 1}/{a.rounds} done", flush=True)
        for kind in paths:
            for m in METHODS:
                ts = times[kind, m]
                ratios = [t / s for t, s in zip(ts, times[kind, "strict"])]  # same round: interleaved
                print(f"{kind:8s} {m:12s} s: min {min(ts):6.2f} median {statistics.median(ts):6.2f} max {max(ts):6.2f}"
                      f"   / strict: min {min(ratios):5.2f} median {statistics.median(ratios):5.2f} max {max(ratios):5.2f}")
        refusal_times(Path(tmp))


if __name__ == "__main__":
    main()
