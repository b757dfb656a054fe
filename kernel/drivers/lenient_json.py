"""Lenient JSON: a native tool call's ``arguments`` string as a dict, or a precise error.

Models get JSON slightly wrong in a handful of recurring ways, and those are repaired:
trailing commas, single-quoted strings, Python ``True``/``False``/``None``, unquoted keys,
Markdown code fences, missing closing brackets at the very end (output cut off *between*
values), prose around the JSON, and JSON double-encoded as a string.  A value cut off in
the middle (inside a string, after a ``:``) is never "repaired": that would silently hand
the kernel truncated data, so it is an error.  Nothing here raises on bad model output.

Interface::

    from vmem.kernel.drivers.lenient_json import parse_arguments
    parsed = parse_arguments('{"query": "cats",}')   # ParsedArguments(arguments, error)
    parsed.arguments == {"query": "cats"} and parsed.error is None

The text tool protocol (:mod:`vmem.kernel.drivers.toolcalls`) reads calls written in a
completion's text with the same parser.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

__all__ = ["DEEP", "MAX_DEPTH", "ParsedArguments", "parse_arguments", "parse_first_object", "text_too_deep",
           "too_deep"]

MAX_DEPTH = 200
"""Deepest nesting of tool arguments (objects and arrays) the kernel takes: deeper arguments, as
text or as objects a driver built, are a function error, never a RecursionError."""

DEEP = f"the arguments are nested more than {MAX_DEPTH} levels deep"


def too_deep(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (dicts and lists, as parsed from JSON) nests deeper than ``limit``;
    iterative, so any depth is safe to ask about."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def text_too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON ``text`` opens more than ``limit`` brackets at once (outside strings); only
    scans when it holds that many brackets at all, so ordinary arguments cost two counts."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


# --------------------------------------------------------------------------- lenient JSON


class _Fail(Exception):
    """A lenient-parse failure at a position in the text."""

    def __init__(self, reason: str, pos: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pos = pos


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_BAREWORD = re.compile(r"[A-Za-z_$][A-Za-z0-9_$\-]*")
_WS = " \t\n\r\ufeff"
_LITERALS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}
_SIMPLE_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "a": "\a",
    "v": "\v",
    "0": "\0",
    "\n": "",  # a backslash-newline continues the string (Python/JS)
}


class _Lenient:
    """Recursive-descent parser for JSON plus the malformations models commonly produce.

    Accepts everything ``json.loads`` accepts (with the same result) and also: single-quoted
    strings with Python/JS escapes, unquoted (identifier) keys, Python literals, trailing
    commas, and, only when ``eof_closes`` is set, missing closing brackets at end of input.
    Each accepted deviation is noted in ``repairs``.
    """

    def __init__(self, text: str, *, eof_closes: bool) -> None:
        self.s = text
        self.n = len(text)
        self.eof_closes = eof_closes
        self.repairs: list[str] = []

    def _note(self, what: str) -> None:
        if what not in self.repairs:
            self.repairs.append(what)

    def _ws(self, i: int) -> int:
        s, n = self.s, self.n
        while i < n and s[i] in _WS:
            i += 1
        return i

    def value(self, i: int, depth: int = 0) -> tuple[Any, int]:
        """Parse one value starting at ``i`` (after whitespace); return it and the end."""
        if depth > MAX_DEPTH:
            raise _Fail(f"nesting deeper than {MAX_DEPTH} levels", i)
        i = self._ws(i)
        if i >= self.n:
            raise _Fail("the text ends where a value was expected (truncated)", i)
        c = self.s[i]
        if c == "{":
            return self._object(i, depth)
        if c == "[":
            return self._array(i, depth)
        if c == '"' or c == "'":
            return self._string(i)
        m = _NUMBER.match(self.s, i)
        if m:
            tok = m.group()
            try:
                return (float(tok) if any(ch in tok for ch in ".eE") else int(tok)), m.end()
            except ValueError:  # e.g. an integer beyond int()'s digit limit
                raise _Fail("a number too long to convert", i) from None
        for word, val in _LITERALS.items():
            if self.s.startswith(word, i):
                end = i + len(word)
                if end < self.n and (self.s[end].isalnum() or self.s[end] == "_"):
                    continue
                if word[0] in "TFN" and word not in ("NaN",):
                    self._note("Python literals True/False/None")
                return val, end
        raise _Fail(f"unexpected {_show_char(c)} where a value was expected", i)

    def _close_at_eof(self, i: int, closer: str) -> int:
        if not self.eof_closes:
            raise _Fail(f"the text ends before the closing {closer!r} (truncated)", i)
        self._note(f"added missing closing {closer!r} at the end")
        return i

    def _object(self, i: int, depth: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        i = self._ws(i + 1)
        while True:
            if i >= self.n:
                return out, self._close_at_eof(i, "}")
            if self.s[i] == "}":
                return out, i + 1
            key, i = self._key(i)
            i = self._ws(i)
            if i >= self.n:
                raise _Fail(f"the text ends after key {key!r} (truncated)", i)
            if self.s[i] != ":":
                raise _Fail(f"expected ':' after key {key!r}, found {_show_char(self.s[i])}", i)
            val, i = self.value(i + 1, depth + 1)
            out[key] = val
            i = self._ws(i)
            if i >= self.n:
                return out, self._close_at_eof(i, "}")
            c = self.s[i]
            if c == "}":
                return out, i + 1
            if c != ",":
                raise _Fail(f"expected ',' or '}}' after the value of {key!r}, found {_show_char(c)}", i)
            i = self._ws(i + 1)
            if i < self.n and self.s[i] == "}":
                self._note("trailing commas")
                return out, i + 1

    def _key(self, i: int) -> tuple[str, int]:
        c = self.s[i]
        if c == '"' or c == "'":
            return self._string(i)
        m = _BAREWORD.match(self.s, i)
        if m:
            self._note("unquoted keys")
            return m.group(), m.end()
        raise _Fail(f"expected a quoted key, found {_show_char(c)}", i)

    def _array(self, i: int, depth: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        i = self._ws(i + 1)
        while True:
            if i >= self.n:
                return out, self._close_at_eof(i, "]")
            if self.s[i] == "]":
                return out, i + 1
            val, i = self.value(i, depth + 1)
            out.append(val)
            i = self._ws(i)
            if i >= self.n:
                return out, self._close_at_eof(i, "]")
            c = self.s[i]
            if c == "]":
                return out, i + 1
            if c != ",":
                raise _Fail(f"expected ',' or ']' in an array, found {_show_char(c)}", i)
            i = self._ws(i + 1)
            if i < self.n and self.s[i] == "]":
                self._note("trailing commas")
                return out, i + 1

    def _string(self, i: int) -> tuple[str, int]:
        s, n = self.s, self.n
        q = s[i]
        if q == "'":
            self._note("single-quoted strings")
        start = i
        i += 1
        parts: list[str] = []
        run = i
        while True:
            if i >= n:
                raise _Fail("the text ends inside a string (truncated)", start)
            c = s[i]
            if c == q:
                parts.append(s[run:i])
                return "".join(parts), i + 1
            if c != "\\":
                i += 1
                continue
            parts.append(s[run:i])
            if i + 1 >= n:
                raise _Fail("the text ends inside a string (truncated)", start)
            e = s[i + 1]
            if e in _SIMPLE_ESCAPES:
                parts.append(_SIMPLE_ESCAPES[e])
                i += 2
            elif e in "uxU":
                width = {"u": 4, "x": 2, "U": 8}[e]
                digits = s[i + 2 : i + 2 + width]
                if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                    raise _Fail(f"invalid \\{e} escape in a string", i)
                code = int(digits, 16)
                i += 2 + width
                if e == "u" and 0xD800 <= code < 0xDC00 and s.startswith("\\u", i):
                    low = s[i + 2 : i + 6]
                    if len(low) == 4 and all(d in "0123456789abcdefABCDEF" for d in low):
                        lo = int(low, 16)
                        if 0xDC00 <= lo < 0xE000:
                            code = 0x10000 + ((code - 0xD800) << 10) + (lo - 0xDC00)
                            i += 6
                if code > 0x10FFFF:
                    raise _Fail("invalid \\U escape in a string (beyond U+10FFFF)", i)
                parts.append(chr(code))
            else:  # unknown escape: keep it verbatim, as Python does
                parts.append("\\" + e)
                i += 2
            run = i


def _show_char(c: str) -> str:
    if c in "\n\r\t":
        return {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}[c]
    return repr(c)


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    near = text[max(0, pos - 15) : pos + 15].replace("\n", "\\n")
    return f"line {line}, column {col}, near {near!r}"


def _lenient_value(text: str, start: int, *, eof_closes: bool) -> tuple[Any, int, list[str]]:
    """Parse one lenient JSON value at ``start``; raises _Fail."""
    p = _Lenient(text, eof_closes=eof_closes)
    val, end = p.value(start)
    return val, end, p.repairs


# --------------------------------------------------------------------------- arguments


class ParsedArguments(NamedTuple):
    """Result of :func:`parse_arguments`: exactly one of ``arguments`` / ``error`` is set;
    ``repairs`` lists the malformations that were repaired (empty for valid JSON)."""

    arguments: dict[str, Any] | None
    error: str | None
    repairs: tuple[str, ...] = ()


_FENCE = re.compile(r"```[A-Za-z0-9_+\-]*[ \t]*\r?\n?(.*?)(?:```|\Z)", re.DOTALL)


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if v is None:
        return "null"
    return type(v).__name__


def parse_arguments(raw: object) -> ParsedArguments:
    """Parse a tool call's ``arguments`` into a dict, repairing common malformations.

    ``raw`` is normally the string a provider returned.  ``None``, an empty string and JSON
    ``null`` mean "no arguments" (``{}``); a dict is taken as already parsed.  Never raises.

    Returns:
        ParsedArguments(arguments, None, repairs) on success, or
        ParsedArguments(None, error, ()) with an error that says what is wrong and where,
        worded for the LLM that produced the arguments.
    """
    try:
        if isinstance(raw, str) and text_too_deep(raw) or isinstance(raw, dict) and too_deep(raw):
            return ParsedArguments(None, DEEP)
        return _parse_arguments(raw, unwrap=True)
    except Exception as exc:  # noqa: BLE001 - whatever a model wrote, the answer is a function error
        return ParsedArguments(None, f"the arguments could not be parsed ({type(exc).__name__}: {str(exc)[:200]})")


def parse_first_object(text: str) -> ParsedArguments:
    """The first JSON object in ``text``, read as leniently as :func:`parse_arguments` reads
    arguments, whatever follows it (a small model that writes its answer, then writes it again,
    or adds a second object). Never raises."""
    parsed = parse_arguments(text)
    if parsed.arguments is not None or not isinstance(text, str):
        return parsed
    body = text.strip()
    fence = _FENCE.match(body)
    repairs = ["Markdown code fence"] if fence is not None else []
    if fence is not None:
        body = fence.group(1)
    start = body.find("{")
    if start < 0:
        return parsed
    try:
        val, end, fixes = _lenient_value(body, start, eof_closes=True)
    except _Fail as f:
        return ParsedArguments(None, f"invalid JSON: {f.reason} at {_where(body, f.pos)}")
    except RecursionError:
        return ParsedArguments(None, DEEP)
    if not isinstance(val, dict):
        return parsed
    if body[:start].strip():
        repairs.append("text before the JSON")
    if body[end:].strip():
        repairs.append("text after the JSON")
    return ParsedArguments(val, None, tuple(repairs + fixes))


def _parse_arguments(raw: object, *, unwrap: bool) -> ParsedArguments:
    if raw is None:
        return ParsedArguments({}, None)
    if isinstance(raw, dict):
        if all(isinstance(k, str) for k in raw):
            return ParsedArguments(dict(raw), None)
        return ParsedArguments(None, "the arguments object has non-string keys")
    if not isinstance(raw, str):
        return ParsedArguments(None, f"the arguments must be a JSON object, got {_type_name(raw)}")
    text = raw.strip()
    if not text:
        return ParsedArguments({}, None)
    try:
        val = json.loads(text)
    except (ValueError, RecursionError):
        pass
    else:
        if isinstance(val, dict):
            return ParsedArguments(val, None)
        if val is None:
            return ParsedArguments({}, None)
        if isinstance(val, str) and unwrap and val.strip()[:1] in ("{", "`"):
            inner = _parse_arguments(val, unwrap=False)
            if inner.arguments is not None:
                return inner._replace(repairs=inner.repairs + ("JSON double-encoded as a string",))
        return ParsedArguments(None, f"the arguments must be a JSON object, got {_type_name(val)}")

    repairs: list[str] = []
    fence = _FENCE.match(text)  # only a fence that opens the text: "```" may occur in strings
    if fence is not None:
        text = fence.group(1)
        repairs.append("Markdown code fence")
    start = text.find("{")
    if start < 0:
        if text.lstrip().startswith("["):
            return ParsedArguments(None, "the arguments must be a JSON object, got an array")
        return ParsedArguments(
            None, f"the arguments contain no JSON object (expected '{{' near {text[:30]!r})"
        )
    if text[:start].strip():
        repairs.append("text before the JSON")
    try:
        val, end, fixes = _lenient_value(text, start, eof_closes=True)
    except _Fail as f:
        return ParsedArguments(None, f"invalid JSON in the arguments: {f.reason} at {_where(text, f.pos)}")
    after = text[end:].strip()
    if after.startswith("{"):
        return ParsedArguments(
            None, "the arguments hold more than one JSON object; expected exactly one object"
        )
    if after:
        repairs.append("text after the JSON")
    return ParsedArguments(val, None, tuple(repairs + fixes))
