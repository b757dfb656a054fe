"""Tool-call parsing: native arguments strings, a JSON-in-text fallback, and its prompt.

Three parts:

* :func:`parse_arguments` turns a native tool call's ``arguments`` string into a dict, or a
  precise error.  Models get JSON slightly wrong in a handful of recurring ways, and those
  are repaired: trailing commas, single-quoted strings, Python ``True``/``False``/``None``,
  unquoted keys, Markdown code fences, missing closing brackets at the very end (output cut
  off *between* values), prose around the JSON, and JSON double-encoded as a string.  A
  value cut off in the middle (inside a string, after a ``:``) is never "repaired": that
  would silently hand the kernel truncated data, so it is an error.
* :func:`parse_text_tool_calls` finds function calls written as JSON in a completion's text
  by a model without native tool calling: ``{"function": NAME, "arguments": {...}}`` (the
  protocol this module teaches), and the common variants (``name``/``parameters``/
  ``args``, the OpenAI ``{"function": {"name", "arguments"}}`` shape, lists of calls,
  ``{"tool_calls": [...]}``), fenced or bare, several per text.  The text outside the calls
  is returned too: it is the model's own message.
* :func:`tool_protocol_prompt` writes the system-prompt section that teaches a model that
  protocol and lists the tools from their schemas; :func:`to_text_protocol` rewrites a
  chat history that contains native tool calls and tool results into plain messages a
  no-tools model (and its chat template) accepts.

Nothing here raises on bad model output: every entry point returns an error value instead.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, Callable, Collection, Iterable, NamedTuple, Sequence

from .base import Message, Tool, ToolCall

__all__ = [
    "ParsedArguments",
    "TextToolCalls",
    "new_call_id",
    "parse_arguments",
    "parse_first_object",
    "parse_text_tool_calls",
    "render_call",
    "to_text_protocol",
    "tool_protocol_prompt",
]

MAX_DEPTH = 200
"""Deepest nesting the lenient parser follows; deeper input is an error, not a RecursionError."""


def new_call_id() -> str:
    """A fresh tool-call id in OpenAI's style (``call_`` + 24 hex digits)."""
    return "call_" + secrets.token_hex(12)


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
    return _parse_arguments(raw, unwrap=True)


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


# --------------------------------------------------------------------------- text fallback


class TextToolCalls(NamedTuple):
    """Result of :func:`parse_text_tool_calls`: the calls found, in order, and the text
    that remains once they (and code fences holding only them) are cut out (None if empty)."""

    calls: list[ToolCall]
    text: str | None


_NAME_KEYS = ("function", "name", "tool", "tool_name")
_ARG_KEYS = ("arguments", "parameters", "args", "input", "params")
_LIST_KEYS = ("tool_calls", "function_calls", "calls", "functions")
_BARE_KEYS = frozenset({"function", "name", "tool", "tool_name", "type", "id"})


def _call_from_dict(
    d: dict[str, Any], known: Collection[str] | None, make_id: Callable[[], str]
) -> ToolCall | None:
    """A ToolCall if ``d`` has the shape of a function call, else None."""
    body = d
    fn = d.get("function")
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        body, name, via = fn, fn["name"], "function"  # OpenAI shape {"function": {"name", ...}}
    else:
        name, via = None, ""
        for k in _NAME_KEYS:
            if isinstance(d.get(k), str):
                name, via = d[k], k
                break
    if name is None or not name.strip():
        return None
    name = name.strip()
    arg_key = next((k for k in _ARG_KEYS if k in body), None)
    if arg_key is None:
        # Without an arguments key, only the protocol's own "function" key, or a tool we
        # offered, makes a dict a call: {"name": "Ada"} in prose is not one.
        is_call = (via == "function" and set(d) <= _BARE_KEYS) or (known is not None and name in known)
        if not is_call:
            return None
    raw = body.get(arg_key) if arg_key is not None else None
    call_id = d.get("id") if isinstance(d.get("id"), str) and d.get("id") else make_id()
    if isinstance(raw, str):
        parsed = parse_arguments(raw)
        return ToolCall(call_id, name, parsed.arguments, parsed.error, raw_arguments=raw)
    if raw is None or isinstance(raw, dict):
        parsed = parse_arguments(raw)
        return ToolCall(call_id, name, parsed.arguments, parsed.error)
    return ToolCall(
        call_id, name, None, f"the arguments must be a JSON object, got {_type_name(raw)}"
    )


