"""`sdpo report`: discovery@k of SDPO and the baselines, from saved run directories only.

    report, curves = build_report(Path("comparisons/demo"))     # reads */config.yaml + summary.json
    paths = write_outputs(Path("comparisons/demo"), report, curves)  # report.json, curves.csv, PNGs
    render_tables(report)                                            # rich tables on stderr

What it computes (the paper's Sec. 5.2 and Table 10), for a budget K (the comparison's budget), per problem and as the
mean over problems (every problem weighs the same, as in the paper):
  * discovery time per seed (SDPO, multi-turn), censored at K (None = no success within K);
  * discovery@k for k = 1..K: the fraction of seeds with T <= k; for best-of-k the unbiased pass@k
    estimator from its n samples and c successes (metrics.pass_at_k_curve);
  * a 90% percentile bootstrap band, seeded (same runs -> same band): seeds resampled with
    replacement for SDPO / multi-turn (metrics.bootstrap_ci / mean_bootstrap_ci); for best-of-k,
    which has no seeds, its n samples are resampled (c* ~ Binomial(n, c/n));
  * mean attempts to first success, capped at K: E[min(T, K)] = sum_{k=0}^{K-1} (1 - discovery@k).
    For best-of-k this is the expected first-success position in a random order of the n samples,
    the paper's Table 10 convention (its "1466" for c = 1 of n = 2944, K = 2750). When some runs
    never succeeded (discovery@K < 1) the value is a lower bound, shown as ">= x";
  * attempts needed to reach p discovery, per method, and the ratio baseline / SDPO (the paper's
    "3x fewer attempts"; > 1 means SDPO needed fewer).

Outputs: report.json, curves.csv (long format: problem, method, k, discovery, ci_low, ci_high; the
mean over problems has problem "(mean)"), discovery.png (the mean over problems, or the one problem),
with several problems discovery_problems.png (one panel per problem), and report.html (everything
above plus every run's step curves and attempts in one offline page; report_html.py).
Terminal tables never cut a header or a number (tables.py).

Does not own: running anything (compare.py, trainer.py, baselines.py) or the estimators
(metrics.py). Never imports torch or transformers, so it runs without the training stack.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from . import console
from .errors import RunDataError
from .metrics import (
    attempts_to_reach,
    bootstrap_ci,
    discovery_curve,
    mean_bootstrap_ci,
    mean_discovery_curve,
    pass_at_k_curve,
)
from .runs import find_runs

METHODS = ("sdpo", "best-of-k", "multi-turn")  # display order; best-of-k is the only one without seeds
LABELS = {"sdpo": "SDPO", "best-of-k": "best-of-k", "multi-turn": "multi-turn"}
COLORS = {"sdpo": "#1f77b4", "best-of-k": "#ff7f0e", "multi-turn": "#2ca02c"}
STYLES = {"sdpo": "-", "best-of-k": "-.", "multi-turn": "--"}
LEVELS = (0.25, 0.5, 0.75)
CI_LEVEL = 0.9  # the paper's 90% bootstrap interval
N_BOOT = 1000
BOOT_SEED = 0
MEAN = "(mean)"  # curves.csv name of the mean over problems (parentheses are not allowed in problem ids)
SPEC_FILE = "compare.yaml"
FIGSIZE, DPI = (8.0, 5.0), 120  # discovery.png is 960 x 600 pixels
PANEL_SIZE = (4.2, 3.2)  # inches per panel of discovery_problems.png
_EPS = 1e-9  # float slack when a mean curve should equal a level exactly (e.g. (0.4 + 0.6) / 2)


# --------------------------------------------------------------------------------------------------
# Reading runs


def collect(directory: Path) -> tuple[int, list[str], dict[str, dict[str, dict]], list[str]]:
    """Read every finished run below `directory`.

    Returns:
        (budget K, problem ids in order, data[problem][method], notes). For SDPO / multi-turn the data
        holds "runs", "seeds", "times" (discovery time per seed, None = censored at K); for best-of-k
        "runs", "n" and "c" (pooled over its runs). Notes list the runs that were skipped and why.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise RunDataError(f"{directory}: no such directory (give a comparison directory made by `sdpo compare`)")
    spec = None
    notes: list[str] = []
    if (directory / SPEC_FILE).is_file():
        from .compare import load_spec

        try:
            spec = load_spec(directory)
        except RunDataError as e:
            notes.append(f"{e}; reporting the runs found below it instead")
    finished = []
    for run in find_runs(directory):
        try:
            summary, header = run.summary(), run.header
        except RunDataError as e:  # a damaged run is named and left out, never silently counted
            notes.append(f"{e.lines[0]} (skipped)")
            continue
        if not summary or summary.get("status") not in ("solved", "exhausted"):
            notes.append(f"{run.path}: unfinished (status {summary.get('status') if summary else 'running'}); skipped")
            continue
        keys = {"budget": int, "solved": bool, "attempts_used": int}
        if header["method"] == "best-of-k":
            keys |= {"n_samples": int, "n_correct": int}
        if any(not isinstance(summary.get(k), t) for k, t in keys.items()):
            notes.append(f"{run.path}/summary.json: damaged (needs {', '.join(keys)}); skipped")
            continue
        finished.append((run, header, summary))
    if not finished:
        raise RunDataError(f"{directory}: no finished runs found (run `sdpo compare`, or resume it with --resume)"
                           + (f"; {notes[0]}" if notes else ""))

    if spec is not None:
        budget = int(spec["config"]["budget"])
    else:
        budgets = sorted({int(s["budget"]) for _, _, s in finished})
        budget = budgets[0]
        if len(budgets) > 1:
            notes.append(f"runs have different budgets {budgets}; reporting up to the smallest, {budget}")

    data: dict[str, dict[str, dict]] = {}
    for run, header, s in finished:
        method, pid = header["method"], header["problem_id"]
        if method not in METHODS:
            notes.append(f"{run.path}: unknown method {method!r}; skipped")
            continue
        slot = data.setdefault(pid, {})
        if method == "best-of-k":
            if s["n_samples"] < budget:
                notes.append(f"{run.path}: {s['n_samples']} samples < budget {budget}; skipped")
                continue
            d = slot.setdefault(method, {"runs": [], "n": 0, "c": 0})
            d["runs"].append(str(run.path))
            d["n"] += int(s["n_samples"])  # i.i.d. samples pool across runs
            d["c"] += int(s["n_correct"])
        else:
            if not s["solved"] and s["budget"] < budget:
                notes.append(f"{run.path}: budget {s['budget']} < {budget} and not solved; skipped")
                continue
            t = s["discovery_index"] if s["solved"] else None
            d = slot.setdefault(method, {"runs": [], "seeds": [], "times": []})
            d["runs"].append(str(run.path))
            d["seeds"].append(header["seed"])
            d["times"].append(t if t is not None and t <= budget else None)
    order = [p for p in (spec or {}).get("problem_ids", []) if p in data]
    order += sorted(p for p in data if p not in order)
    return budget, order, {p: data[p] for p in order if data[p]}, notes


