"""The text tool protocol: function calls written as JSON in the text of a model without
native tool calling, and the prompt that teaches it.

* :func:`parse_text_tool_calls` finds function calls written as JSON in a completion's text:
  ``{"function": NAME, "arguments": {...}}`` (the protocol this module teaches), and the
  common variants (``name``/``parameters``/``args``, the OpenAI ``{"function": {"name",
  "arguments"}}`` shape, lists of calls, ``{"tool_calls": [...]}``), fenced or bare,
  several per text; and, for the tools offered (``known``), a call written as a tag with its
  arguments as attributes (``<core_memory_append label="human" content="..."/>``) or child
  elements (``<core_memory_append><label>human</label>...</core_memory_append>``, or
  ``<function><name>core_memory_append</name><arguments>...</arguments></function>``), read only
  where the text holds no JSON call.  The text outside the calls is returned too: it is the
  model's own message.  The JSON is read leniently (:mod:`vmem.kernel.drivers.lenient_json`).
* :func:`tool_protocol_prompt` writes the system-prompt section that teaches a model that
  protocol and lists the tools from their schemas; :func:`to_text_protocol` rewrites a
  chat history that contains native tool calls and tool results into plain messages a
  no-tools model (and its chat template) accepts.

Interface::

    from vmem.kernel.drivers.toolcalls import parse_text_tool_calls, tool_protocol_prompt, to_text_protocol
    found = parse_text_tool_calls(text, names)     # TextToolCalls(calls, text, errors)
    system += tool_protocol_prompt(tools)
    messages = to_text_protocol(messages, tools)

Nothing here raises on bad model output: every entry point returns an error value instead.
"""
from __future__ import annotations

import html
import json
import re
import secrets
from typing import Any, Callable, Collection, Iterable, NamedTuple, Sequence

from .base import Message, Tool, ToolCall
from .lenient_json import (DEEP, MAX_DEPTH, _FENCE, _Fail, _lenient_value, _type_name, parse_arguments,
                           parse_first_object, text_too_deep, too_deep)

__all__ = [
    "MAX_DEPTH",
    "TextToolCalls",
    "checked_call",
    "text_too_deep",
    "too_deep",
    "new_call_id",
    "parse_first_object",
    "parse_text_tool_calls",
    "render_call",
    "to_text_protocol",
    "tool_protocol_prompt",
]

