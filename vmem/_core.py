"""The Python face of the C core's page table (``csrc/vm.c``).

``PagedContext`` owns one ``vm_t`` (freed by ``ffi.gc``). The ``vm_*`` return codes
become exceptions in one place, :func:`_raise`. Two other private modules use the same
extension's ffi, each for its own C file and with its own ``_raise`` where it has return
codes: :mod:`vmem._textindex` (``csrc/ii.c``, the inverted index), :mod:`vmem._fhash`
(``csrc/fhash.c``, keyed hashing, which cannot fail), :mod:`vmem._half` (``csrc/half.c``, float16
vectors widened) and :mod:`vmem._hnswlinks` (``csrc/hnswlinks.c``, hnswlib's link lists walked). Page-id batches cross the boundary as
numpy arrays, never as Python lists per element.

Thread safety: every method takes the instance's lock, so one PagedContext may
be shared between threads (calls are serialised); separate instances never
contend. The lock is not held across calls, so a sequence of calls (status,
then plan, then move) is not atomic: hold your own lock around such a sequence
if other threads mutate the same context meanwhile (the kernel does).
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple, Sequence, TypeVar

import msgpack
import numpy as np

try:
    from vmem._vmcore import ffi, lib  # the C core, built by setup.py (no fallback)
except ImportError as _exc:  # e.g. `import vmem` in a source checkout after a non-editable install
    _missing = isinstance(_exc, ModuleNotFoundError) and _exc.name == "vmem._vmcore"
    _error = ImportError(
        f"vmem's C core is not built in {__file__.rsplit('/', 1)[0]}: this looks like a source checkout (run "
        f"from another directory to use the installed vmem, or `pip install -e .` to build the core here)"
        if _missing else f"vmem's C core failed to load: {_exc}"
    )
    # a core that is simply absent needs no second traceback; one that fails to load keeps its cause
    raise _error from (None if _missing else _exc)
from vmem.errors import (
    BudgetError,
    CorruptSnapshot,
    EvictionError,
    InvalidArgument,
    InvariantError,
    PageExists,
    PageNotFound,
)

__all__ = [
    "Region",
    "State",
    "Policy",
    "Config",
    "PageInfo",
    "Stats",
    "Status",
    "EvictionPlan",
    "Admission",
    "PagedContext",
    "estimate_tokens",
    "estimate_tokens_many",
    "MAX_PAGE_TOKENS",
    "MAX_CANDIDATES",
    "DEBUG_BUILD",
]

_Context = TypeVar("_Context", bound="PagedContext")

MAX_PAGE_TOKENS: int = lib.VM_MAX_PAGE_TOKENS
MAX_CANDIDATES: int = lib.VM_MAX_CANDIDATES
#: The loaded core is a debug build (``VMEM_CORE_DEBUG=1`` at build time, see
#: csrc/build_vmcore.py): every change to a page table checks every invariant, and a
#: broken one aborts the process. For tests; O(pages) per change.
DEBUG_BUILD: bool = bool(lib.vm_debug_build())
_SNAPSHOT_FORMAT = "vmem.core"
_SNAPSHOT_VERSION = 1


class Region(enum.IntEnum):
    """Where a page is. Resident regions are listed in context order."""

    OUT = lib.VM_OUT  #: not resident: in recall or archival storage
    SYSTEM = lib.VM_SYSTEM  #: system instructions, memory statistics, alerts
    CORE = lib.VM_CORE  #: core memory blocks
    SUMMARY = lib.VM_SUMMARY  #: the recursive summary
    QUEUE = lib.VM_QUEUE  #: the FIFO message queue
    WORKSET = lib.VM_WORKSET  #: pages paged in by lookups


class State(enum.IntEnum):
    """Memory pressure."""

    OK = lib.VM_STATE_OK
    WARN = lib.VM_STATE_WARN  #: above the warning watermark
    OVER = lib.VM_STATE_OVER  #: above the flush watermark: evict


class Policy(enum.IntEnum):
    """Working-set eviction policy (one score each; higher = evict first)."""

    LRU = lib.VM_LRU  #: least recently touched first
    LFU = lib.VM_LFU  #: fewest touches first, then least recently touched


@dataclass(frozen=True)
class Config:
    """The core's configuration. ``budget = window - reserve``."""

    window: int
    reserve: int
    warn: float = 0.70
    flush: float = 1.00
    target: float = 0.50
    keep_last: int = 3
    policy: Policy = Policy.LRU
    ws_budget: int = 0

    @property
    def budget(self) -> int:
        return self.window - self.reserve


