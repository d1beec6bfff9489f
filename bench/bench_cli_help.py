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
    """Median wall time and median CPU time (user + sys) of the child: on a loaded machine the wall
    time includes waiting for a core, the CPU time does not."""
    import resource

    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    exe = shutil.which("sdpo") or os.path.join(os.path.dirname(sys.executable), "sdpo")
    base, base_cpu = median_time([sys.executable, "-c", "pass"], args.repeat)
    print(f"python -c pass: {base:.3f} s wall, {base_cpu:.3f} s CPU (interpreter start-up, for scale)")
    help_out = subprocess.run([exe, "--help"], capture_output=True, text=True).stdout
    available = [c for c in COMMANDS if not c or f" {c[0]} " in help_out or f"\n  {c[0]}" in help_out or c[0] in help_out]
    for cmd in available:
        t, cpu = median_time([exe, *cmd, "--help"], args.repeat)
        flag = "ok" if t < 0.5 else "SLOW"
        print(f"sdpo {' '.join(cmd + ['--help']):<22} {t:.3f} s wall  {cpu:.3f} s CPU  {flag}")
    probe = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sdpo_cli.cli"],
                           capture_output=True, text=True).stderr
    print("torch imported by the CLI module:", "| torch" in probe)


if __name__ == "__main__":
    main()
