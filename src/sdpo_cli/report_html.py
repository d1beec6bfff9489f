"""report.html: a comparison (or any folder of runs) as one self-contained page, written by `sdpo report`.

    path = write_html(Path("comparisons/demo"), report, images, out)   # images: discovery PNG paths

What the page holds, top to bottom:
  * the discovery@k curves with their bands: the mean over problems (or the one problem) and, with
    several problems, one panel per problem (the same PNGs `sdpo report` writes next to it);
  * the summary table per problem and for the mean (report.summary_rows: the terminal's cells);
  * per run (grouped by problem, then method and seed), collapsed: how it ended, its step curves
    (distillation loss, KL, entropy for SDPO; passes per batch, best tests passed, response length
    p10/p50/p90 for every method; steps with warnings shaded) and the warnings themselves;
  * per run, its attempts, each collapsed: verdict, reply, feedback and, for SDPO, the teacher
    prompt the feedback produced, reconstructed (runview.teacher_prompt; it is not stored).

Self-contained and offline: images are inline `data:` PNGs, styles are inline, there is no
script at all (attempts are browsed with <details>), and a Content-Security-Policy meta tag
forbids every network load, so even a bug here cannot make the page fetch anything.

Model and user text is hostile: every text goes through console.safe (control characters and
bidi overrides made visible) and html.escape, and only into element content. Attribute values
come from this module (ids are run-N, not directory names).

Size, for comparisons with thousands of attempts: per run the first KEEP successes and the last
KEEP failures are embedded (runview.KEEP = 20), each text capped at MAX_CHARS characters (head and
tail kept, the middle elided with a note); attempts.jsonl and `sdpo show` have the rest. The step
curves are one PNG per run (20-60 kB). bench/bench_report_html.py: 44 runs of 256 attempts with
3000-character replies give a 5.5 MB page, about 0.2 s per run to draw on a 2-core CPU.

Does not own: the numbers (report.py), reading runs (runview.py). Never imports torch.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from . import console
from .report import CI_LEVEL, COLORS, LABELS, METHODS, summary_rows
from .runs import find_runs
from .runview import KEEP, RunView, load_run, read_yaml, steps_with_warnings, teacher_prompt

MAX_CHARS = 4000  # characters of one reply / feedback / teacher prompt shown; longer: head + tail
STEP_DPI = 96
STEP_PANEL = (3.2, 2.2)  # inches per step-curve panel
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;
 padding:1.2em 1.5em 4em;color:#1b1f24;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{margin-top:1.6em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
h3{margin:1.4em 0 .4em}.muted{color:#57606a}.small{font-size:.86em}
nav a{margin-right:1em}figure{margin:.6em 0}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
table.summary{border-collapse:collapse;margin:.4em 0 1em;font-variant-numeric:tabular-nums}
table.summary th,table.summary td{padding:.25em .7em;border-bottom:1px solid #eaeef2;text-align:right;white-space:nowrap}
table.summary th:nth-child(-n+2),table.summary td:nth-child(-n+2){text-align:left}
table.summary tr.ratio td{color:#57606a;font-style:italic}
details{margin:.3em 0}details.run{border:1px solid #d0d7de;border-radius:6px;padding:.3em .8em}
details.run>summary{cursor:pointer;padding:.2em 0}details.run[open]>summary{margin-bottom:.5em}
details.attempt{border-left:3px solid #d0d7de;padding:.1em .6em;margin:.25em 0}
details.attempt.ok{border-left-color:#2da44e}details.attempt.fail{border-left-color:#cf222e}
details.attempt>summary{cursor:pointer;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.88em}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;border:1px solid #eaeef2;border-radius:4px;
 padding:.5em .7em;max-height:28em;overflow:auto;font-size:.85em;margin:.2em 0 .6em}
.badge{display:inline-block;border-radius:3px;padding:0 .4em;color:#fff;background:#cf222e;font-weight:600}
.badge.ok{background:#2da44e}.badge.other{background:#6e7781}
ul.warnings{color:#9a6700;margin:.3em 0}.note{color:#9a6700}
.clip{color:#57606a;font-style:italic}h5{margin:.5em 0 .1em;font-size:.9em}
"""


def _e(text) -> str:
    """Any text as safe HTML element content: control characters visible, then escaped."""
    return html.escape(console.safe(str(text)), quote=True)


def _clip(text: str, limit: int = MAX_CHARS) -> tuple[str, int]:
    """(head + tail of `text` within `limit` characters, characters left out)."""
    if len(text) <= limit:
        return text, 0
    head = limit * 2 // 3
    tail = limit - head
    return text[:head] + "\n…\n" + text[-tail:], len(text) - limit


