"""Plain data across the sandbox wall: a tagged JSON encoding, and the comparisons the judge makes.

Standard library only and free of sdpo imports: the same file is copied into the candidate's sandbox
(runner.py encodes what the function returned) and into the judge's (judge.py decodes it and
compares), and sdpo imports it too.

    line = dumps(encode((1, {2: {3.5}}, b"x")))      # candidate side
    value = decode(loads(line))                       # judge side: builtins only, or WireError

Encoding: None, bool, int, finite float and str are JSON themselves; nan and +/-inf are JSON's
NaN / Infinity; list is a JSON array. Everything else is a one-key object:
    {"t": [...]} tuple   {"d": [[k, v], ...]} dict   {"s": [...]} set   {"f": [...]} frozenset
    {"b": "<hex>"} bytes
Only these exact types encode (`type(x) is int`, not a subclass): an object that merely claims to be
equal to everything has no encoding, so it never reaches the comparison.

Decoding assumes the text is hostile: it is capped in size before parsing, nesting is capped at
MAX_DEPTH, integers at the interpreter's digit limit (4300, which judge.py sets), and anything but the forms above (an
unknown tag, an unhashable set element or dict key) is a WireError. The result holds builtin
objects only, so comparing it runs no code the candidate wrote.
"""

from __future__ import annotations

import json
import math

MAX_DEPTH = 100
_SCALARS = (type(None), bool, int, float, str)


class WireError(ValueError):
    """The value cannot cross the wall (unsupported type, too deep, malformed text)."""


def encode(x, _depth: int = 0, _path: tuple = ()):
    """`x` as JSON-ready tagged data. Raises WireError describing the first part that has no encoding
    ("an object of type Foo")."""
    t = type(x)
    if t in _SCALARS:
        return x
    if _depth >= MAX_DEPTH:
        raise WireError(f"a value nested more than {MAX_DEPTH} levels deep")
    if id(x) in _path:
        raise WireError("a value that contains itself")
    path = _path + (id(x),)
    if t is list:
        return [encode(v, _depth + 1, path) for v in x]
    if t is tuple:
        return {"t": [encode(v, _depth + 1, path) for v in x]}
    if t is dict:
        return {"d": [[encode(k, _depth + 1, path), encode(v, _depth + 1, path)] for k, v in x.items()]}
    if t is set or t is frozenset:
        return {"s" if t is set else "f": [encode(v, _depth + 1, path) for v in x]}
    if t is bytes:
        return {"b": x.hex()}
    raise WireError(f"an object of type {t.__name__}")


def dumps(data) -> str:
    """One line of JSON (NaN and Infinity allowed, no raw newlines)."""
    return json.dumps(data, separators=(",", ":"))


def loads(text: str | bytes, max_bytes: int):
    """Parse one line, at most `max_bytes` long. Raises WireError for anything malformed."""
    if len(text) > max_bytes:
        raise WireError(f"the value is larger than {max_bytes} bytes")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # includes integers over the digit limit
        raise WireError(f"malformed data ({str(e)[:120]})") from None


def decode(data, _depth: int = 0):
    """Tagged data -> builtin objects (see module docstring). Raises WireError."""
    t = type(data)
    if t in _SCALARS:
        return data
    if _depth >= MAX_DEPTH:
        raise WireError(f"the value is nested more than {MAX_DEPTH} levels deep")
    if t is list:
        return [decode(v, _depth + 1) for v in data]
    if t is not dict or len(data) != 1:
        raise WireError("malformed data (an untagged object)")
    (tag, body), = data.items()
    if tag == "b":
        if type(body) is not str:
            raise WireError("malformed bytes")
        try:
            return bytes.fromhex(body)
        except ValueError:
            raise WireError("malformed bytes") from None
    if type(body) is not list:
        raise WireError(f"malformed data (tag {tag[:10]!r})")
    if tag == "t":
        return tuple(decode(v, _depth + 1) for v in body)
    try:
        if tag == "s":
            return {decode(v, _depth + 1) for v in body}
        if tag == "f":
            return frozenset(decode(v, _depth + 1) for v in body)
        if tag == "d":
            out = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise WireError("malformed dict item")
                out[decode(pair[0], _depth + 1)] = decode(pair[1], _depth + 1)
            return out
    except TypeError as e:  # an unhashable set element or dict key
        raise WireError(f"malformed data ({e})") from None
    raise WireError(f"malformed data (unknown tag {tag[:10]!r})")


# --------------------------------------------------------------------------------------------------
# Comparisons the judge makes (the `tests` form of function problems)


def normalise(x):
    """JSON-like canonical form: tuples -> lists, sets -> sorted lists, dict keys -> str, bytes -> repr.

    Expected values in problem files are JSON-like, so a returned (1, 2) equals an expected [1, 2].
    """
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) in (list, tuple):
        return [normalise(v) for v in x]
    if type(x) in (set, frozenset):
        items = [normalise(v) for v in x]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if type(x) is dict:
        return {str(k): normalise(v) for k, v in x.items()}
    return repr(x)  # bytes


def close(a, b, tol: float | None) -> bool:
    """a == b; with `tol`, numbers match within it (relative or absolute), bools only exactly."""
    if tol is None:
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    return a == b