@dataclass(frozen=True)
class PageInfo:
    """One page's record in the page table."""

    id: int
    tokens: int
    region: Region
    pinned: bool
    group: int
    last_touch: int
    touches: int


@dataclass(frozen=True)
class Stats:
    """Per-region accounting (``tokens[Region.OUT]`` is what lives in storage)."""

    tokens: Mapping[Region, int]
    pages: Mapping[Region, int]
    used: int
    budget: int
    pinned: int
    seq: int


@dataclass(frozen=True)
class Status:
    """Memory pressure and how many tokens to free (see :meth:`PagedContext.status`)."""

    state: State
    need: int
    used: int
    budget: int


class EvictionPlan(NamedTuple):
    """Queue pages to evict, oldest first, and the tokens they free."""

    ids: np.ndarray
    freed: int


class Admission(NamedTuple):
    """What a page-in admitted into the working set and what it evicted (coldest first).

    The two are disjoint: a page evicted for an earlier candidate and taken back
    by a later one in the same call was resident before and after, so it is in
    neither.
    """

    admitted: np.ndarray
    evicted: np.ndarray


_ERRORS = {
    lib.VM_ENOENT: PageNotFound,
    lib.VM_EEXIST: PageExists,
    lib.VM_EINVAL: InvalidArgument,
    lib.VM_ENOSPACE: EvictionError,
    lib.VM_EBUDGET: BudgetError,
    lib.VM_ECORRUPT: CorruptSnapshot,
    lib.VM_ECHECK: InvariantError,
}


def _raise(vm, rc: int) -> None:
    """Turn a ``vm_*`` return code into an exception: the one place this happens."""
    message = ffi.string(lib.vm_errmsg(vm)).decode("utf-8", "replace")
    if rc == lib.VM_ENOMEM:
        raise MemoryError(message)
    raise _ERRORS.get(rc, InvalidArgument)(message)


def _call(vm, what: str, fn, *args) -> None:
    """Call a core function; cffi's conversion errors (negative or oversize ints,
    wrong types) become InvalidArgument and nonzero return codes exceptions."""
    try:
        rc = fn(vm, *args)
    except (TypeError, OverflowError) as exc:
        raise InvalidArgument(f"{what}: {exc}") from None
    if rc:
        _raise(vm, rc)