# --------------------------------------------------------------------------------------------------
# Curves and numbers


def _pass_at_k_boot(n: int, c: int, ks: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, len(ks)) best-of-k curves with the n samples resampled: c* ~ Binomial(n, c/n)."""
    draws = rng.binomial(n, c / n, size=n_boot)
    cache = {int(x): pass_at_k_curve(n, int(x), ks) for x in np.unique(draws)}
    return np.stack([cache[int(x)] for x in draws])


def _band(boot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tail = (1.0 - CI_LEVEL) / 2 * 100
    return np.percentile(boot, tail, axis=0), np.percentile(boot, 100 - tail, axis=0)


def _checkpoints(budget: int) -> list[int]:
    """k values shown in report.json: powers of two up to the budget, and the budget."""
    ks = [2**i for i in range(int(math.log2(budget)) + 1)]
    return ks if ks[-1] == budget else ks + [budget]


def _numbers(curve: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int, levels) -> dict:
    """One method's summary numbers from its discovery@k curve over k = 1..K (and band)."""
    ks = np.arange(1, budget + 1)
    to = {}
    for p in levels:
        k = attempts_to_reach(curve, ks, p - _EPS)
        to[f"{p:g}"] = None if k is None else int(k)
    return {
        "discovery_at_budget": float(curve[-1]),
        "ci_at_budget": [float(lo[-1]), float(hi[-1])],
        "discovery_at": {str(k): float(curve[k - 1]) for k in _checkpoints(budget)},
        # E[min(T, K)] = sum_{k=0}^{K-1} P(T > k), with discovery@0 = 0.
        "mean_attempts": float(budget - curve[:-1].sum()),
        "mean_attempts_is_lower_bound": bool(curve[-1] < 1.0 - _EPS),
        "attempts_to": to,
    }


