"""Splitting long texts into archival passages.

A passage is the unit archival storage embeds, deduplicates and returns, so it
must be bounded: :func:`split_passages` cuts a text on paragraph boundaries
first, then sentence boundaries, then spaces, and only as a last resort inside
a word, and packs consecutive pieces greedily up to ``max_chars``. Whitespace
inside a paragraph is kept; paragraphs packed together are joined by a blank
line. Every non-space character of the input appears, in order, in the output.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_CHARS", "split_passages"]

#: Default passage bound: about 300 tokens of English at ~4 characters a token.
DEFAULT_MAX_CHARS = 1200

_PARA = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# a sentence ends with . ! ? or an ellipsis, maybe followed by closing quotes/brackets, then space
_SENT = re.compile(r"(?<=[.!?\u2026])[\"'\u201d\u2019)\]]*\s+")
_SPACE = re.compile(r"\s+")


def _pieces(text: str, max_chars: int, pattern: re.Pattern[str], finer: list[re.Pattern[str]]) -> list[tuple[str, str]]:
    """Cut ``text`` at ``pattern`` into (separator, piece) pairs, each piece <= max_chars."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in list(pattern.finditer(text)) + [None]:
        end = m.start() if m is not None else len(text)
        # keep closing quotes/brackets with the sentence they close
        if m is not None and pattern is _SENT:
            ws = re.search(r"\s+$", m.group(0))
            end = m.start() + (ws.start() if ws else 0)
        piece = text[pos:end]
        sep = "\n\n" if pattern is _PARA else " "
        if piece.strip():
            if len(piece) <= max_chars:
                out.append((sep, piece))
            elif finer:
                out.extend(_pieces(piece, max_chars, finer[0], finer[1:]))
            else:  # a single "word" longer than the bound: hard cut
                out.extend((sep if i == 0 else "", piece[i : i + max_chars]) for i in range(0, len(piece), max_chars))
        pos = m.end() if m is not None else len(text)
    return out


def split_passages(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Split ``text`` into passages of at most ``max_chars`` characters.

    Returns ``[text.strip()]`` when it already fits; never returns an empty
    passage. Raises ValueError for a text with no visible character or a
    ``max_chars`` below 16.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if not isinstance(max_chars, int) or max_chars < 16:
        raise ValueError(f"max_chars must be an int >= 16, got {max_chars!r}")
    body = text.strip()
    if not body:
        raise ValueError("cannot store an empty passage")
    if len(body) <= max_chars:
        return [body]
    paragraphs = _pieces(body.replace("\r\n", "\n"), max_chars, _PARA, [_SENT, _SPACE])
    out: list[str] = []
    cur = ""
    for sep, piece in paragraphs:
        piece = piece.strip() if sep else piece  # hard-cut continuations keep their characters
        if not piece:
            continue
        if not cur:
            cur = piece
        elif len(cur) + len(sep) + len(piece) <= max_chars:
            cur += sep + piece
        else:
            out.append(cur.strip())
            cur = piece
    if cur.strip():
        out.append(cur.strip())
    return out