def _u64(value: int, what: str = "page id") -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise InvalidArgument(f"{what} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < 1 << 64:
        raise InvalidArgument(f"{what} {value} is outside 0..2**64-1")
    return value


def _ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    if type(ids) is np.ndarray and ids.dtype == np.uint64 and ids.ndim == 1 and ids.flags.c_contiguous:
        return ids  # the fast path: already what the core takes
    array = np.asarray(ids)
    if array.dtype != np.uint64:
        if array.size and (array.dtype.kind not in "iu" or array.min() < 0):
            raise InvalidArgument("page ids must be non-negative integers")
        array = array.astype(np.uint64)
    return np.ascontiguousarray(array.reshape(-1))


_REGIONS = tuple(Region)


class PagedContext:
    """The main context as a paged buffer: page table, regions and token budget.

    Pages are registered by 64-bit id with a token count (counted once, when
    the page is made), then moved between regions as the kernel compiles,
    evicts and pages in. All accounting is O(1) per move and happens in C.

    >>> ctx = PagedContext(window=1000, reserve=100, ws_budget=200)
    >>> ctx.add(1, 50, Region.SYSTEM, pinned=True)
    >>> ctx.status().state
    <State.OK: 0>
    """

    __slots__ = ("_vm", "_lock", "_admitted", "_evicted", "_admitted_p", "_evicted_p", "_na", "_ne", "_config",
                 "_stats")

    def __init__(
        self,
        window: int = 8192,
        reserve: int = 1024,
        *,
        warn: float = 0.70,
        flush: float = 1.00,
        target: float = 0.50,
        keep_last: int = 3,
        policy: Policy = Policy.LRU,
        ws_budget: int | None = None,
    ) -> None:
        vm = lib.vm_new()
        if vm == ffi.NULL:
            raise MemoryError("vm_new: out of memory")
        self._vm = ffi.gc(vm, lib.vm_free)
        self._lock = threading.Lock()
        self._config: Config | None = None  # cached until configure(), restore() or copy_from()
        self._stats = ffi.new("vm_stats *")  # reused by stats() and status() (under the lock)
        # admission's out-parameters, reused by every call (under the lock)
        self._na = ffi.new("size_t *")
        self._ne = ffi.new("size_t *")
        self._grow_admission_buffers(64, 64)
        if ws_budget is None:
            ws_budget = max(0, (window - reserve) // 8)
        self.configure(
            window=window, reserve=reserve, warn=warn, flush=flush, target=target,
            keep_last=keep_last, policy=policy, ws_budget=ws_budget,
        )

    # ------------------------------------------------------------ configuration

    @property
    def config(self) -> Config:
        """The current configuration."""
        config = self._config
        if config is None:
            c = ffi.new("vm_config *")
            with self._lock:
                lib.vm_get_config(self._vm, c)
            config = self._config = Config(c.window, c.reserve, c.warn, c.flush, c.target, c.keep_last,
                                           Policy(c.policy), c.ws_budget)
        return config

    def configure(self, **changes: object) -> None:
        """Change any of the :class:`Config` fields, all or nothing.

        Raises InvalidArgument for out-of-range values and BudgetError when the
        new budget cannot hold the pinned pages or the working set.
        """
        unknown = set(changes) - set(Config.__dataclass_fields__)
        if unknown:
            raise InvalidArgument(f"unknown configuration fields: {sorted(unknown)}")
        c = ffi.new("vm_config *")
        with self._lock:
            lib.vm_get_config(self._vm, c)
            try:
                for name, value in changes.items():
                    setattr(c, name, value)
            except (TypeError, OverflowError) as exc:
                raise InvalidArgument(f"configure: {exc}") from None
            self._config = None
            rc = lib.vm_configure(self._vm, c)
            if rc:
                _raise(self._vm, rc)

    # ------------------------------------------------------------ pages

    def add(self, page_id: int, tokens: int, region: Region = Region.OUT, *,
            pinned: bool = False, group: int = 0) -> None:
        """Register a page of ``tokens`` tokens in ``region`` (the queue appends at its tail).

        ``group`` ties consecutive queue pages into an atomic group (a tool call
        and its results) that eviction never splits; 0 means none.
        """
        with self._lock:
            _call(self._vm, "add: page id, token count, region and group must be in range",
                  lib.vm_add, page_id, tokens, region, 1 if pinned else 0, group)

    def add_many(self, ids: Sequence[int] | np.ndarray, tokens: Sequence[int] | np.ndarray,
                 region: Region = Region.OUT) -> None:
        """Register a batch of unpinned pages in one region, all or nothing."""
        ids = _ids(ids)
        tok = np.asarray(tokens)
        if tok.shape != ids.shape:
            raise InvalidArgument(f"{ids.size} ids but {tok.size} token counts")
        if tok.size and (tok.dtype.kind not in "iu" or tok.min() < 0 or tok.max() > MAX_PAGE_TOKENS):
            raise InvalidArgument(f"token counts must be integers in 0..{MAX_PAGE_TOKENS}")
        tok = np.ascontiguousarray(tok, dtype=np.uint32)
        with self._lock:
            rc = lib.vm_add_many(self._vm, ffi.from_buffer("uint64_t[]", ids),
                                 ffi.from_buffer("uint32_t[]", tok), ids.size, int(region))
            if rc:
                _raise(self._vm, rc)

    def remove(self, page_id: int) -> None:
        """Unregister a page."""
        with self._lock:
            _call(self._vm, "remove: page id", lib.vm_remove, page_id)

    def remove_many(self, ids: Sequence[int] | np.ndarray) -> None:
        """Unregister a batch of pages, all or nothing."""
        ids = _ids(ids)
        with self._lock:
            rc = lib.vm_remove_many(self._vm, ffi.from_buffer("uint64_t[]", ids), ids.size)
            if rc:
                _raise(self._vm, rc)

    def move(self, page_id: int, region: Region) -> None:
        """Move a page to ``region`` (to the queue's tail; into the working set as touched)."""
        with self._lock:
            _call(self._vm, "move: page id and region", lib.vm_move, page_id, region)

    def move_many(self, ids: Sequence[int] | np.ndarray, region: Region) -> None:
        """Move a batch of pages to ``region``, all or nothing (e.g. apply an eviction plan)."""
        ids = _ids(ids)
        with self._lock:
            rc = lib.vm_move_many(self._vm, ffi.from_buffer("uint64_t[]", ids), ids.size, int(region))
            if rc:
                _raise(self._vm, rc)

    def resize(self, page_id: int, tokens: int) -> None:
        """Change a page's token count (a block edited, a summary replaced)."""
        with self._lock:
            _call(self._vm, "resize: page id and token count", lib.vm_resize, page_id, tokens)

    def pin(self, page_id: int, pinned: bool = True) -> None:
        """Pin (or unpin) a page: pinned pages are never evicted."""
        with self._lock:
            _call(self._vm, "pin: page id", lib.vm_set_flags, page_id, 1 if pinned else 0)

    def touch(self, page_id: int) -> None:
        """Record an access to a page (its LRU/LFU score cools)."""
        with self._lock:
            _call(self._vm, "touch: page id", lib.vm_touch, page_id)

    def info(self, page_id: int) -> PageInfo:
        """The page table's record of one page."""
        out = ffi.new("vm_page_info *")
        with self._lock:
            _call(self._vm, "info: page id", lib.vm_info, page_id, out)
        return PageInfo(out.id, out.tokens, Region(out.region), bool(out.flags & lib.VM_PINNED),
                        out.group, out.last_touch, out.touches)

    def regions(self, page_ids: Iterable[int]) -> list[Region | None]:
        """Each page's region, None for a page the table does not hold (one lock for all)."""
        out = ffi.new("vm_page_info *")
        info, vm = lib.vm_info, self._vm
        with self._lock:
            return [Region(out.region) if info(vm, int(p), out) == 0 else None for p in page_ids]

    def __contains__(self, page_id: object) -> bool:
        if not isinstance(page_id, (int, np.integer)) or not 0 <= int(page_id) < 1 << 64:
            return False
        out = ffi.new("vm_page_info *")
        with self._lock:
            return lib.vm_info(self._vm, int(page_id), out) == 0

    def __len__(self) -> int:
        with self._lock:
            return lib.vm_count(self._vm)

    def pages(self, region: Region) -> np.ndarray:
        """Ids of a region's pages in region order (queue: oldest first; working set: heap order)."""
        with self._lock:
            n = lib.vm_list(self._vm, int(region), ffi.NULL, 0)
            out = np.empty(n, dtype=np.uint64)
            lib.vm_list(self._vm, int(region), ffi.from_buffer("uint64_t[]", out), n)
        return out

    # ------------------------------------------------------------ accounting

    def stats(self) -> Stats:
        """Tokens and pages per region, used tokens, budget, pinned tokens, access sequence."""
        with self._lock:
            s = self._stats
            lib.vm_stats_get(self._vm, s)
            tokens, pages = list(s.tokens), list(s.pages)
            return Stats(dict(zip(_REGIONS, tokens)), dict(zip(_REGIONS, pages)), s.used, s.budget, s.pinned, s.seq)

    def status(self) -> Status:
        """Memory pressure: OK; WARN above the warning watermark (``need``: tokens
        above it); OVER above the flush watermark (``need``: tokens a flush must
        free: enough to get under the flush line and at least ``1 - target`` of
        the queue)."""
        need = ffi.new("uint64_t *")
        s = ffi.new("vm_stats *")
        with self._lock:
            state = lib.vm_status(self._vm, need)
            lib.vm_stats_get(self._vm, s)
        return Status(State(state), need[0], s.used, s.budget)

    def plan_eviction(self, need: int | None = None) -> EvictionPlan:
        """Queue pages to evict to free at least ``need`` tokens (default: what
        :meth:`status` asks for), oldest first, never splitting an atomic group,
        never taking pinned pages or the last ``keep_last`` messages.

        Changes nothing; apply it with ``move_many(plan.ids, Region.OUT)``.
        Raises EvictionError (with ``freeable``) when the target is out of reach.
        """
        n = ffi.new("size_t *")
        freed = ffi.new("uint64_t *")
        s = ffi.new("vm_stats *")
        with self._lock:
            if need is None:
                need_p = ffi.new("uint64_t *")
                lib.vm_status(self._vm, need_p)
                need = need_p[0]
            need = _u64(need, "need")
            lib.vm_stats_get(self._vm, s)
            out = np.empty(s.pages[lib.VM_QUEUE], dtype=np.uint64)
            rc = lib.vm_plan_evict(self._vm, need, ffi.from_buffer("uint64_t[]", out), out.size, n, freed)
            if rc == lib.VM_ENOSPACE:
                message = ffi.string(lib.vm_errmsg(self._vm)).decode()
                raise EvictionError(message, freeable=freed[0])
            if rc:
                _raise(self._vm, rc)
        return EvictionPlan(out[: n[0]], freed[0])

    def _grow_admission_buffers(self, admitted: int, evicted: int) -> None:
        self._admitted = np.empty(admitted, dtype=np.uint64)
        self._evicted = np.empty(evicted, dtype=np.uint64)
        self._admitted_p = ffi.from_buffer("uint64_t[]", self._admitted)
        self._evicted_p = ffi.from_buffer("uint64_t[]", self._evicted)

    def admit(self, ids: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> Admission:
        """Page candidates into the working set, most relevant (highest score) first.

        Resident candidates are touched; the others are admitted within the
        working set's budget, evicting its coldest pages (never pinned ones,
        never ones touched in this call); a candidate that cannot fit is skipped.
        Pass uint64 and float32 numpy arrays to skip all conversion.
        """
        ids = _ids(ids)
        if not (type(scores) is np.ndarray and scores.dtype == np.float32 and scores.flags.c_contiguous):
            scores = np.ascontiguousarray(scores, dtype=np.float32)
        n = ids.size
        if scores.size != n or scores.ndim != 1:
            raise InvalidArgument(f"{n} ids but {scores.size} scores")
        ids_p = ffi.from_buffer("uint64_t[]", ids)
        scores_p = ffi.from_buffer("float[]", scores)
        na, ne = self._na, self._ne
        with self._lock:
            if self._admitted.size < n:
                self._grow_admission_buffers(max(n, 2 * self._admitted.size), self._evicted.size)
            while True:
                rc = lib.vm_admit(self._vm, ids_p, scores_p, n, self._admitted_p, na,
                                  self._evicted_p, self._evicted.size, ne)
                if rc == 0:
                    return Admission(self._admitted[: na[0]].copy(), self._evicted[: ne[0]].copy())
                if rc == lib.VM_EINVAL and ne[0] > self._evicted.size:
                    self._grow_admission_buffers(self._admitted.size, 2 * ne[0])
                    continue
                _raise(self._vm, rc)

    # ------------------------------------------------------------ whole state

    def check(self) -> None:
        """Verify every invariant of the core; raises InvariantError naming the broken one."""
        with self._lock:
            rc = lib.vm_check(self._vm)
            if rc:
                _raise(self._vm, rc)

    @property
    def memory_bytes(self) -> int:
        """Bytes the core has allocated (page table, hash, heap)."""
        with self._lock:
            return lib.vm_memory(self._vm)

    def snapshot(self) -> bytes:
        """The whole core state as bytes (a msgpack envelope around the C image)."""
        written = ffi.new("size_t *")
        with self._lock:
            size = lib.vm_snapshot_size(self._vm)
            image = bytearray(size)
            rc = lib.vm_snapshot(self._vm, ffi.from_buffer(image), size, written)
            if rc:
                _raise(self._vm, rc)
        return msgpack.packb({"format": _SNAPSHOT_FORMAT, "version": _SNAPSHOT_VERSION,
                              "image": bytes(image[: written[0]])})

    def restore(self, data: bytes) -> None:
        """Replace the whole state by a snapshot's, all or nothing (CorruptSnapshot if bad)."""
        try:
            envelope = msgpack.unpackb(data)
        except Exception as exc:  # msgpack raises several unrelated types
            raise CorruptSnapshot(f"restore: not a msgpack snapshot ({exc})") from None
        if (not isinstance(envelope, dict) or envelope.get("format") != _SNAPSHOT_FORMAT
                or not isinstance(envelope.get("image"), bytes)):
            raise CorruptSnapshot("restore: not a vmem core snapshot")
        if envelope.get("version") != _SNAPSHOT_VERSION:
            raise CorruptSnapshot(f"restore: snapshot version {envelope.get('version')!r} "
                                  f"is not {_SNAPSHOT_VERSION}")
        image = envelope["image"]
        with self._lock:
            self._config = None
            rc = lib.vm_restore(self._vm, image, len(image))
            if rc:
                _raise(self._vm, rc)

    def canonical(self) -> bytes:
        """The whole observable state in a canonical form: equal for equal cores, whatever their
        internal layout (a restored or replayed core packs its slots differently than one that
        lived through the same operations, so their snapshots' bytes may differ)."""
        c = self.config
        ids: list[int] = []
        regions = {}
        for r in Region:
            pages = self.pages(r).tolist()
            regions[int(r)] = sorted(pages) if r in (Region.OUT, Region.WORKSET) else pages
            ids += pages
        infos = [(p.id, p.tokens, int(p.region), p.pinned, p.group, p.last_touch, p.touches)
                 for p in map(self.info, sorted(ids))]
        return msgpack.packb({"config": [c.window, c.reserve, c.warn, c.flush, c.target, c.keep_last, int(c.policy),
                                         c.ws_budget], "seq": self.stats().seq, "regions": regions, "pages": infos})

    def copy_from(self, other: "PagedContext") -> None:
        """Make this core an exact copy of ``other`` (a rollback point, or its restoration).

        Buffers are reused when large enough, so copying between the same two
        cores again does not allocate; a memcpy, much cheaper than a snapshot.
        """
        if other is self:
            return
        first, second = (self, other) if id(self) < id(other) else (other, self)  # one lock order
        with first._lock, second._lock:
            self._config = other._config
            rc = lib.vm_copy(self._vm, other._vm)
            if rc:
                _raise(self._vm, rc)

    def clone(self) -> "PagedContext":
        """A new core with this one's whole state."""
        twin = PagedContext()
        twin.copy_from(self)
        return twin

    @classmethod
    def from_snapshot(cls: type[_Context], data: bytes) -> _Context:
        """A new PagedContext holding a snapshot's state."""
        ctx = cls()
        ctx.restore(data)
        return ctx

    def __repr__(self) -> str:
        s = self.stats()
        return f"<PagedContext {len(self)} pages, {s.used}/{s.budget} tokens resident>"


def estimate_tokens(text: str) -> int:
    """A fast estimate of how many tokens a BPE tokenizer (cl100k-like) makes of ``text``."""
    data = text.encode("utf-8", "surrogatepass")
    return lib.vm_estimate_tokens(data, len(data))


def estimate_tokens_many(texts: Sequence[str]) -> np.ndarray:
    """:func:`estimate_tokens` of each text, in one C call; uint32 array."""
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.uint64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    blob = b"".join(encoded)
    out = np.empty(len(encoded), dtype=np.uint32)
    lib.vm_estimate_tokens_many(blob, ffi.from_buffer("uint64_t[]", offsets), len(encoded),
                                ffi.from_buffer("uint32_t[]", out))
    return out