def _ratio(k_base: int | None, k_sdpo: int | None, budget: int) -> dict:
    """baseline attempts / SDPO attempts; when one never got there, a bound using the budget."""
    if k_base is not None and k_sdpo is not None:
        return {"ratio": k_base / k_sdpo, "kind": "exact"}
    if k_sdpo is not None:  # the baseline needs more than K
        return {"ratio": budget / k_sdpo, "kind": "more_than"}
    if k_base is not None:  # SDPO needs more than K
        return {"ratio": k_base / budget, "kind": "less_than"}
    return {"ratio": None, "kind": None}


def _speedups(methods: dict[str, dict], budget: int, levels) -> dict:
    if "sdpo" not in methods:
        return {}
    s = methods["sdpo"]
    out = {}
    for b in (m for m in METHODS if m != "sdpo" and m in methods):
        m = methods[b]
        out[b] = {"mean_attempts": m["mean_attempts"] / s["mean_attempts"],
                  "attempts_to": {p: _ratio(m["attempts_to"][p], s["attempts_to"][p], budget) for p in s["attempts_to"]}}
    return out


def build_report(directory: Path, levels=LEVELS) -> tuple[dict, dict[tuple[str, str], tuple]]:
    """Everything `sdpo report` shows, from the runs below `directory`.

    Returns:
        (report dict as written to report.json, curves[(problem or MEAN, method)] = (curve, lo, hi),
        each a (K,) array over k = 1..K).
    """
    levels = tuple(sorted(levels))
    budget, order, data, notes = collect(directory)
    ks = np.arange(1, budget + 1)
    curves: dict[tuple[str, str], tuple] = {}
    problems = {}
    for pid in order:
        entry = {}
        for method in (m for m in METHODS if m in data[pid]):
            d = data[pid][method]
            if method == "best-of-k":
                curve = pass_at_k_curve(d["n"], d["c"], ks)
                lo, hi = _band(_pass_at_k_boot(d["n"], d["c"], ks, N_BOOT, np.random.default_rng(BOOT_SEED)))
                info = {"runs": d["runs"], "n_samples": d["n"], "n_correct": d["c"]}
            else:
                curve = discovery_curve(d["times"], ks)
                lo, hi = bootstrap_ci(d["times"], ks, n_boot=N_BOOT, level=CI_LEVEL, seed=BOOT_SEED)
                info = {"runs": d["runs"], "seeds": d["seeds"], "n_seeds": len(d["times"]),
                        "discovery_times": d["times"], "solved": sum(t is not None for t in d["times"])}
            curves[(pid, method)] = (curve, lo, hi)
            entry[method] = {**info, **_numbers(curve, lo, hi, budget, levels)}
        problems[pid] = {"methods": entry, "speedup": _speedups(entry, budget, levels)}

    overall = {}
    for method in METHODS:
        pids = [p for p in order if method in data[p]]
        if not pids:
            continue
        if method == "best-of-k":
            curve = np.mean([curves[(p, method)][0] for p in pids], axis=0)
            rng = np.random.default_rng(BOOT_SEED)
            boot = sum(_pass_at_k_boot(data[p][method]["n"], data[p][method]["c"], ks, N_BOOT, rng) for p in pids)
            lo, hi = _band(boot / len(pids))
        else:
            times = [data[p][method]["times"] for p in pids]
            curve = mean_discovery_curve(times, ks)
            lo, hi = mean_bootstrap_ci(times, ks, n_boot=N_BOOT, level=CI_LEVEL, seed=BOOT_SEED)
        curves[(MEAN, method)] = (curve, lo, hi)
        overall[method] = {"n_problems": len(pids), "problems": pids, **_numbers(curve, lo, hi, budget, levels)}
    if len({tuple(v["problems"]) for v in overall.values()}) > 1:
        notes.append("not every method has runs on every problem: the means are over different problem sets")
    report = {
        "directory": str(directory), "budget": budget, "ci_level": CI_LEVEL, "n_boot": N_BOOT,
        "bootstrap_seed": BOOT_SEED, "levels": list(levels), "methods": list(overall),
        "problems": problems,
        "overall": {"n_problems": len(order), "methods": overall, "speedup": _speedups(overall, budget, levels)},
        "notes": notes,
    }
    return report, curves