def checked_call(call: ToolCall) -> ToolCall:
    """``call``, or the same call answered as unparseable when a driver handed over arguments
    nested deeper than :data:`MAX_DEPTH` or that JSON cannot hold."""
    if call.arguments is None:
        return call
    if too_deep(call.arguments):
        return ToolCall(call.id, call.name, None, DEEP, call.raw_arguments)
    try:
        json.dumps(call.arguments, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return ToolCall(call.id, call.name, None, f"the arguments are not JSON ({type(exc).__name__}: "
                        f"{str(exc)[:200]})", call.raw_arguments)
    return call


def new_call_id() -> str:
    """A fresh tool-call id in OpenAI's style (``call_`` + 24 hex digits)."""
    return "call_" + secrets.token_hex(12)


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
    given_id = d.get("id")
    call_id = given_id if isinstance(given_id, str) and given_id else make_id()
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
    if not calls and known:
        calls, spans = _tag_calls(text, known, make_id)
    if not calls:
        return TextToolCalls([], text.strip() or None)
    return TextToolCalls(calls, _cut(text, spans))


#: ``<name a="1" b='x'/>``, or ``<name a="1">...</name>``: a call written as a tag with its arguments
#: as attributes (Qwen2.5-Coder-1.5B wrote its calls so in a context full of ``<core_memory>``-style
#: tags), or as child elements: ``<name><a>1</a><b>x</b></name>`` (the same model, asked through the
#: Agents SDK with a few-shot prompt).
_TAG = re.compile(r"<([A-Za-z_][\w.-]*)((?:\s+[A-Za-z_][\w-]*\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*(/?)>")
_ATTR = re.compile(r"([A-Za-z_][\w-]*)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_CHILD = re.compile(r"\s*<([A-Za-z_][\w-]*)>([^<]*)</\1>\s*")
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


def _tag_value(raw: str) -> Any:
    raw = html.unescape(raw)
    return _LITERALS[raw] if raw in _LITERALS else raw


def _children(text: str, start: int, end: int) -> dict[str, Any] | None:
    """``text[start:end]``, ``<a>1</a><b>x</b>`` (whitespace between), as arguments; None when it is
    anything else: text, or an element holding elements."""
    arguments: dict[str, Any] = {}
    pos = start
    while pos < end:
        m = _CHILD.match(text, pos, end)
        if m is None or m.end() == pos:
            return None
        arguments[m.group(1)] = _tag_value(m.group(2).strip())
        pos = m.end()
    return arguments or None


def _past_space(text: str, start: int, end: int | None = None) -> int:
    """Where the whitespace at ``start`` ends (before ``end``)."""
    m = _SPACE.match(text, start, len(text) if end is None else end)
    return start if m is None else m.end()


def _blank(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is only whitespace (without copying it)."""
    return _past_space(text, start, end) == end


class _Closes:
    """Where a closing tag next occurs at or after a position, for positions that only grow (a
    scan in text order): each tag's text is searched once per occurrence, so a text of many
    openings and no close costs linear time, not one search to the end per opening."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.found: dict[str, int] = {}

    def after(self, tag: str, pos: int) -> int:
        at = self.found.get(tag)
        if at is None or 0 <= at < pos:
            at = self.text.find(tag, pos)
            self.found[tag] = at
        return at


#: ``<function><name>N</name><arguments><a>1</a></arguments></function>`` (``tool_call``, ``invoke``;
#: ``parameters``): the name and the arguments as elements (Qwen2.5-Coder-1.5B, as above), and the
#: list element around such calls (``<tools>...</tools>``), cut with them.
_NAMED = re.compile(r"<(function|tool_call|tool|invoke|call)>\s*<name>\s*([A-Za-z_][\w.-]*)\s*</name>\s*"
                    r"<(arguments|parameters|args)>")
_SPACE = re.compile(r"\s*")
_LIST_OPEN = re.compile(r"<(tools|tool_calls|function_calls)>\s*$")


def _named_calls(text: str, known: Collection[str],
                 make_id: Callable[[], str]) -> tuple[list[ToolCall], list[tuple[int, int]]]:
    calls: list[ToolCall] = []
    spans: list[tuple[int, int]] = []
    closes = _Closes(text)
    for m in _NAMED.finditer(text):
        if m.group(2) not in known or (spans and m.start() < spans[-1][1]):
            continue
        shut = closes.after(f"</{m.group(3)}>", m.end())
        if shut < 0:
            continue
        arguments = {} if _blank(text, m.end(), shut) else _children(text, m.end(), shut)
        after = _past_space(text, shut + len(m.group(3)) + 3)
        outer = f"</{m.group(1)}>"
        if arguments is None or not text.startswith(outer, after):
            continue
        calls.append(ToolCall(make_id(), m.group(2), arguments, None))
        spans.append((m.start(), after + len(outer)))
    if spans:  # the list element around the calls, when it holds nothing else
        head = _LIST_OPEN.search(text, 0, spans[0][0])
        if head is not None:
            close = re.compile(rf"\s*</{head.group(1)}>").match(text, spans[-1][1])
            between = all(not text[a:b].strip() for (_, a), (b, _) in zip(spans, spans[1:]))
            if close is not None and between:
                spans[0] = (head.start(), spans[0][1])
                spans[-1] = (spans[-1][0], close.end())
    return calls, spans


def _tag_calls(text: str, known: Collection[str],
               make_id: Callable[[], str]) -> tuple[list[ToolCall], list[tuple[int, int]]]:
    """Calls of ``known`` functions written as tags, their arguments as attributes or as child
    elements holding text (``"true"``, ``"false"`` and ``"null"`` read as JSON literals, every other
    value a string), and their spans. A tag of an unknown name, or one with neither attributes nor
    child elements, is not a call: HTML and ``<core_memory>`` in prose stay prose; so is an element
    whose text is prose (``<send_message>hi</send_message>``)."""
    calls, spans = _named_calls(text, known, make_id)
    if calls:
        return calls, spans
    closes = _Closes(text)
    for m in _TAG.finditer(text):
        name, attrs, closed = m.group(1), m.group(2), m.group(3)
        if name not in known or (spans and m.start() < spans[-1][1]):
            continue
        end = m.end()
        arguments: dict[str, Any] = {}
        for a in _ATTR.finditer(attrs):
            arguments[a.group(1)] = _tag_value(a.group(2) if a.group(2) is not None else a.group(3))
        if not closed:  # <name ...>...</name>: empty, or its arguments as child elements; its close is cut
            close = closes.after(f"</{name}>", end)
            if close < 0:
                continue
            if not _blank(text, end, close):
                children = _children(text, end, close)
                if children is None:
                    continue
                arguments.update(children)
            end = close + len(f"</{name}>")
        if not arguments:
            continue
        calls.append(ToolCall(make_id(), name, arguments, None))
        spans.append((m.start(), end))
    return calls, spans


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
