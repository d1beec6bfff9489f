"""Wall time of `sdpo --help` and each subcommand's --help (target: < 0.5 s each).

    .venv/bin/python bench/bench_cli_help.py [--repeat 5]

Reports the median of N runs of the installed console script, side by side with a bare
`python -c pass` (interpreter start-up) measured in the same run, and checks that torch is not
imported by --help.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = [[], ["problems"], ["check"], ["verify"], ["solve"], ["compare"], ["report"], ["import"]]


def median_time(argv, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    exe = shutil.which("sdpo") or os.path.join(os.path.dirname(sys.executable), "sdpo")
    base = median_time([sys.executable, "-c", "pass"], args.repeat)
    print(f"python -c pass: {base:.3f} s (interpreter start-up, for scale)")
    help_out = subprocess.run([exe, "--help"], capture_output=True, text=True).stdout
    available = [c for c in COMMANDS if not c or f" {c[0]} " in help_out or f"\n  {c[0]}" in help_out or c[0] in help_out]
    for cmd in available:
        t = median_time([exe, *cmd, "--help"], args.repeat)
        flag = "ok" if t < 0.5 else "SLOW"
        print(f"sdpo {' '.join(cmd + ['--help']):<22} {t:.3f} s  ({t / base:.1f}x python start-up)  {flag}")
    probe = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sdpo_cli.cli"],
                           capture_output=True, text=True).stderr
    print("torch imported by the CLI module:", "| torch" in probe)


if __name__ == "__main__":
    main()
