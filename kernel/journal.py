"""The core's journal: its operations logged between snapshots, so a commit writes what changed.

The C core is deterministic: the same operations on the same state give the same state, seq
counters and admission choices included. So instead of rewriting the core's whole snapshot at
every commit (about 70 KB for a 2,000-message queue), the kernel appends the operations of
the transaction to the store's journal (a few hundred bytes a step) and folds them into a new
snapshot now and then (:data:`FOLD_ENTRIES` entries, or :data:`FOLD_BYTES` bytes). Opening
restores the snapshot and replays the journal.

:class:`JournaledContext` is a :class:`vmem.PagedContext` that records each operation that
succeeds (a refused one changes nothing, so it is not recorded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from vmem import Admission, PagedContext, Policy, Region

__all__ = ["FOLD_BYTES", "FOLD_ENTRIES", "JournaledContext", "replay"]

FOLD_ENTRIES = 64  #: journal entries (commits) before the next commit saves a whole snapshot
FOLD_BYTES = 256 * 1024  #: or journal bytes


def _u64(ids: Any) -> bytes:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.uint64)).astype("<u8").tobytes()


def _f32(values: Any) -> bytes:
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32)).astype("<f4").tobytes()


class JournaledContext(PagedContext):
    """A PagedContext that records every operation that changed it, for :func:`replay`."""

    __slots__ = ("ops",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ops: list[list[Any]] = []
        super().__init__(*args, **kwargs)
        self.ops.clear()  # the construction is the snapshot's (or the create's) business

    def take_ops(self) -> list[list[Any]]:
        """The operations recorded since the last call (and forget them)."""
        ops, self.ops = self.ops, []
        return ops

    def configure(self, **changes: object) -> None:
        super().configure(**changes)
        self.ops.append(["configure", {k: int(v) if isinstance(v, (Policy, bool)) else v for k, v in changes.items()}])

    def add(self, page_id: int, tokens: int, region: Region = Region.OUT, *, pinned: bool = False,
            group: int = 0) -> None:
        super().add(page_id, tokens, region, pinned=pinned, group=group)
        self.ops.append(["add", int(page_id), int(tokens), int(region), bool(pinned), int(group)])

    def add_many(self, ids: Sequence[int] | np.ndarray, tokens: Sequence[int] | np.ndarray,
                 region: Region = Region.OUT) -> None:
        super().add_many(ids, tokens, region)
        self.ops.append(["add_many", _u64(ids), np.asarray(tokens, dtype=np.uint32).astype("<u4").tobytes(),
                         int(region)])

    def remove(self, page_id: int) -> None:
        super().remove(page_id)
        self.ops.append(["remove", int(page_id)])

    def remove_many(self, ids: Sequence[int] | np.ndarray) -> None:
        super().remove_many(ids)
        self.ops.append(["remove_many", _u64(ids)])

    def move(self, page_id: int, region: Region) -> None:
        super().move(page_id, region)
        self.ops.append(["move", int(page_id), int(region)])

    def move_many(self, ids: Sequence[int] | np.ndarray, region: Region) -> None:
        super().move_many(ids, region)
        self.ops.append(["move_many", _u64(ids), int(region)])

    def resize(self, page_id: int, tokens: int) -> None:
        super().resize(page_id, tokens)
        self.ops.append(["resize", int(page_id), int(tokens)])

    def pin(self, page_id: int, pinned: bool = True) -> None:
        super().pin(page_id, pinned)
        self.ops.append(["pin", int(page_id), bool(pinned)])

    def touch(self, page_id: int) -> None:
        super().touch(page_id)
        self.ops.append(["touch", int(page_id)])

    def admit(self, ids: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> Admission:
        result = super().admit(ids, scores)
        self.ops.append(["admit", _u64(ids), _f32(scores)])
        return result


def pack(ops: list[list[Any]]) -> bytes:
    """One journal entry."""
    entry: bytes = msgpack.packb(ops, use_bin_type=True)
    return entry


def replay(ctx: PagedContext, entries: Sequence[bytes]) -> None:
    """Apply journal entries to ``ctx`` (restored from the snapshot they follow), in order."""
    apply = PagedContext  # the plain methods: a replay is not recorded again
    for entry in entries:
        for op in msgpack.unpackb(entry, raw=False, strict_map_key=False):
            name, args = op[0], op[1:]
            if name == "configure":
                changes = dict(args[0])
                if "policy" in changes:
                    changes["policy"] = Policy(changes["policy"])
                apply.configure(ctx, **changes)
            elif name == "add":
                page, tokens, region, pinned, group = args
                apply.add(ctx, page, tokens, Region(region), pinned=pinned, group=group)
            elif name == "add_many":
                apply.add_many(ctx, np.frombuffer(args[0], "<u8"), np.frombuffer(args[1], "<u4"), Region(args[2]))
            elif name == "remove":
                apply.remove(ctx, args[0])
            elif name == "remove_many":
                apply.remove_many(ctx, np.frombuffer(args[0], "<u8"))
            elif name == "move":
                apply.move(ctx, args[0], Region(args[1]))
            elif name == "move_many":
                apply.move_many(ctx, np.frombuffer(args[0], "<u8"), Region(args[1]))
            elif name == "resize":
                apply.resize(ctx, args[0], args[1])
            elif name == "pin":
                apply.pin(ctx, args[0], args[1])
            elif name == "touch":
                apply.touch(ctx, args[0])
            elif name == "admit":
                apply.admit(ctx, np.frombuffer(args[0], "<u8"), np.frombuffer(args[1], "<f4"))
            else:
                raise ValueError(f"the core's journal holds an unknown operation {name!r}")
