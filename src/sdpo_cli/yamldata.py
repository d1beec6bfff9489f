"""Strict YAML for data files: the JSON subset, within limits, and errors that name the line.

PyYAML's `safe_load` accepts more than a data file should hold and fails badly on hostile input:
dates, `!!binary` and `!!set` become Python objects that JSON cannot carry; a repeated key silently
replaces the first one; a few thousand nested `[` overflow its recursive composer (RecursionError);
a few lines of aliases expand to billions of values ("billion laughs").

    data = load(text)        # raises YamlDataError(line, reason) on the first thing it refuses

`load` builds the value straight from the parser's events with an explicit stack, so nothing
recurses and every limit is checked as the events arrive, before anything big is built:

  * values: mappings with text keys, lists, str, int, float (also .nan / .inf), bool, null. Plain
    scalars are typed as `safe_load` types them (YAML 1.1: `yes` is true, `0x1F` is 31), except
    that dates are refused with "quote it" instead of becoming datetime objects;
  * explicit tags: only the JSON ones (!!str !!int !!float !!bool !!null !!seq !!map);
  * keys: text only (`1:` or `on:` would silently become "1" / "True" on the way through JSON),
    never repeated in one mapping; merge keys (`<<: *base`) work, and explicit keys override them;
  * depth: at most `max_depth` nested lists/mappings, counting what aliases expand to;
  * aliases: at most `max_alias_values` values added by alias expansion in all; none recursive;
  * each anchor defined once (as safe_load requires); one document; ints Python can print
    (sys.get_int_max_str_digits); strings encodable as UTF-8.

Events come from libyaml when PyYAML was built with it (the usual wheels are), else from PyYAML's
pure-Python parser; bench/bench_problem_load.py measures both on large problem files.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml
from yaml.events import (AliasEvent, DocumentStartEvent, MappingEndEvent, MappingStartEvent, ScalarEvent,
                         SequenceEndEvent, SequenceStartEvent)
from yaml.nodes import ScalarNode

MAX_DEPTH = 64
MAX_ALIAS_VALUES = 1_000_000

_T = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL, _SEQ, _MAP = (_T + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))
_MERGE, _TIMESTAMP, _VALUE = _T + "merge", _T + "timestamp", _T + "value"

_LIBYAML = getattr(yaml, "CSafeLoader", None)
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCT = yaml.constructor.SafeConstructor()
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_HEX_OR_BINARY = re.compile(r"[-+]?0(?:x[0-9a-fA-F_]+|b[01_]+)")
_MERGE_KEY = object()  # a plain `<<` key: the value is merged into the mapping
_CALL = {_FLOAT: _CONSTRUCT.construct_yaml_float,
         _BOOL: _CONSTRUCT.construct_yaml_bool, _NULL: _CONSTRUCT.construct_yaml_null}
_TYPE_NAMES = {bool: "a boolean", int: "a number", float: "a number", type(None): "null",
               list: "a list", dict: "a mapping"}
_QUOTE = "(quote it to keep it as text)"


class YamlDataError(ValueError):
    """The first thing `load` refused: `line` is 1-based (None when unknown); `reason` ends with the fix."""

    def __init__(self, line: int | None, reason: str):
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.line, self.reason = line, reason


def show(value: Any, limit: int = 40) -> str:
    """`value` for an error line: repr (control characters escaped), cut to about `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(tag: str) -> str:
    return "!!" + tag[len(_T):] if tag.startswith(_T) else tag


class _Frame:
    """An open list or mapping on the stack."""

    __slots__ = ("value", "anchor", "size", "height", "key", "key_line", "lines", "merges")

    def __init__(self, value: list | dict, anchor: str | None):
        self.value, self.anchor = value, anchor
        self.size, self.height = 1, 0  # values inside (aliases expanded), nesting levels inside
        self.key: Any = None  # mapping: the key waiting for its value (None: the next value is a key)
        self.key_line = 0
        self.lines: dict[str, int] = {}  # mapping: key -> line, to name both lines of a duplicate
        self.merges: list[tuple[Any, int]] = []


def _scalar(ev: ScalarEvent, line: int) -> Any:
    tag = ev.tag
    if tag is None or tag == "!":
        tag = _RESOLVER.resolve(ScalarNode, ev.value, ev.implicit)
        if tag == _TIMESTAMP:
            raise YamlDataError(line, f"{show(ev.value)} reads as a date, which is not plain data {_QUOTE}")
        if tag == _MERGE:
            return _MERGE_KEY
        if tag == _VALUE:  # a lone `=`: YAML 1.1's "default value" tag, which safe_load cannot construct
            tag = _STR
    if tag == _STR:
        value = ev.value
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise YamlDataError(line, f"text holds the lone surrogate \\u{ord(value[e.start]):04x}, which "
                                          "UTF-8 cannot encode (remove the \\u escape)") from None
        return value
    if tag == _INT:
        return _int(ev.value, line)
    call = _CALL.get(tag)
    if call is None:
        raise YamlDataError(line, f"the tag {show(_short(tag))} is not plain data; use text, numbers, true/false, "
                                  f"null, lists and mappings {_QUOTE}")
    try:
        return call(ScalarNode(tag, ev.value))
    except (ValueError, KeyError):
        raise YamlDataError(line, f"{show(ev.value)} is not a valid {_short(tag)} value (remove the tag, "
                                  "or fix the value)") from None


def _int(text: str, line: int) -> int:
    limit = sys.get_int_max_str_digits()
    try:
        # Plain decimals (most numbers in test data) directly; YAML 1.1's 0x, 0o, 012, 1_000, 1:30 via PyYAML.
        value = int(text) if _DECIMAL.fullmatch(text) else _CONSTRUCT.construct_yaml_int(ScalarNode(_INT, text))
        if limit and value.bit_length() > 3 * limit:  # 0x.../0b... forms skip int()'s digit limit
            str(value)
    except ValueError:
        if text.lstrip("+-").isdigit() or _HEX_OR_BINARY.fullmatch(text):
            raise YamlDataError(line, f"an integer of more than {limit} digits is more than Python reads "
                                      f"{_QUOTE}") from None
        raise YamlDataError(line, f"{show(text)} is not a valid !!int value (remove the tag, or fix the value)") from None
    return value


def _collection_tag(ev: SequenceStartEvent | MappingStartEvent, line: int) -> None:
    want = _SEQ if isinstance(ev, SequenceStartEvent) else _MAP
    if ev.tag not in (None, "!", want):
        raise YamlDataError(line, f"the tag {show(_short(ev.tag))} is not plain data; use plain lists and "
                                  "mappings (remove the tag)")


def _merge(frame: _Frame) -> None:
    """Apply `<<` keys: keys of the mapping itself win, then earlier merged mappings over later ones."""
    for merged, line in frame.merges:
        for source in merged if isinstance(merged, list) else [merged]:
            if not isinstance(source, dict):
                raise YamlDataError(line, "a merge key `<<` needs a mapping or a list of mappings (fix its value)")
            for k, v in source.items():
                frame.value.setdefault(k, v)


def load(text: str, *, max_depth: int = MAX_DEPTH, max_alias_values: int = MAX_ALIAS_VALUES) -> Any:
    """The one YAML document in `text` as plain data (None for an empty document).

    Raises:
        YamlDataError: the first problem, with its line: a YAML syntax error, or anything outside the
            rules in the module docstring.
    """
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int, int]] = {}  # name -> (value, size, height)
    open_anchors: set[str] = set()
    anchor_lines: dict[str, int] = {}
    alias_budget = max_alias_values
    documents = 0
    root: Any = None

    def add(value: Any, size: int, height: int, line: int, anchor: str | None = None, raw: str | None = None) -> None:
        nonlocal root
        if anchor is not None:
            anchors[anchor] = (value, size, height)
        if not stack:
            root = value
            return
        top = stack[-1]
        if isinstance(top.value, list):
            top.value.append("<<" if value is _MERGE_KEY else value)
        elif top.key is None:  # `value` is a key
            if value is not _MERGE_KEY and not isinstance(value, str):
                what = _TYPE_NAMES.get(type(value), type(value).__name__)
                if raw is None:
                    raise YamlDataError(line, f"a mapping key is {what}, not text (use text keys)")
                raise YamlDataError(line, f"the key {show(raw)} reads as {what} ({show(value)}), not text {_QUOTE}")
            if value in top.lines:
                raise YamlDataError(line, f"the key {show(value)} is repeated (first on line {top.lines[value]}); "
                                          "keep one of them")
            if value is not _MERGE_KEY:
                top.lines[value] = line
            top.key, top.key_line = value, line
            return
        elif top.key is _MERGE_KEY:
            top.merges.append((value, top.key_line))
            top.key = None
        else:
            top.value[top.key] = "<<" if value is _MERGE_KEY else value
            top.key = None
        top.size += size
        top.height = max(top.height, height)

    def new_anchor(name: str | None, line: int) -> None:
        if name is None:
            return
        if name in anchor_lines:  # as safe_load: an alias must not depend on which definition is meant
            raise YamlDataError(line, f"the anchor &{name} is defined twice (first on line {anchor_lines[name]}); "
                                      "rename one")
        anchor_lines[name] = line

    try:
        for ev in yaml.parse(text, Loader=_LIBYAML or yaml.SafeLoader):
            line = ev.start_mark.line + 1
            kind = type(ev)
            if kind is not AliasEvent and getattr(ev, "anchor", None) is not None:
                new_anchor(ev.anchor, line)
            if kind is ScalarEvent:
                add(_scalar(ev, line), 1, 0, line, ev.anchor, ev.value)
            elif kind is SequenceStartEvent or kind is MappingStartEvent:
                _collection_tag(ev, line)
                if len(stack) >= max_depth:
                    raise YamlDataError(line, f"lists/mappings nested more than {max_depth} levels deep "
                                              "(flatten the data)")
                stack.append(_Frame([] if kind is SequenceStartEvent else {}, ev.anchor))
                if ev.anchor is not None:
                    open_anchors.add(ev.anchor)
            elif kind is SequenceEndEvent or kind is MappingEndEvent:
                frame = stack.pop()
                if frame.merges:
                    _merge(frame)
                if frame.anchor is not None:
                    open_anchors.discard(frame.anchor)
                add(frame.value, frame.size, frame.height + 1, line, frame.anchor)
            elif kind is AliasEvent:
                name = ev.anchor
                if name in open_anchors:
                    raise YamlDataError(line, f"the alias *{name} refers to a list/mapping that contains it "
                                              "(write the data out)")
                if name not in anchors:
                    raise YamlDataError(line, f"the alias *{name} has no anchor &{name} before it (define it first)")
                value, size, height = anchors[name]
                alias_budget -= size
                if alias_budget < 0:
                    raise YamlDataError(line, f"aliases expand to more than {max_alias_values:,} values "
                                              "(write the data out, with fewer aliases)")
                if len(stack) + height > max_depth:
                    raise YamlDataError(line, f"the alias *{name} nests lists/mappings more than {max_depth} "
                                              "levels deep (flatten the data)")
                add(value, size, height, line)
            elif kind is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise YamlDataError(line, "a second YAML document (`---`); keep one document per file")
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        if "nesting depth" in str(e.problem):  # libyaml's own cap (1000 levels) tripped while looking ahead
            raise YamlDataError(mark.line + 1 if mark else None, f"lists/mappings nested more than {max_depth} "
                                "levels deep (flatten the data)") from None
        raise YamlDataError(mark.line + 1 if mark else None,
                            f"not valid YAML: {e.problem or e.context} (fix the YAML syntax)") from None
    except yaml.reader.ReaderError as e:
        # libyaml counts bytes of the UTF-8 text, PyYAML's reader characters.
        before = text.encode("utf-8")[: e.position].decode("utf-8", "replace") if _LIBYAML else text[: e.position]
        raise YamlDataError(before.count("\n") + 1, f"the control character U+{e.character:04X} is not allowed "
                                                    "in YAML text (remove it, or write it as an escape such "
                                                    "as \\x01 inside double quotes)") from None
    return root