# --------------------------------------------------------------------------------------------------
# Files


def write_outputs(directory: Path, report: dict, curves: dict, out: Path | None = None) -> list[Path]:
    """Write report.json, curves.csv and the PNG(s) into `out` (default: `directory`). Returns the paths."""
    from .runs import atomic_write

    out = Path(out or directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "curves.csv", out / "discovery.png"]
    atomic_write(paths[0], json.dumps(report, indent=2) + "\n")
    budget = report["budget"]
    with open(out / ".curves.csv.tmp", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["problem", "method", "k", "discovery", "ci_low", "ci_high"])
        for (pid, method), (curve, lo, hi) in curves.items():
            for k in range(1, budget + 1):
                w.writerow([pid, method, k, f"{curve[k - 1]:.6g}", f"{lo[k - 1]:.6g}", f"{hi[k - 1]:.6g}"])
    (out / ".curves.csv.tmp").replace(paths[1])

    pids = list(report["problems"])
    if len(pids) == 1:
        title = f"{pids[0]}: discovery@k (budget {budget})"
        series = _series(report, curves, pids[0], report["problems"][pids[0]]["methods"])
    else:
        title = f"Mean over {len(pids)} problems: discovery@k (budget {budget})"
        series = _series(report, curves, MEAN, report["overall"]["methods"])
    plot_discovery(paths[2], [(title, series)], budget, FIGSIZE)
    if len(pids) > 1:
        paths.append(out / "discovery_problems.png")
        ncols = min(3, len(pids))
        nrows = math.ceil(len(pids) / ncols)
        panels = [(pid, _series(report, curves, pid, report["problems"][pid]["methods"])) for pid in pids]
        plot_discovery(paths[3], panels, budget, (PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows + 0.4), ncols=ncols,
                       suptitle=f"discovery@k per problem (budget {budget}; shaded: {CI_LEVEL:.0%} bootstrap CI)")
    return paths


def _series(report: dict, curves: dict, key: str, methods: dict) -> list[tuple]:
    """[(method, label, curve, lo, hi)] for one panel; labels say how much data each curve rests on."""
    out = []
    for method, m in methods.items():
        if "n_samples" in m:
            label = f"best-of-k (n={m['n_samples']} samples)"
        elif "n_seeds" in m:
            label = f"{LABELS[method]} ({_plural(m['n_seeds'], 'seed')})"
        else:  # a mean over problems
            label = f"{LABELS[method]} (mean of {_plural(m['n_problems'], 'problem')})"
        out.append((method, label, *curves[(key, method)]))
    return out


