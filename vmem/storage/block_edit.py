"""An edit to a block's text that keeps its meaning when another writer got there first.

A block several agents share is edited concurrently; an edit is therefore recorded as what
it does, not as the value it produced, and applied to the value that is current when it
commits (a compare-and-set on the block's version, re-applied to the fresh value when the
version moved). Each kind states what it means under a race:

``append``   add ``text`` at the end (on its own line). Always applies.
``replace``  replace ``old`` by ``text``; ``old`` must occur exactly once in the value the edit
             meets, else the edit conflicts (it never replaces text it did not see).
``insert``   insert ``text`` after line ``line`` (-1: at the end); conflicts if the value no
             longer has that line.
``rewrite``  set the whole value to ``text``; with a ``base`` (the value the writer saw) it
             applies only while the value is still ``base``, so a rewrite never drops a
             change it did not see (Letta's shared blocks keep the last writer's value);
             without one it is the developer's unconditional set.

Interface::

    from vmem.storage.block_edit import BlockEdit
    edit = BlockEdit.append("Ana moved to Lyon")
    new_value = edit.apply(current_value)      # EditConflictError if it cannot apply
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from vmem.storage.errors import EditConflictError
from vmem.text import clean_text

__all__ = ["BlockEdit", "EditKind"]

EditKind = Literal["append", "replace", "insert", "rewrite"]
_KINDS = ("append", "replace", "insert", "rewrite")


@dataclass(frozen=True)
class BlockEdit:
    """One edit of a block's value (see the module docstring for what each kind means). Its
    texts are made storable as UTF-8 (a lone surrogate becomes U+FFFD, as in messages)."""

    kind: EditKind
    text: str = ""
    old: str = ""
    line: int = -1
    base: str | None = None

    def __post_init__(self) -> None:
        for name in ("text", "old") + (("base",) if self.base is not None else ()):  # storable as UTF-8
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"a block edit's {name} must be a str, got {type(value).__name__}")
            object.__setattr__(self, name, clean_text(value))
        if not isinstance(self.line, int) or isinstance(self.line, bool):
            raise TypeError(f"a block edit's line must be an int, got {type(self.line).__name__}")
        if self.kind not in _KINDS:
            raise ValueError(f"edit kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if self.kind == "replace" and not self.old:
            raise ValueError("a replace edit needs the old text it replaces")

    @classmethod
    def append(cls, text: str) -> BlockEdit:
        """Add ``text`` at the end of the value, on its own line."""
        return cls("append", text)

    @classmethod
    def replace(cls, old: str, new: str) -> BlockEdit:
        """Replace the one occurrence of ``old`` by ``new``."""
        return cls("replace", new, old=old)

    @classmethod
    def insert(cls, text: str, line: int = -1) -> BlockEdit:
        """Insert ``text`` after line ``line`` (0: before the first line; -1: at the end)."""
        return cls("insert", text, line=line)

    @classmethod
    def rewrite(cls, value: str, base: str | None = None) -> BlockEdit:
        """Set the whole value; with ``base``, only while the value is still ``base``."""
        return cls("rewrite", value, base=base)

    def apply(self, value: str, *, label: str = "block") -> str:
        """The value after this edit (EditConflictError if it cannot apply to ``value``)."""
        if self.kind == "append":
            return f"{value}\n{self.text}" if value else self.text
        if self.kind == "replace":
            n = value.count(self.old)
            if n != 1:
                raise EditConflictError(f"the old text occurs {n} times in {label}; it must occur exactly once "
                                        f"(give more of the surrounding text)" if n else
                                        f"the old text does not occur in {label}")
            return value.replace(self.old, self.text)
        if self.kind == "insert":
            lines = value.split("\n") if value else []
            at = len(lines) if self.line == -1 else self.line
            if not 0 <= at <= len(lines):
                raise EditConflictError(f"line must be -1 or between 0 and {len(lines)} for {label}")
            lines.insert(at, self.text)
            return "\n".join(lines)
        if self.base is not None and value != self.base:
            raise EditConflictError(f"{label} changed since it was read (another writer edited it); "
                                    f"read it again and rewrite the new value")
        return self.text

    def to_dict(self) -> dict[str, Any]:
        """A plain form (msgpack, JSON): the inverse of :meth:`from_dict`."""
        return {"kind": self.kind, "text": self.text, "old": self.old, "line": self.line, "base": self.base}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockEdit:
        """An edit from :meth:`to_dict`'s form."""
        return cls(d["kind"], d.get("text", ""), old=d.get("old", ""), line=int(d.get("line", -1)),
                   base=d.get("base"))