def _calls_from_value(
    v: Any, known: Collection[str] | None, make_id: Callable[[], str]
) -> list[ToolCall] | None:
    if isinstance(v, list):
        if not v:
            return None
        calls = [_call_from_dict(x, known, make_id) if isinstance(x, dict) else None for x in v]
        return None if any(c is None for c in calls) else calls  # type: ignore[return-value]
    if not isinstance(v, dict):
        return None
    for k in _LIST_KEYS:
        if isinstance(v.get(k), list) and len(v) <= 2:
            return _calls_from_value(v[k], known, make_id)
    call = _call_from_dict(v, known, make_id)
    return [call] if call is not None else None


def parse_text_tool_calls(
    text: str | None,
    *,
    known: Collection[str] | None = None,
    only_known: bool = False,
    make_id: Callable[[], str] = new_call_id,
) -> TextToolCalls:
    """Find function calls written as JSON in a completion's text.  Never raises.

    Args:
        text: the completion text.
        known: names of the tools offered.  A dict with a known name counts as a call even
            without an arguments key.
        only_known: drop calls to names not in ``known`` (used when scanning the text of a
            model that *has* native tool calling, to avoid mistaking prose for calls).
            When False, calls to unknown names are kept so the kernel can answer them
            with an "unknown function" error.
        make_id: supplies ids for calls that carry none.

    Returns:
        TextToolCalls(calls, remaining_text).
    """
    if not text:
        return TextToolCalls([], None)
    calls: list[ToolCall] = []
    spans: list[tuple[int, int]] = []
    n = len(text)
    i = 0
    while True:
        i = _next_open(text, i)
        if i < 0:
            break
        try:
            val, end, _ = _lenient_value(text, i, eof_closes=True)
        except _Fail:
            i += 1
            continue
        found = _calls_from_value(val, known, make_id)
        if found and only_known:
            found = [c for c in found if known is not None and c.name in known] or None
        if not found:
            i += 1
            continue
        calls.extend(found)
        spans.append((i, end))
        i = end
        if i >= n:
            break
    if not calls:
        return TextToolCalls([], text.strip() or None)
    return TextToolCalls(calls, _cut(text, spans))


def _next_open(text: str, i: int) -> int:
    a = text.find("{", i)
    b = text.find("[", i)
    if a < 0:
        return b
    if b < 0:
        return a
    return min(a, b)


def _cut(text: str, spans: list[tuple[int, int]]) -> str | None:
    """Remove the call spans, and whole code fences that hold nothing but calls."""
    # Fences are looked for with the calls masked out, so a "```" inside a string
    # argument is not taken for one.
    masked = list(text.replace("\0", "\1"))
    for a, b in spans:
        masked[a:b] = "\0" * (b - a)
    cuts = list(spans)
    for m in _FENCE.finditer("".join(masked)):
        inner = m.group(1)
        if "\0" in inner and not inner.strip(" \t\r\n\0"):
            cuts.append(m.span())
    cuts.sort()
    pieces: list[str] = []
    pos = 0
    for a, b in cuts:
        if a > pos:
            pieces.append(text[pos:a])
        pos = max(pos, b)
    pieces.append(text[pos:])
    # Join the pieces, tidying whitespace only where something was cut out.
    rest = pieces[0]
    for piece in pieces[1:]:
        left, right = rest.rstrip(), piece.lstrip()
        gap = rest[len(left):] + piece[: len(piece) - len(right)]
        if not left or not right:
            sep = ""
        elif "\n" in gap:
            sep = "\n\n" if gap.count("\n") >= 2 else "\n"
        else:
            sep = " "
        rest = left + sep + right
    return rest.strip() or None


# --------------------------------------------------------------------------- the protocol


def render_call(name: str, arguments: dict[str, Any] | None, *, fenced: bool = True) -> str:
    """One call written in the text protocol: ``{"function": name, "arguments": {...}}``,
    inside a ```json fence unless ``fenced`` is False."""
    body = json.dumps({"function": name, "arguments": arguments or {}}, ensure_ascii=False)
    return f"```json\n{body}\n```" if fenced else body


def _describe_type(schema: dict[str, Any]) -> str:
    if "enum" in schema and isinstance(schema["enum"], list):
        return "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    t = schema.get("type")
    if isinstance(t, list):
        return " or ".join(str(x) for x in t)
    if t == "array" and isinstance(schema.get("items"), dict):
        return f"array of {_describe_type(schema['items'])}"
    if t == "object" and "properties" in schema:
        return "object " + json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    if isinstance(t, str):
        return t
    if "anyOf" in schema or "oneOf" in schema:
        return " or ".join(_describe_type(s) for s in schema.get("anyOf", schema.get("oneOf", [])))
    return "any"