def plot_discovery(path: Path, panels: list[tuple[str, list[tuple]]], budget: int, figsize, ncols: int = 1,
                   suptitle: str | None = None) -> None:
    """discovery@k against k, one line and 90% band per method, one axis per panel (headless Agg).

    Curves are steps (discovery@k is defined at integer k) starting from discovery@0 = 0, held a
    little past K so the last step shows. Methods differ in colour and line style; SDPO is drawn
    first and thicker, the dashed baselines on top, so identical curves stay visible.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot: no global state, no GUI backend
    nrows = math.ceil(len(panels) / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    right = budget + max(0.5, 0.02 * budget)
    x = np.append(np.arange(0, budget + 1), right)
    small = len(panels) > 1
    draw_order = {"sdpo": 0, "best-of-k": 1, "multi-turn": 2}
    for ax, (title, series) in zip(axes, panels):
        lines = {}
        for method, label, curve, lo, hi in sorted(series, key=lambda s: draw_order[s[0]]):
            y, ylo, yhi = (np.concatenate([[0.0], a, a[-1:]]) for a in (curve, lo, hi))
            color = COLORS[method]
            ax.fill_between(x, ylo, yhi, step="post", color=color, alpha=0.15, lw=0)
            (lines[method],) = ax.step(x, y, where="post", color=color, lw=2.8 if method == "sdpo" else 1.8,
                                       ls=STYLES[method], label=label, zorder=3 + draw_order[method])
        ax.legend([lines[s[0]] for s in series], [s[1] for s in series], loc="best",  # in table order
                  fontsize=7 if small else 9, framealpha=0.9)
        ax.set_xlim(0, right)
        ax.set_ylim(-0.02, 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        ax.set_title(title, fontsize=10 if small else 12)
        ax.set_xlabel("attempts k (generations)")
        ax.set_ylabel("discovery@k")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    else:
        fig.text(0.99, 0.005, f"shaded: {CI_LEVEL:.0%} bootstrap CI", ha="right", va="bottom", fontsize=8, color="0.4")
    fig.savefig(path, dpi=DPI)


# --------------------------------------------------------------------------------------------------
# Terminal


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _fmt_k(k: int | None, budget: int) -> str:
    return f"> {budget}" if k is None else str(k)


def _fmt_ratio(r: dict) -> str:
    if r["ratio"] is None:
        return "-"
    return {"exact": "", "more_than": "> ", "less_than": "< "}[r["kind"]] + f"{r['ratio']:.2f}x"


def summary_rows(methods: dict, speedup: dict, budget: int, levels) -> tuple[list[str], list[dict]]:
    """The summary table as text cells, shared by the terminal tables and report.html.

    Returns:
        (column headers, rows); a row is {"cells": [...] aligned with the headers, "ratio": bool}.
        Ratio rows (baseline / SDPO attempts) leave the columns that have no ratio empty.
    """
    headers = ["method", "runs", "solved", f"discovery@{budget}", f"{CI_LEVEL:.0%} CI", "mean attempts",
               *(f"to {p:.0%}" for p in levels)]
    rows = []
    for method, m in methods.items():
        if "n_samples" in m:
            runs, solved = f"n={m['n_samples']} samples", f"c={m['n_correct']}"
        elif "n_seeds" in m:
            shown = [str(x) if x is not None else f">{budget}" for x in m["discovery_times"][:8]]
            runs = f"{_plural(m['n_seeds'], 'seed')}: " + ", ".join(shown) + (" ..." if m["n_seeds"] > 8 else "")
            solved = f"{m['solved']}/{m['n_seeds']}"
        else:
            runs, solved = _plural(m["n_problems"], "problem"), ""
        lo, hi = m["ci_at_budget"]
        mean = ("≥ " if m["mean_attempts_is_lower_bound"] else "") + f"{m['mean_attempts']:.1f}"
        rows.append({"cells": [LABELS[method], runs, solved, f"{m['discovery_at_budget']:.2f}",
                               f"[{lo:.2f}, {hi:.2f}]", mean,
                               *(_fmt_k(m["attempts_to"][f"{p:g}"], budget) for p in levels)], "ratio": False})
    for b, s in speedup.items():
        rows.append({"cells": [f"{LABELS[b]} / SDPO", "attempts ratio", "", "", "", f"{s['mean_attempts']:.2f}x",
                               *(_fmt_ratio(s["attempts_to"][f"{p:g}"]) for p in levels)], "ratio": True})
    return headers, rows


def _table(headers: list[str], rows: list[dict]):
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD)
    for col in headers:
        t.add_column(col, justify="left" if col in ("method", "runs") else "right")
    for row in rows:
        t.add_row(*row["cells"], style="dim" if row["ratio"] else None)
    return t


def _stacked(headers: list[str], rows: list[dict]):
    """The narrow layout: one block per method, one "field  value" line per column."""
    from rich.table import Table
    from rich.text import Text

    g = Table.grid(padding=(0, 2))
    g.add_column(no_wrap=True)
    g.add_column()
    n_to = sum(h.startswith("to ") for h in headers)
    for row in rows:
        c = row["cells"]
        g.add_row(Text(c[0], style="bold dim" if row["ratio"] else "bold"), c[1])
        fields = [("solved", c[2]), (headers[3], f"{c[3]}  {headers[4]} {c[4]}" if c[3] else ""), (headers[5], c[5])]
        fields.append(("attempts to", "   ".join(f"{h[3:]}: {v}" for h, v in zip(headers[-n_to:], c[-n_to:]))))
        for name, value in fields:
            if value:
                g.add_row("  " + name, value, style="dim" if row["ratio"] else None)
    return g


def render_tables(report: dict, con=None) -> None:
    """Tables on stderr: one per problem, then the mean over problems (when there are several).

    At any width every method name and number is printed in full (see tables.py): the wide table
    where it fits, one block per method on a narrower terminal, a Markdown table in a pipe or file.
    """
    from .tables import print_table

    con = con or console.err
    budget, levels = report["budget"], report["levels"]
    parts = [(f"{pid} (budget {budget})", p["methods"], p["speedup"]) for pid, p in report["problems"].items()]
    if len(report["problems"]) > 1:
        o = report["overall"]
        parts.append((f"Mean over {o['n_problems']} problems (budget {budget})", o["methods"], o["speedup"]))
    for title, methods, speedup in parts:
        headers, rows = summary_rows(methods, speedup, budget, levels)
        print_table(con, _table(headers, rows), title=title, narrow=_stacked(headers, rows))
    con.print("mean attempts: capped at the budget; ≥ marks a lower bound (some runs never succeeded). "
              "x / SDPO > 1: SDPO needed fewer attempts.", style="dim")
    for note in report["notes"]:
        console.warn(f"note: {note}")


def parse_levels(text: str) -> tuple[float, ...]:
    """"0.25,0.5" or "25%,50%" -> (0.25, 0.5)."""
    from .errors import ConfigError

    out = []
    for part in (x.strip() for x in text.split(",") if x.strip()):
        try:
            v = float(part[:-1]) / 100 if part.endswith("%") else float(part)
        except ValueError:
            raise ConfigError(f"--levels: {part!r} is not a number (give e.g. 0.25,0.5 or 25%,50%)") from None
        if not 0 < v <= 1:
            raise ConfigError(f"--levels: {part} is not in (0, 1]")
        out.append(v)
    if not out:
        raise ConfigError("--levels: give at least one level, e.g. 0.5")
    return tuple(out)


def report_dir(directory: Path, *, levels=LEVELS, out: Path | None = None, quiet: bool = False,
               html: bool = True) -> dict:
    """Build, write and (unless quiet) print the report of `directory`. Returns the report dict.

    Writes report.json, curves.csv, the PNG(s) and, unless html=False, report.html (report_html.py).
    """
    report, curves = build_report(Path(directory), levels)
    paths = write_outputs(Path(directory), report, curves, out)
    if html:
        from .report_html import write_html

        images = {"discovery": paths[2], "problems": paths[3] if len(paths) > 3 else None}
        paths.append(write_html(Path(directory), report, images, out))
    if not quiet:
        render_tables(report)
        console.err.print("wrote " + ", ".join(str(p) for p in paths), markup=False)
    return report
