"""False passes from forged replies, per verifier kind: this checkout against an older one.

    .venv/bin/python bench/bench_redteam.py [--old DIR] [--modes bwrap,unshare,rlimits]

Runs every forged reply of tests/redteam_attacks.py (each one's own solution is wrong, so any pass
is a false pass) and each problem's correct reply through `verify_many`, once with this checkout's
code and once with the old one's (a fresh process each, PYTHONPATH), for every isolation mode asked
for. Prints, per mode and verifier kind, how many forged replies passed and whether the correct reply
did. A verifier that crashes on a reply counts the reply as "crashed". Problems with hidden tests are
refused in rlimits mode by this checkout (counted as "refused").

--old defaults to the worktree bench_verify.py uses (git worktree add --detach DIR c419040).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_verify import ROOT, old_checkout  # noqa: E402

CHILD = r"""
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
sys.path.insert(0, str(root / "tests"))
import redteam_attacks as A
from sdpo_cli.problem import Problem, load_problem
from sdpo_cli.verify import verify_many
out = []
by_key = {}
for aid, key, text in A.ATTACKS:
    by_key.setdefault(key, []).append((aid, text))
for key, items in by_key.items():
    spec = A.PROBLEMS[key]
    p = Problem.model_validate(spec) if isinstance(spec, dict) else load_problem(root / spec)
    try:
        correct = verify_many(p, [(A.CORRECT[key], False)])[0].passed
    except Exception as e:
        out.append({"key": key, "attack": None, "result": "refused" if "hidden tests" in str(e) else "crashed"})
        continue
    out.append({"key": key, "attack": None, "result": "passed" if correct else "failed"})
    for aid, text in items:
        try:
            v = verify_many(p, [(text, False)])[0]
            result = "passed" if v.passed else "failed"
        except Exception as e:
            result = "crashed"
        out.append({"key": key, "attack": aid, "result": result})
print(json.dumps(out))
"""


def run(src: Path, mode: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(src / "src"), "SDPO_SANDBOX": mode, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", CHILD, str(ROOT)], capture_output=True, text=True, env=env,
                         timeout=3600, cwd=src)
    if res.returncode:
        raise SystemExit(f"{src} ({mode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", help="checkout to compare with (default: a worktree of c419040)")
    ap.add_argument("--modes", default="bwrap,unshare,rlimits")
    a = ap.parse_args()
    checkouts = {"old": old_checkout(a.old), "new": ROOT}
    print("mode     kind          attacks  old: passed crashed correct-ok   new: passed crashed correct-ok")
    totals = {c: 0 for c in checkouts}
    for mode in a.modes.split(","):
        got = {c: run(src, mode) for c, src in checkouts.items()}
        for key in dict.fromkeys(r["key"] for r in got["new"]):
            cells = []
            n = max(sum(1 for r in got[c] if r["key"] == key and r["attack"]) for c in checkouts)
            for c in checkouts:
                rows = [r for r in got[c] if r["key"] == key]
                correct = next(r["result"] for r in rows if r["attack"] is None)
                attacks = [r["result"] for r in rows if r["attack"]]
                if correct == "refused":
                    cells.append(f"{'refused (hidden tests)':>30}")
                    continue
                passed = attacks.count("passed")
                totals[c] += passed
                cells.append(f"{passed:>11} {attacks.count('crashed') + (correct == 'crashed'):>7} {correct == 'passed'!s:>10}")
            print(f"{mode:8} {key:13} {n:>7}   " + "   ".join(cells), flush=True)
    print(f"\nforged replies that passed: old {totals['old']}, new {totals['new']}")


if __name__ == "__main__":
    main()