def _pre(text: str) -> str:
    shown, cut = _clip(text)
    note = f'<div class="clip">{cut} characters in the middle not shown (the full text is in attempts.jsonl)</div>' if cut else ""
    return f"<pre>{_e(shown)}</pre>{note}"


def _png(data: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


# --------------------------------------------------------------------------------------------------
# Step curves


def _series(steps: list[dict], key: str) -> np.ndarray | None:
    ys = [s.get(key) for s in steps]
    if not any(isinstance(y, (int, float)) and not isinstance(y, bool) for y in ys):
        return None
    return np.array([float(y) if isinstance(y, (int, float)) and not isinstance(y, bool) else np.nan for y in ys])


def step_figure(view: RunView, figures: dict | None = None) -> bytes | None:
    """The run's step curves as PNG bytes (None without completed steps). See the module docstring.

    `figures`: a dict to keep matplotlib figures in between calls (one per panel layout); pass the
    same one for every run of a page.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    steps = sorted((s for s in view.steps if isinstance(s.get("step"), int)), key=lambda s: s["step"])
    if not steps:
        return None
    x = np.array([s["step"] for s in steps])
    unit = {"multi-turn": "turn", "best-of-k": "batch"}.get(view.method, "step")
    color = COLORS.get(view.method, "#1f77b4")
    marker = "o" if len(steps) <= 40 else None
    panels = []  # (title, draw(ax))
    for key, title in (("loss", "distillation loss"), ("kl", "KL per token"), ("entropy", "entropy per token")):
        ys = _series(steps, key)
        if ys is not None:
            panels.append((title, lambda ax, ys=ys: ax.plot(x, ys, color=color, marker=marker, ms=3, lw=1.5)))
    n_att, n_pass = _series(steps, "n_attempts"), _series(steps, "n_passed")
    if n_pass is not None:
        def passes(ax):  # bars drawn as one filled step polygon per series: fast for thousands of turns
            edges = np.append(x - 0.5, x[-1] + 0.5)
            if n_att is not None:
                ax.fill_between(edges, 0, np.append(n_att, n_att[-1]), step="post", color="#d0d7de", lw=0,
                                label="attempts")
            ax.fill_between(edges, 0, np.append(n_pass, n_pass[-1]), step="post", color="#2da44e", lw=0,
                            label="passed")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=6, loc="upper left", framealpha=0.8)
        panels.append((f"passes per {unit}", passes))
    best, best_so_far = _series(steps, "best_passed"), _series(steps, "best_so_far")
    if best is not None or best_so_far is not None:
        n_tests = _series(steps, "n_tests")

        def tests(ax):
            if best is not None:
                ax.plot(x, best, color=color, marker=marker, ms=3, lw=1.2, label=f"best in {unit}")
            if best_so_far is not None:
                ax.plot(x, best_so_far, color="#24292f", ls="--", lw=1.2, label="best so far")
            if n_tests is not None and not np.isnan(n_tests).all():
                ax.axhline(np.nanmax(n_tests), color="#2da44e", lw=1, ls=":", label="all tests")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=6, loc="lower right", framealpha=0.8)
        panels.append(("tests passed", tests))
    p10, p50, p90 = (_series(steps, f"len_p{q}") for q in (10, 50, 90))
    if p50 is not None:
        def lengths(ax):
            if p10 is not None and p90 is not None:
                ax.fill_between(x, p10, p90, color=color, alpha=0.2, lw=0, label="p10-p90")
            ax.plot(x, p50, color=color, marker=marker, ms=3, lw=1.5, label="median")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=6, loc="lower right", framealpha=0.8)
        panels.append(("response length (tokens)", lengths))
    if not panels:
        return None
    figures = {} if figures is None else figures
    warned = sorted({s for s, _ in steps_with_warnings(view) if isinstance(s, int)})
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    if (nrows, ncols) not in figures:  # one figure per layout, reused: building one is half the cost
        w, h = STEP_PANEL[0] * ncols, STEP_PANEL[1] * nrows
        fig = Figure(figsize=(w, h), dpi=STEP_DPI)  # a fixed layout: constrained layout doubles the time
        FigureCanvasAgg(fig)
        figures[nrows, ncols] = fig, fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={
            "left": 0.6 / w, "right": 1 - 0.12 / w, "bottom": 0.42 / h, "top": 1 - 0.25 / h,
            "wspace": 0.85 / STEP_PANEL[0], "hspace": 0.95 / STEP_PANEL[1]}).ravel()
    fig, axes = figures[nrows, ncols]
    for ax in axes:
        ax.clear()
        ax.set_visible(True)
    for ax, (title, draw) in zip(axes, panels):
        for s in warned:
            ax.axvspan(s - 0.5, s + 0.5, color="#d4a72c", alpha=0.18, lw=0)
        draw(ax)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))  # no "1e-5" offset text over the title
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.set_xlim(x[0] - 0.5, x[-1] + 0.5)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=STEP_DPI)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Page parts


def _summary_table(methods: dict, speedup: dict, budget: int, levels) -> str:
    headers, rows = summary_rows(methods, speedup, budget, levels)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        f'<tr{" class=ratio" if r["ratio"] else ""}>' + "".join(f"<td>{_e(c)}</td>" for c in r["cells"]) + "</tr>"
        for r in rows)
    return f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _attempt(view: RunView, a: dict) -> str:
    passed = bool(a.get("passed"))
    status = str(a.get("status") or ("passed" if passed else "?")).replace("_", " ")
    tests = f"{a.get('tests_passed', '?')}/{a.get('tests_total', '?')} tests"
    tokens = f"{a.get('n_tokens', '?')} tokens" + (" (hit the length limit)" if a.get("truncated") else "")
    where = f"attempt {a.get('attempt', '?')} · step {a.get('step', '?')} #{a.get('index', '?')}"
    badge = f'<span class="badge{" ok" if passed else ""}">{_e(status)}</span>'
    parts = [f'<details class="attempt {"ok" if passed else "fail"}"><summary>{badge} {_e(where)} · {_e(tests)} · '
             f"{_e(tokens)}</summary>"]
    if a.get("answer") not in (None, ""):
        parts.append(f"<h5>Extracted answer</h5>{_pre(str(a['answer']))}")
    parts.append(f"<h5>Reply</h5>{_pre(str(a.get('text', '')))}")
    fb = str(a.get("feedback") or "")
    parts.append(f"<h5>Feedback</h5>{_pre(fb)}" if fb else '<h5>Feedback</h5><p class="muted small">none</p>')
    text, why = teacher_prompt(view, a)
    if text is not None:
        parts.append('<h5>Teacher prompt <span class="muted small">(reconstructed)</span></h5>' + _pre(text))
    elif why:
        parts.append(f'<h5>Teacher prompt</h5><p class="muted small">none: {_e(why)}</p>')
    parts.append("</details>")
    return "".join(parts)


def _run(view: RunView, idx: int, image: bytes | None) -> str:
    label = LABELS.get(view.method, view.method)
    best, total = view.best_tests()
    n = len(view.steps)
    bits = [view.headline(), f"{n} {'turn' if view.method == 'multi-turn' else 'step'}{'' if n == 1 else 's'}"]
    if best is not None:
        bits.append(f"best tests {best}/{total if total is not None else '?'}")
    wall = (view.summary or {}).get("wall_time_s")
    if isinstance(wall, (int, float)):
        bits.append(f"{wall:.1f} s")
    badge_kind = {"solved": " ok", "exhausted": ""}.get(view.status, " other")
    out = [f'<details class="run" id="run-{idx}"><summary><span class="badge{badge_kind}">{_e(view.status)}</span> '
           f"<b>{_e(label)}</b> seed {_e(view.seed)} · {_e(' · '.join(bits))}</summary>",
           f'<p class="muted small">{_e(view.path)}</p>']
    out += [f'<p class="note small">note: {_e(n)}</p>' for n in view.notes]
    if image:
        out.append(f"<figure>{_png(image, f'step curves of {view.path.name}')}</figure>")
    warns = steps_with_warnings(view)
    if warns:
        out.append('<ul class="warnings">' + "".join(f"<li>step {_e(s)}: {_e(w)}</li>" for s, w in warns) + "</ul>")
    shown = len(view.attempts)
    if view.n_attempts:
        what = "every attempt" if shown == view.n_attempts else (
            f"{shown} of {view.n_attempts} attempts (the first {KEEP} successes and the last {KEEP} failures; "
            "all are in attempts.jsonl, or run `sdpo show` on the run)")
        out.append(f'<p class="muted small">Attempts: {_e(what)}.</p>')
        if view.method == "sdpo":
            out.append('<p class="muted small">Teacher prompts are reconstructed, not read back: the run does not '
                       "store them. Each is the problem statement and the attempt's own feedback in the SDPO reprompt "
                       "template (feedback.reprompt), as the trainer built it for every failed attempt of a step "
                       "without a success.</p>")
    out += [_attempt(view, a) for a in view.attempts]
    out.append("</details>")
    return "".join(out)


def _settings(directory: Path, views: list[RunView]) -> str:
    spec = read_yaml(directory / "compare.yaml") or {}
    cfg = spec.get("config") if isinstance(spec.get("config"), dict) else (views[0].config if views else {})
    keys = ("model", "backend", "device", "budget", "batch_size", "max_new_tokens", "temperature", "lr", "teacher",
            "topk", "lora_rank")
    shown = [f"{k} {cfg[k]}" for k in keys if k in cfg]
    if "samples" in spec:
        shown.append(f"best-of-k samples {spec['samples']}")
    return f'<p class="muted small">Settings: {_e(", ".join(shown))}.</p>' if shown else ""


def _order(views: list[RunView], problem_order: list[str]) -> list[tuple[str, list[RunView]]]:
    by_problem: dict[str, list[RunView]] = {}
    for v in views:
        by_problem.setdefault(v.problem_id, []).append(v)
    pids = [p for p in problem_order if p in by_problem] + sorted(p for p in by_problem if p not in problem_order)
    rank = {m: i for i, m in enumerate(METHODS)}

    def key(v: RunView):
        seed = v.seed if isinstance(v.seed, int) else 0
        return rank.get(v.method, len(rank)), v.method, seed, str(v.path)

    return [(p, sorted(by_problem[p], key=key)) for p in pids]


def render_html(directory: Path, report: dict, images: dict[str, Path | None]) -> str:
    """The page as a string. `images`: "discovery" and "problems" (None without several problems) PNG paths."""
    directory = Path(directory)
    budget, levels = report["budget"], report["levels"]
    views = [load_run(r.path) for r in find_runs(directory)]
    pids = list(report["problems"])
    title = f"sdpo report: {directory.resolve().name}"
    n_runs = len(views)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{_e(directory)} · budget {budget} attempts · {len(pids)} problem'
        f'{"s" if len(pids) != 1 else ""} · {n_runs} run{"s" if n_runs != 1 else ""} · methods: '
        f'{_e(", ".join(LABELS.get(m, m) for m in report["methods"]))}</p>',
        _settings(directory, views),
        '<nav><a href="#curves">discovery@k</a><a href="#summary">summary</a><a href="#runs">runs</a></nav>',
    ]
    parts += [f'<p class="note">note: {_e(n)}</p>' for n in report.get("notes", [])]

    parts.append('<h2 id="curves">discovery@k</h2>')
    parts.append(f'<p class="muted small">discovery@k: the fraction of seeds that found a passing attempt within k '
                 f"attempts (best-of-k: the unbiased pass@k from its samples). Shaded: {CI_LEVEL:.0%} bootstrap "
                 "band.</p>")
    for key, alt in (("discovery", "discovery@k curves"), ("problems", "discovery@k per problem")):
        path = images.get(key)
        if path is not None and Path(path).is_file():
            parts.append(f"<figure>{_png(Path(path).read_bytes(), alt)}</figure>")

    parts.append('<h2 id="summary">Summary</h2>')
    for pid, p in report["problems"].items():
        parts.append(f"<h3>{_e(pid)}</h3>" + _summary_table(p["methods"], p["speedup"], budget, levels))
    if len(pids) > 1:
        o = report["overall"]
        parts.append(f"<h3>Mean over {o['n_problems']} problems</h3>"
                     + _summary_table(o["methods"], o["speedup"], budget, levels))
    parts.append('<p class="muted small">mean attempts: capped at the budget; ≥ marks a lower bound (some runs never '
                 "succeeded). to p%: attempts needed to reach p% discovery (&gt; budget: not reached). "
                 "x / SDPO &gt; 1: SDPO needed fewer attempts.</p>")

    parts.append('<h2 id="runs">Runs</h2>')
    parts.append('<p class="muted small">Click a run for its step curves and attempts. Shaded steps had warnings.</p>')
    idx, figures = 0, {}
    for pid, runs in _order(views, pids):
        parts.append(f"<h3>{_e(pid)}</h3>")
        for view in runs:
            idx += 1
            parts.append(_run(view, idx, step_figure(view, figures)))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(directory: Path, report: dict, images: dict[str, Path | None], out: Path | None = None) -> Path:
    """Write `out`/report.html (default: into `directory`) atomically. Returns its path."""
    from .runs import atomic_write

    out = Path(out or directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    atomic_write(path, render_html(directory, report, images))
    return path
