"""What report.html costs on a big comparison: seconds of `sdpo report` with and without it, and its size.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_report_html.py [--problems 4] [--seeds 5] [--budget 256]
        [--batch 16] [--reply-chars 3000] [--repeats 3]

Writes a synthetic comparison with the real RunDir (no model): per problem, SDPO and multi-turn
runs per seed and one best-of-k run with `budget` samples; every attempt fails (the worst case for
the page: no run stops early), each reply `reply-chars` characters long (3000 ~ 1k tokens). Then
times report_dir with html=True and html=False, interleaved, `repeats` times each, and prints
min / median / max, the extra time per run, and the size of report.html (total and per run).
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from sdpo_cli.problem import Problem
from sdpo_cli.report import report_dir
from sdpo_cli.runs import RunDir


def make(root: Path, problems: int, seeds: int, budget: int, batch: int, chars: int) -> int:
    rng = random.Random(0)
    words = ["def", "return", "for", "in", "range(n):", "x", "=", "print(x)", "if", "else:", "0", "1"]
    n_runs = 0
    for p in range(problems):
        problem = Problem.model_validate({"id": f"p{p}", "title": "t", "prompt": "Solve it. " * 80,
                                          "verifier": {"kind": "answer", "answer": 1}})
        for method, seed_list in (("sdpo", range(seeds)), ("multi-turn", range(seeds)), ("best-of-k", [0])):
            for seed in seed_list:
                run = RunDir.create(root, problem, method, seed, {"budget": budget, "batch_size": batch})
                g = 1 if method == "multi-turn" else batch
                for step in range(budget // g):
                    recs = []
                    for i in range(g):
                        text = " ".join(rng.choice(words) for _ in range(chars // 4))[:chars]
                        recs.append({"step": step, "index": i + 1, "attempt": step * g + i + 1, "text": text,
                                     "n_tokens": chars // 3, "truncated": False, "status": "wrong_answer",
                                     "passed": False, "tests_passed": 0, "tests_total": 1, "answer": "2",
                                     "feedback": "Wrong Answer\n\nYour final answer was: 2\nThat answer is not correct."})
                    run.append_attempts(recs)
                    rec = {"step": step, "attempts_used": (step + 1) * g, "n_attempts": g, "n_passed": 0,
                           "best_passed": 0, "best_so_far": 0, "n_tests": 1, "len_p10": 500, "len_p50": 900,
                           "len_p90": 1000, "warnings": []}
                    if method == "sdpo":
                        rec |= {"loss": 0.05 / (step + 1), "kl": 0.01, "entropy": 2.0 + rng.random()}
                    run.append_step(rec)
                extra = {"n_samples": budget, "n_correct": 0} if method == "best-of-k" else {}
                run.write_summary({"method": method, "problem_id": problem.id, "status": "exhausted", "solved": False,
                                   "discovery_index": None, "attempts_used": budget, "budget": budget, "seed": seed,
                                   **extra})
                n_runs += 1
    return n_runs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reply-chars", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cmp"
        n_runs = make(root, a.problems, a.seeds, a.budget, a.batch, a.reply_chars)
        on_disk = sum(p.stat().st_size for p in root.rglob("attempts.jsonl"))
        times = {True: [], False: []}
        for _ in range(a.repeats):  # interleaved: the machine's noise hits both alike
            for html in (False, True):
                t = time.perf_counter()
                report_dir(root, quiet=True, html=html)
                times[html].append(time.perf_counter() - t)
        size = (root / "report.html").stat().st_size
    stats = {k: (min(v), statistics.median(v), max(v)) for k, v in times.items()}
    extra = [h - n for h, n in zip(times[True], times[False])]
    print(f"comparison: {a.problems} problems x ({a.seeds} seeds x 2 methods + best-of-k) = {n_runs} runs, "
          f"budget {a.budget}, G {a.batch}, replies {a.reply_chars} chars; attempts.jsonl {on_disk / 1e6:.1f} MB")
    for html, label in ((False, "report without html"), (True, "report with html")):
        print(f"{label:20s} min / median / max: {' / '.join(f'{x:.2f}' for x in stats[html])} s")
    print(f"report.html adds    min / median / max: {min(extra):.2f} / {statistics.median(extra):.2f} / "
          f"{max(extra):.2f} s ({statistics.median(extra) / n_runs * 1000:.0f} ms per run)")
    print(f"report.html size: {size / 1e6:.2f} MB ({size / n_runs / 1e3:.0f} kB per run)")


if __name__ == "__main__":
    main()