def _describe_tool(tool: Tool) -> str:
    fn = tool.get("function", tool)
    name = fn.get("name", "?")
    lines = [f"### {name}"]
    if fn.get("description"):
        lines.append(str(fn["description"]).strip())
    params = fn.get("parameters") or {}
    props: dict[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or ())
    if props:
        lines.append("Arguments:")
        for pname, pschema in props.items():
            pschema = pschema if isinstance(pschema, dict) else {}
            need = "required" if pname in required else "optional"
            desc = f": {pschema['description']}" if pschema.get("description") else ""
            lines.append(f"- {pname} ({_describe_type(pschema)}, {need}){desc}")
    else:
        lines.append("Arguments: none.")
    return "\n".join(lines)


def tool_protocol_prompt(tools: Sequence[Tool]) -> str:
    """The system-prompt section that teaches a model without native tool calling how to
    call functions (JSON in a fenced block), followed by one entry per tool, generated from
    the tool schemas (name, description, each argument's type, whether it is required)."""
    example = render_call("function_name", {"argument_name": "value"})
    parts = [
        "# Calling functions",
        "To call a function, write a JSON object of exactly this form in a ```json code block:",
        example,
        "Use valid JSON: double quotes around every key and string, true/false/null in "
        "lowercase, no trailing commas. To call several functions, write one block per call, "
        "in the order they should run. Text outside the blocks is kept as your own message. "
        "The results come back in messages that begin with \"Function result\".",
        "# Available functions",
    ]
    parts.extend(_describe_tool(t) for t in tools)
    return "\n\n".join(parts)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def to_text_protocol(messages: Iterable[Message], tools: Sequence[Tool]) -> list[Message]:
    """Rewrite a chat history for a model without native tool calling.

    * the protocol prompt (:func:`tool_protocol_prompt`) is appended to the first system
      message, or a system message holding it is put first (only when there are tools);
    * an assistant message's ``tool_calls`` become fenced JSON calls in its content;
    * ``tool`` (and legacy ``function``) results become ``user`` messages that begin with
      ``Function result``, naming the function and call id;
    * adjacent ``user`` (or ``assistant``) messages with text content are merged, since
      many local chat templates insist that the roles alternate.

    The input is not modified.
    """
    out: list[Message] = []
    names: dict[str, str] = {}
    for msg in messages:
        role = msg.get("role")
        if role == "assistant" and msg.get("tool_calls"):
            chunks = [_content_text(msg.get("content"))] if msg.get("content") else []
            for tc in msg["tool_calls"]:
                fn = tc.get("function") or {}
                name = str(fn.get("name", ""))
                names[str(tc.get("id", ""))] = name
                parsed = parse_arguments(fn.get("arguments"))
                if parsed.arguments is not None:
                    chunks.append(render_call(name, parsed.arguments))
                else:  # show the model what it wrote, verbatim
                    raw = fn.get("arguments")
                    chunks.append(f'```json\n{{"function": {json.dumps(name)}, "arguments": {raw}}}\n```')
            out.append({"role": "assistant", "content": "\n\n".join(chunks)})
        elif role in ("tool", "function"):
            call_id = str(msg.get("tool_call_id", ""))
            name = msg.get("name") or names.get(call_id, "")
            head = f"Function result ({name}" + (f", call {call_id}" if call_id else "") + "):"
            out.append({"role": "user", "content": f"{head}\n{_content_text(msg.get('content'))}"})
        else:
            out.append({k: v for k, v in msg.items() if k not in ("tool_calls", "function_call")})
    out = _merge_adjacent(out)
    if tools:
        prompt = tool_protocol_prompt(tools)
        if out and out[0].get("role") == "system":
            first = dict(out[0])
            first["content"] = f"{_content_text(first.get('content'))}\n\n{prompt}".lstrip()
            out[0] = first
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _merge_adjacent(messages: list[Message]) -> list[Message]:
    merged: list[Message] = []
    for msg in messages:
        prev = merged[-1] if merged else None
        if (
            prev is not None
            and msg.get("role") in ("user", "assistant")
            and prev.get("role") == msg.get("role")
            and set(prev) == {"role", "content"} == set(msg)
            and isinstance(prev.get("content"), str)
            and isinstance(msg.get("content"), str)
        ):
            merged[-1] = {"role": prev["role"], "content": f"{prev['content']}\n\n{msg['content']}"}
        else:
            merged.append(msg)
    return merged
