"""The agent: a MemGPT-style step loop around any LLM driver, over vmem's memory.

Main context (the window), compiled in this order, each part a page accounted
in the C core:

    SYSTEM   system instructions                 pinned
    CORE     core memory blocks, one page each   pinned
    SYSTEM   memory statistics                   pinned, resized every step
    SUMMARY  the recursive summary
    QUEUE    the FIFO message queue              every message is also in recall storage
    WORKSET  pages paged in by searches and prefetch

One step (``Agent.step``): the user message enters recall storage and the
queue; then, up to ``max_steps`` times: prefetch (optional), handle memory
pressure (alert once per episode at the warning watermark; at the flush
watermark evict about half the queue behind a new summary that folds in the
previous one), compile, call the driver, record its answer, run the memory
functions it called, and chain another step when a call asked for a heartbeat
or failed. State is saved when the step ends; every driver exchange and memory
operation is appended to the trace.

The loop is written once, as a generator that yields driver requests, and
driven by :meth:`Agent.step` (sync) and :meth:`Agent.astep` (asyncio).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Mapping, Sequence

import msgpack
import numpy as np

from kernel.contextmap import ContextMap
from kernel.drivers import Completion, ContextOverflowError, Driver, DriverError, ToolCall
from kernel.drivers.replay import exchange
from kernel.functions import HEARTBEAT, FunctionError, MemoryFunction, check_arguments, memory_function
from kernel.trace import Trace
from vmem import (
    EvictionError,
    PagedContext,
    PageKind,
    Policy,
    Region,
    State,
    VmemError,
    estimate_tokens,
    make_page_id,
)
from vmem.storage import MemoryDir, Message, VmemStorageError

__all__ = ["Agent", "AgentConfig", "StepResult", "CallRecord", "ContextWindowError", "AgentError"]

SYSTEM_PAGE = make_page_id(PageKind.SYSTEM, 1)
STATS_PAGE = make_page_id(PageKind.SYSTEM, 2)
SUMMARY_PAGE = make_page_id(PageKind.SUMMARY, 1)
MESSAGE_OVERHEAD = 4  # tokens a chat format adds around each message
_STATE_KEY = "kernel"
_CORE_KEY = "core"
_FORMAT = 1

SUMMARIZER_PROMPT = (
    "You maintain the running summary of a conversation between a user and an AI agent whose "
    "older messages are being moved out of its context window. Write a new summary that folds "
    "the previous summary and the messages below into one text: keep facts about the user, "
    "decisions, open tasks and anything the agent promised; drop chit-chat. Write at most "
    "{words} words, in the third person, as plain text."
)
ALERT = (
    "Memory pressure: the context window is {pct:.0f}% full. Older messages will soon be evicted "
    "to recall storage behind a summary. Save anything important to core memory "
    "(core_memory_append / core_memory_replace) or archival memory (archival_memory_insert) now."
)


class AgentError(VmemError):
    """The agent cannot go on (see the message); its stored state is intact."""


class ContextWindowError(AgentError):
    """What must stay in the context window does not fit in it."""


@dataclass(frozen=True)
class AgentConfig:
    """How an agent uses its context window (saved with the agent)."""

    window: int = 8192  #: the model's context window, tokens
    reserve_output: int = 1024  #: tokens kept free for the model's answer
    warn: float = 0.70  #: warning watermark, fraction of the budget
    flush: float = 1.00  #: flush watermark
    target: float = 0.50  #: fraction of the queue a flush keeps
    keep_last: int = 4  #: newest queue messages a flush never evicts
    ws_budget: int = 0  #: working-set tokens (0: a tenth of the budget)
    policy: str = "lru"  #: working-set eviction policy: "lru" or "lfu"
    max_steps: int = 8  #: chained steps per user message
    prefetch: int = 0  #: pages to prefetch per user message (0: off)
    page_size: int = 5  #: results per page of a memory search
    summary_share: float = 0.10  #: the summary's share of the budget (a bound on its length)

    def __post_init__(self) -> None:
        if self.window < 256:
            raise ValueError(f"window must be at least 256 tokens, got {self.window}")
        if not 0 <= self.reserve_output < self.window // 2:
            raise ValueError("reserve_output must be below half the window")
        if self.policy not in ("lru", "lfu"):
            raise ValueError(f"policy must be 'lru' or 'lfu', got {self.policy!r}")
        if self.max_steps < 1 or self.page_size < 1 or self.prefetch < 0:
            raise ValueError("max_steps and page_size must be >= 1, prefetch >= 0")


@dataclass
class CallRecord:
    """One memory function call made by the LLM, and how it went."""

    name: str
    arguments: dict[str, Any] | None
    ok: bool
    result: str


@dataclass
class StepResult:
    """What one user message produced."""

    replies: list[str] = field(default_factory=list)  #: messages for the user (send_message)
    calls: list[CallRecord] = field(default_factory=list)
    steps: int = 0  #: LLM calls made for the answer (summaries excluded)
    flushes: int = 0
    alerts: int = 0
    paged_in: list[int] = field(default_factory=list)
    stopped: str = "done"  #: "done", or "max_steps" when the chain was cut


@dataclass
class _Request:
    """A driver call the step generator asks for."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    purpose: str  # "step" or "summary"
    digest: str | None = None  # context_digest(messages, tools), when the agent has it cheaper


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _message_digest(message: Mapping[str, Any]) -> bytes:
    return hashlib.blake2b(msgpack.packb(message, use_bin_type=True), digest_size=16).digest()


def _combine(parts: Sequence[bytes], tools_digest: bytes) -> str:
    return hashlib.blake2b(b"".join(parts) + tools_digest, digest_size=32).hexdigest()


def _tools_digest(tools: Sequence[Mapping[str, Any]]) -> bytes:
    return _message_digest({"tools": list(tools)})


def context_digest(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> str:
    """The digest the trace records for a driver request: a hash of per-message digests.

    The agent keeps each queue message's digest from when the message was made,
    so a request costs a hash of the few changing parts, not of the whole
    context; a ReplayDriver verifies with this function computed from scratch.
    """
    return _combine([_message_digest(m) for m in messages], _tools_digest(tools))


class Agent:
    """A persistent agent: one directory holds its whole memory.

    Create with :meth:`create`, reopen (in any process) with :meth:`open`, talk
    with :meth:`step` or ``await`` :meth:`astep`, and :meth:`close` when done
    (or use it as a context manager). Not thread-safe: one step at a time.

    Between steps the context may stand above the flush watermark: the model's
    last answer is recorded after the step's pressure check, and the flush
    happens before the next LLM call, so the model never sees an over-budget
    context.
    """

    store: MemoryDir  #: the agent's directory: recall, archival, blocks, state
    ctx: PagedContext  #: the C core: page table and token accounting of the main context
    driver: Driver
    config: AgentConfig
    system: str  #: the system instructions
    functions: dict[str, MemoryFunction]  #: what the LLM may call, by name
    tools: list[dict[str, Any]]  #: their tool schemas
    trace: Trace
    read_only: bool

    def __init__(self) -> None:  # use create() or open()
        raise TypeError("use Agent.create(path, ...) or Agent.open(path, ...)")

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        system: str,
        blocks: Mapping[str, str | Mapping[str, Any]] | None = None,
        driver: Driver,
        config: AgentConfig | None = None,
        functions: Iterable[MemoryFunction | Callable[..., Any]] = (),
        embedder: Any = None,
        archival: Any = None,
        clock: Callable[[], _dt.datetime] | None = None,
        durability: str = "full",
    ) -> "Agent":
        """Create an agent in directory ``path`` (which must not hold one already).

        ``blocks`` maps labels to an initial value, or to a dict with ``value``,
        ``limit`` (characters), ``description`` and ``read_only``. Raises
        ContextWindowError if the system instructions and core memory alone do
        not fit in the window.
        """
        config = config or AgentConfig()
        path = Path(path)
        made_dir = not path.exists()
        was_empty = made_dir or (path.is_dir() and not any(path.iterdir()))
        store = MemoryDir.open(path, embedder=embedder, archival=archival, durability=durability)
        try:
            if _STATE_KEY in store.state:
                raise AgentError(f"{path} holds an agent already: use Agent.open")
            for label, spec in (blocks or {}).items():
                spec = {"value": spec} if isinstance(spec, str) else dict(spec)
                store.blocks.create(label, spec.get("value", ""), limit=spec.get("limit", 2000),
                                    description=spec.get("description", ""),
                                    read_only=spec.get("read_only", False))
            state = {"format": _FORMAT, "config": asdict(config), "system": system, "summary": "",
                     "folds": 0, "alerted": False, "group": 0, "calibration": 1.0, "steps": 0,
                     "block_pages": {}, "workset": {}, "changed": None, "evicted": 0}
            self = cls._assemble(store, state, driver, functions, clock, fresh=True)
            self.trace.write({"e": "create", "time": self._now.timestamp(), "config": asdict(config), "system": system,
                              "blocks": [[b.label, b.value, b.limit, b.description, b.read_only]
                                         for b in store.blocks.all()]})
            self._save()
        except BaseException:
            store.close()
            if was_empty:  # leave nothing half-made behind: a retry must find the directory as it was
                if made_dir:
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    for child in path.iterdir():
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
            raise
        return self

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds an agent (without opening it for writing)."""
        try:
            with MemoryDir.open(path, create=False) as store:
                return _STATE_KEY in store.state
        except VmemStorageError:
            return False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        driver: Driver,
        functions: Iterable[MemoryFunction | Callable[..., Any]] = (),
        embedder: Any = None,
        archival: Any = None,
        clock: Callable[[], _dt.datetime] | None = None,
        durability: str = "full",
        read_only: bool = False,
    ) -> "Agent":
        """Reopen the agent stored in ``path``, with everything as it was saved.

        ``archival``: None reopens the archival backend the agent was created
        with; pass a :class:`vmem.storage.MilvusConfig` to supply what is not
        stored (a cluster's token). ``read_only``: for inspection; the agent
        cannot step and :meth:`close` saves nothing.
        """
        store = MemoryDir.open(path, embedder=embedder, archival=archival, create=False, durability=durability)
        try:
            if _STATE_KEY not in store.state:
                raise AgentError(f"{path} is a vmem store but holds no agent")
            state = store.state[_STATE_KEY]
            if state.get("format") != _FORMAT:
                raise AgentError(f"{path}: agent format {state.get('format')!r} is not {_FORMAT}")
            agent = cls._assemble(store, state, driver, functions, clock, fresh=False)
            agent.read_only = read_only
            return agent
        except BaseException:
            store.close()
            raise

    @classmethod
    def _assemble(cls, store: MemoryDir, state: dict[str, Any], driver: Driver,
                  functions: Iterable[Any], clock: Callable[[], _dt.datetime] | None,
                  fresh: bool) -> "Agent":
        from kernel.builtins import BUILTINS  # the built-in memory functions

        self = object.__new__(cls)
        self.read_only = False
        self.store = store
        self.driver = driver
        self.clock = clock or _now
        self.config = AgentConfig(**state["config"])
        self.system = state["system"]
        self._state = state
        self.functions: dict[str, MemoryFunction] = {}
        for f in (*BUILTINS, *functions):
            f = f if isinstance(f, MemoryFunction) else memory_function(f)
            self.functions[f.name] = f
        self.tools = [f.tool for f in self.functions.values()]
        self._tools_digest = _tools_digest(self.tools)  # the schemas are fixed for the agent's life
        self.trace = Trace(store.path / "trace.msgpack")
        # the time of the last step (or of the creation): the clock is read when a step starts
        self._now = (_dt.datetime.fromtimestamp(state["now"], _dt.timezone.utc) if "now" in state
                     else self.clock())
        self._result = StepResult()
        self._cache: dict[int, dict[str, Any]] = {}  # resident message pages -> chat message
        self._digests: dict[int, bytes] = {}  # resident message pages -> _message_digest of the chat message
        # the queue in the core's order, as chat messages and their digests: appended with each
        # message, rebuilt from the core when a flush removes pages (compile is then two list copies)
        self._queue: list[dict[str, Any]] = []
        self._queue_digests: list[bytes] = []
        self._ws: dict[int, str] = {}  # working-set pages -> their line, in admission order
        self._blocks_text: dict[int, str] = {}
        self._recall_count = len(store.recall)  # the agent is recall's only writer: counted as it appends
        self._archival_count: int | None = None  # re-read after memory changed (count(*) is O(n))
        tools_tokens = estimate_tokens(json.dumps(self.tools))
        c = self.config
        budget = c.window - c.reserve_output - tools_tokens
        if budget <= 0:
            raise ContextWindowError(f"the tool schemas alone need {tools_tokens} tokens of a "
                                     f"{c.window}-token window")
        self._core_config = dict(window=c.window, reserve=c.reserve_output + tools_tokens, warn=c.warn,
                                 flush=c.flush, target=c.target, keep_last=c.keep_last,
                                 policy=Policy.LFU if c.policy == "lfu" else Policy.LRU,
                                 ws_budget=c.ws_budget or budget // 10)
        if fresh:
            self.ctx = PagedContext(**self._core_config)
            blocks = store.blocks.all()
            for block in blocks:
                self._state["block_pages"][block.label] = make_page_id(
                    PageKind.BLOCK, len(self._state["block_pages"]) + 1)
            pinned = [(SYSTEM_PAGE, self._count(self.system), Region.SYSTEM), (STATS_PAGE, 0, Region.SYSTEM)]
            pinned += [(self._state["block_pages"][b.label], self._count(self._render_block(b)), Region.CORE)
                       for b in blocks]
            need = sum(tokens for _, tokens, _ in pinned)
            if need > self.ctx.config.budget:
                raise ContextWindowError(
                    f"the system instructions and core memory alone need {need} tokens; the window's "
                    f"budget is {self.ctx.config.budget} (window {c.window} - output reserve "
                    f"{c.reserve_output} - tool schemas {tools_tokens})")
            for page, tokens, region in pinned:
                self.ctx.add(page, tokens, region, pinned=True)
            self.ctx.add(SUMMARY_PAGE, 0, Region.SUMMARY)
        else:
            self.ctx = PagedContext.from_snapshot(store.state[_CORE_KEY])
            self.ctx.configure(**self._core_config)  # user functions may have changed the tools
        self._load_resident(fresh)
        return self

    def _load_resident(self, fresh: bool) -> None:
        """Rebuild the in-memory views of the resident pages from the stores."""
        for block in self.store.blocks.all():
            self._blocks_text[self._state["block_pages"][block.label]] = self._render_block(block)
        queue = [int(i) for i in self.ctx.pages(Region.QUEUE)]
        for msg in self.store.recall.get_many(queue):
            chat = self._cache[msg.id] = self._chat_message(msg)
            self._digests[msg.id] = _message_digest(chat)
        self._rebuild_queue()
        resident = set(self.ctx.pages(Region.WORKSET).tolist())
        for page, line in self._state["workset"].items():  # saved in admission order
            if int(page) in resident:
                self._ws[int(page)] = line
        self._resize_stats()

    def close(self) -> None:
        """Save (unless opened read-only) and release the agent's directory."""
        if not self.store.closed:
            if not self.read_only:
                self._save()
            self.trace.close()
            self.store.close()

    @property
    def summary(self) -> str:
        """The recursive summary of the evicted messages ('' before the first flush)."""
        return self._state["summary"]

    @property
    def evicted(self) -> int:
        """How many messages have been evicted from the context (all still in recall storage)."""
        return self._state["evicted"]

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ accounting helpers

    def _count(self, text: str) -> int:
        """Tokens of a new page: the estimate, calibrated by the provider's reported usage."""
        return max(1, math.ceil((estimate_tokens(text) + MESSAGE_OVERHEAD) * self._state["calibration"]))

    @staticmethod
    def _render_block(block: Any) -> str:
        ro = " read-only" if block.read_only else ""
        desc = f' description="{block.description}"' if block.description else ""
        return (f'<{block.label}{desc} chars="{len(block.value)}/{block.limit}"{ro}>\n'
                f"{block.value}\n</{block.label}>")

    def _stats_text(self) -> str:
        changed = self._state.get("changed") or "never"
        recall, archival = self._tier_counts()
        return (f"<memory_statistics>\n{recall} messages in recall storage "
                f"({self._state['evicted']} evicted from the context; search them with conversation_search); "
                f"{archival} passages in archival storage (archival_memory_search); "
                f"memory last changed: {changed}; now: {self._now.isoformat(timespec='seconds')}\n"
                f"</memory_statistics>")

    def _resize_stats(self) -> None:
        self._stats = self._stats_text()
        self.ctx.resize(STATS_PAGE, self._count(self._stats))

    @staticmethod
    def _chat_message(msg: Message) -> dict[str, Any]:
        out: dict[str, Any] = {"role": msg.role, "content": msg.content}
        if msg.role == "assistant" and msg.meta.get("tool_calls"):
            out["tool_calls"] = msg.meta["tool_calls"]
            out["content"] = msg.content or None
        if msg.role == "tool":
            out["tool_call_id"] = msg.meta.get("tool_call_id", "")
        return out

    # ------------------------------------------------------------ context compilation

    def compile(self) -> list[dict[str, Any]]:
        """The main context as chat messages, in region order."""
        return self._compile()[0]

    def _step_request(self) -> _Request:
        messages, digest = self._compile()
        return _Request(messages, self.tools, "step", digest)

    def _compile(self) -> tuple[list[dict[str, Any]], str]:
        """The main context and its context_digest (queue messages' digests are cached)."""
        parts = [{"role": "system", "content": self.system}]
        if self._blocks_text:
            parts.append({"role": "system",
                          "content": "<core_memory>\n" + "\n".join(self._blocks_text.values()) + "\n</core_memory>"})
        parts.append({"role": "system", "content": self._stats})
        if self._state["summary"]:
            parts.append({"role": "system", "content": (
                f"<summary of {self._state['evicted']} earlier messages, now in recall storage>\n"
                f"{self._state['summary']}\n</summary>")})
        digests = [_message_digest(m) for m in parts]
        parts += self._queue
        digests += self._queue_digests
        if self._ws:
            ws = {"role": "system", "content": "<working_set: pages paged in from storage>\n"
                  + "\n".join(self._ws.values()) + "\n</working_set>"}
            parts.append(ws)
            digests.append(_message_digest(ws))
        return parts, _combine(digests, self._tools_digest)

    def context_map(self) -> ContextMap:
        """What the context map draws: the core's accounting and the tiers' sizes."""
        recall, archival = self._tier_counts()
        return ContextMap(self.ctx.stats(), self.ctx.config, self.ctx.status().state,
                          recall_messages=recall, archival_passages=archival)

    def _tier_counts(self) -> tuple[int, int]:
        """Messages in recall and passages in archival storage (archival re-counted after changes)."""
        if self._archival_count is None:
            self._archival_count = len(self.store.archival)
        return self._recall_count, self._archival_count

    # ------------------------------------------------------------ the queue

    def _append(self, role: str, content: str, meta: dict[str, Any] | None = None, group: int = 0) -> int:
        """Store a message in recall storage and append it to the queue."""
        page = self.store.recall.append(role, content, timestamp=self._now, meta=meta)
        self._recall_count += 1
        msg = Message(page, role, content, self._now, dict(meta or {}))
        chat = self._chat_message(msg)
        tokens = self._count(content + (json.dumps(chat["tool_calls"]) if "tool_calls" in chat else ""))
        self.ctx.add(page, tokens, Region.QUEUE, group=group)
        self._cache[page] = chat
        digest = self._digests[page] = _message_digest(chat)
        self._queue.append(chat)
        self._queue_digests.append(digest)
        return page

    def _rebuild_queue(self) -> None:
        queue = self.ctx.pages(Region.QUEUE).tolist()
        self._queue = list(map(self._cache.__getitem__, queue))
        self._queue_digests = list(map(self._digests.__getitem__, queue))

    # ------------------------------------------------------------ for memory functions

    @property
    def now(self) -> _dt.datetime:
        """The time of the current step."""
        return self._now

    def reply(self, message: str) -> None:
        """Queue a message for the user (what send_message does)."""
        self._result.replies.append(message)

    def edit_block(self, label: str, value: str) -> Any:
        """Set a core memory block's value and re-account its page, all or nothing.

        The core checks the new size against the budget first; the store then
        enforces read-only and the block's limit; a refusal changes nothing.
        """
        page = self._state["block_pages"][label]
        block = self.store.blocks.get(label)
        text = self._render_block(type(block)(label, value, block.limit, block.description, block.read_only))
        old_tokens = self.ctx.info(page).tokens
        self.ctx.resize(page, self._count(text))
        try:
            block = self.store.blocks.set(label, value)
        except BaseException:
            self.ctx.resize(page, old_tokens)
            raise
        self._blocks_text[page] = text
        self.memory_changed()
        self.trace.write({"e": "block", "label": label, "value": value})
        return block

    def resident_pages(self, pages: Iterable[int]) -> set[int]:
        """Which of ``pages`` are in the main context now."""
        return {p for p in pages if p in self.ctx and self.ctx.info(p).region is not Region.OUT}

    # ------------------------------------------------------------ paging

    def page_in(self, hits: Sequence[tuple[int, float, str]]) -> list[int]:
        """Page search hits ``(page_id, score, line)`` into the working set; return those admitted.

        Pages not registered in the core are registered first (as stored pages);
        the core's admission decides what fits and what is evicted.
        """
        if not hits:
            return []
        for page, _, line in hits:
            if page not in self.ctx:
                self.ctx.add(page, self._count(line), Region.OUT)
        ids = np.fromiter((h[0] for h in hits), dtype=np.uint64, count=len(hits))
        scores = np.fromiter((h[1] for h in hits), dtype=np.float32, count=len(hits))
        admission = self.ctx.admit(ids, scores)
        lines = {h[0]: h[2] for h in hits}
        evicted = admission.evicted.tolist()
        for page in evicted:
            self._ws.pop(page, None)
        admitted = admission.admitted.tolist()
        for page in admitted:
            self._ws[page] = lines[page]
        # stored pages that are not resident are dropped from the core: storage holds them
        out = [h[0] for h in hits if self.ctx.info(h[0]).region is Region.OUT] + evicted
        if out:
            self.ctx.remove_many(np.unique(np.array(out, dtype=np.uint64)))
        self.trace.write({"e": "pagein", "admitted": admitted, "evicted": evicted})
        return admitted

    @staticmethod
    def passage_line(p: Any) -> str:
        tags = f" · tags: {', '.join(p.tags)}" if p.tags else ""
        return f"[archival {p.id:#x} · {p.timestamp.date().isoformat()}{tags}] {p.text}"

    @staticmethod
    def message_line(m: Message) -> str:
        return f"[recall {m.id:#x} · {m.timestamp.isoformat(timespec='seconds')} · {m.role}] {m.content}"

    def _prefetch(self, text: str) -> list[int]:
        k = self.config.prefetch
        hits: list[tuple[int, float, str]] = []
        for rank, hit in enumerate(self.store.archival.search(text, mode="hybrid", page_size=k).hits):
            hits.append((hit.item.id, 1.0 / (rank + 1), self.passage_line(hit.item)))
        queue = set(self.ctx.pages(Region.QUEUE).tolist())
        recall = [h for h in self.store.recall.search(text, page_size=k + len(queue) // 50 + 2).hits
                  if h.item.id not in queue][:k]
        for rank, hit in enumerate(recall):
            hits.append((hit.item.id, 0.5 / (rank + 1), self.message_line(hit.item)))
        return self.page_in(hits)

    # ------------------------------------------------------------ memory pressure

    def _pressure(self, result: StepResult) -> Generator[_Request, Completion, None]:
        status = self.ctx.status()
        if status.state is State.OK:
            self._state["alerted"] = False  # the pressure episode is over
            return
        if not self._state["alerted"]:
            self._state["alerted"] = True
            result.alerts += 1
            self._append("system", ALERT.format(pct=100 * status.used / status.budget), {"kind": "alert"})
            self.trace.write({"e": "alert", "used": status.used, "budget": status.budget})
        if self.ctx.status().state is State.OVER:
            yield from self._flush(result, forced=False)

    def _flush(self, result: StepResult, forced: bool) -> Generator[_Request, Completion, None]:
        """Evict about half the queue behind a new recursive summary (the summary call is the driver's)."""
        status = self.ctx.status()
        need = status.need if status.state is State.OVER else 0
        if forced:  # the provider says the prompt is too long, whatever our estimate says
            q = self.ctx.stats().tokens[Region.QUEUE]
            need = max(need, q - int(self.config.target * q))
        try:
            plan = self.ctx.plan_eviction(need)
        except EvictionError as exc:
            # half the queue is out of reach (pinned pages, a large protected tail): evicting all
            # that can go is enough if it gets the context under the flush line
            over = status.used - int(self.ctx.config.flush * status.budget)
            enough = exc.freeable > 0 if forced else 0 < over <= exc.freeable
            if not enough:
                raise ContextWindowError(
                    f"cannot make room in the context window: {exc}. Pinned pages, core memory and the "
                    f"last {self.config.keep_last} messages must fit; raise the window or shrink them") from None
            plan = self.ctx.plan_eviction(exc.freeable)
        evicted = plan.ids.tolist()
        if not evicted:
            return
        messages = [self._cache[i] for i in evicted]
        summary = yield from self._summarize(self._state["summary"], messages)
        self.ctx.remove_many(plan.ids)  # out of the main context; recall storage keeps them
        for page in evicted:
            del self._cache[page]
            del self._digests[page]
        self._rebuild_queue()
        self._state["summary"] = summary
        self._state["folds"] += 1
        self._state["evicted"] += len(evicted)
        self._state["alerted"] = False
        self.ctx.resize(SUMMARY_PAGE, self._count(summary))
        result.flushes += 1
        self.trace.write({"e": "flush", "evicted": evicted, "freed": plan.freed, "folds": self._state["folds"]})
        after = self.ctx.status()
        if after.state is State.OVER:
            raise ContextWindowError(
                f"after evicting {len(evicted)} messages the context still needs {after.used} of "
                f"{after.budget} tokens (the summary is {self._count(summary)} tokens)")

    @staticmethod
    def _transcript(messages: Sequence[Mapping[str, Any]]) -> list[str]:
        lines = []
        for m in messages:
            text = m.get("content") or ""
            if m.get("tool_calls"):
                calls = "; ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in m["tool_calls"])
                text = f"{text} [calls {calls}]".strip()
            lines.append(f"{m['role']}: {text}")
        return lines

    def _summarize(self, previous: str, messages: Sequence[Mapping[str, Any]]) -> Generator[_Request, Completion, str]:
        """Fold ``messages`` into ``previous`` through the driver, in chunks that fit the window."""
        words = max(50, int(self.ctx.config.budget * self.config.summary_share * 0.75))
        prompt = SUMMARIZER_PROMPT.format(words=words)
        room = self.ctx.config.budget - self._count(prompt) - 2 * MESSAGE_OVERHEAD
        pending = self._transcript(messages)
        summary = previous
        while pending:
            head = f"Previous summary:\n{summary or '(none)'}\n\nMessages to fold in:\n"
            left = room - self._count(head)
            if left < 32:
                raise ContextWindowError("the summary leaves no room to fold messages into it")
            chunk: list[str] = []
            used = 0
            while pending:
                cost = self._count(pending[0])
                if used + cost <= left:
                    chunk.append(pending.pop(0))
                    used += cost
                elif not chunk:  # one line alone is too long: split it, never drop it
                    line = pending.pop(0)
                    cut = max(1, int(len(line) * left / cost * 0.9))
                    chunk.append(line[:cut])
                    pending.insert(0, "(continued) " + line[cut:])
                    break
                else:
                    break
            request = _Request([{"role": "system", "content": prompt},
                                {"role": "user", "content": head + "\n".join(chunk)}], [], "summary")
            completion = yield request
            text = (completion.text or "").strip()
            if not text:
                raise AgentError("the summarizer returned an empty summary")
            summary = text
        return summary

    # ------------------------------------------------------------ the step loop

    def _run(self, user_text: str) -> Generator[_Request, Completion, StepResult]:
        result = self._result = StepResult()
        self._now = self.clock()
        self.trace.write({"e": "user", "text": user_text, "time": self._now.timestamp()})
        budget = self.ctx.config.budget
        fixed = self.ctx.stats().tokens
        room = budget - fixed[Region.SYSTEM] - fixed[Region.CORE] - fixed[Region.SUMMARY]
        if self._count(user_text) > room // 2:
            # too large for the queue: keep it verbatim in recall storage, put its summary in the queue
            page = self.store.recall.append("user", user_text, timestamp=self._now, meta={"kind": "oversize"})
            self._recall_count += 1
            digest = yield from self._summarize("", [{"role": "user", "content": user_text}])
            self._append("system", f"The user sent a message of about {self._count(user_text)} tokens, "
                                   f"too large for the context window; it is stored verbatim in recall storage "
                                   f"({page:#x}, find it with conversation_search). Its summary:\n{digest}",
                         {"kind": "oversize_summary", "page": page})
        else:
            self._append("user", user_text)
        if self.config.prefetch:
            result.paged_in.extend(self._prefetch(user_text))
        while True:  # one LLM call per iteration; ends when nothing chains or at max_steps
            yield from self._pressure(result)
            self._resize_stats()
            try:
                completion = yield self._step_request()
            except ContextOverflowError:
                yield from self._flush(result, forced=True)
                self._resize_stats()
                completion = yield self._step_request()
            result.steps += 1
            last = result.steps == self.config.max_steps
            # the answer, what its calls did and, when the step ends, the saved state: one commit
            with self.store.transaction():
                chain = self._record(completion, result)
                if not chain or last:
                    result.stopped = "max_steps" if chain else "done"
                    self._state["steps"] += 1
                    self._resize_stats()
                    self._save()
            if not chain or last:
                return result

    def _record(self, completion: Completion, result: StepResult) -> bool:
        """Store the assistant's answer, run its calls; True to chain another step."""
        self._calibrate(completion)
        calls = completion.tool_calls
        if not calls:
            text = (completion.text or "").strip()
            self._append("assistant", text)
            if text:
                result.replies.append(text)
            return False
        self._state["group"] = self._state["group"] % (2**32 - 1) + 1
        group = self._state["group"]
        self._append("assistant", completion.text or "", {"tool_calls": [c.to_openai() for c in calls]}, group)
        chain = False
        for call in calls:
            ok, text, heartbeat = self._execute(call, result)
            self._append("tool", text, {"tool_call_id": call.id, "name": call.name}, group)
            chain = chain or heartbeat or not ok
        return chain

    def _execute(self, call: ToolCall, result: StepResult) -> tuple[bool, str, bool]:
        """Run one memory function; errors become a function error for the LLM."""
        heartbeat = bool(call.arguments and call.arguments.get(HEARTBEAT) is True)
        try:
            if call.error is not None:
                raise FunctionError(f"could not parse the arguments of {call.name}: {call.error}")
            func = self.functions.get(call.name)
            if func is None:
                raise FunctionError(f"no function {call.name!r}; available: {', '.join(self.functions)}")
            kwargs = check_arguments(func, call.arguments or {})
            value = func.fn(self, **kwargs) if func.wants_agent else func.fn(**kwargs)
            text = json.dumps({"status": "OK", "message": value if value is not None else "None"},
                              ensure_ascii=False, default=str)
            ok = True
        except (FunctionError, VmemError, ValueError, KeyError, TypeError) as exc:
            message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            text = json.dumps({"status": "Failed", "message": message}, ensure_ascii=False)
            ok = False
        record = CallRecord(call.name, call.arguments, ok, text)
        result.calls.append(record)
        self.trace.write({"e": "call", "name": call.name, "arguments": call.arguments, "ok": ok, "result": text})
        return ok, text, heartbeat

    def _calibrate(self, completion: Completion) -> None:
        """Move the token estimate toward the provider's reported prompt tokens."""
        usage = completion.usage
        if usage is None or usage.prompt_tokens <= 0:
            return
        s = self.ctx.stats()
        estimate = s.used + (self.ctx.config.reserve - self.config.reserve_output)
        if estimate <= 0:
            return
        ratio = usage.prompt_tokens / estimate * self._state["calibration"]
        self._state["calibration"] = round(min(3.0, max(0.5, 0.8 * self._state["calibration"] + 0.2 * ratio)), 4)

    # ------------------------------------------------------------ driving the loop

    def _trace_exchange(self, request: _Request, outcome: Completion | DriverError) -> None:
        digest = request.digest or context_digest(request.messages, request.tools)
        self.trace.write({"e": "llm", "purpose": request.purpose,
                          **exchange(request.messages, request.tools, outcome, digest=digest)})

    def _call(self, request: _Request) -> Completion:
        self.store.checkpoint_in_background()  # the WAL is folded while the LLM thinks
        try:
            completion = self.driver.complete(request.messages, request.tools)
        except DriverError as exc:
            self._trace_exchange(request, exc)
            raise
        self._trace_exchange(request, completion)
        return completion

    def _start(self, user_message: str) -> tuple[Generator[_Request, Completion, StepResult], _Request]:
        """Begin a step: the loop and its first driver request (state saved if it fails)."""
        if self.read_only:
            raise AgentError("this agent was opened read-only (for inspection): it cannot step")
        if not isinstance(user_message, str):
            raise TypeError(f"user_message must be a str, got {type(user_message).__name__}")
        gen = self._run(user_message)
        try:
            return gen, next(gen)
        except BaseException:
            self._save()
            raise

    def step(self, user_message: str) -> StepResult:
        """Handle one user message (sync); returns the replies and what happened."""
        gen, request = self._start(user_message)
        while True:
            try:
                try:
                    completion = self._call(request)
                except ContextOverflowError as exc:
                    request = gen.throw(exc)
                    continue
                request = gen.send(completion)
            except StopIteration as stop:
                return stop.value
            except BaseException:
                self._save()  # what happened so far (the user message) is kept
                raise

    async def astep(self, user_message: str) -> StepResult:
        """Handle one user message (asyncio): the driver is awaited, no thread blocks on the LLM."""
        gen, request = self._start(user_message)
        while True:
            try:
                try:
                    self.store.checkpoint_in_background()
                    completion = await self.driver.acomplete(request.messages, request.tools)
                except DriverError as exc:
                    self._trace_exchange(request, exc)
                    if not isinstance(exc, ContextOverflowError):
                        raise
                    request = gen.throw(exc)
                    continue
                self._trace_exchange(request, completion)
                request = gen.send(completion)
            except StopIteration as stop:
                return stop.value
            except BaseException:
                self._save()
                raise

    # ------------------------------------------------------------ persistence

    def memory_changed(self) -> None:
        """Note that core or archival memory changed now (shown in the memory statistics)."""
        self._state["changed"] = self._now.isoformat(timespec="seconds")
        self._archival_count = None

    def _save(self) -> None:
        self._state["workset"] = {str(k): v for k, v in self._ws.items()}
        self._state["now"] = self._now.timestamp()
        with self.store.transaction():
            self.store.state[_STATE_KEY] = self._state
            self.store.state[_CORE_KEY] = self.ctx.snapshot()
        self.trace.flush()

    def digest(self) -> str:
        """A digest of the whole memory state: equal digests, equal memories."""
        recall = self.store.recall
        messages = recall.get_many(make_page_id(PageKind.MESSAGE, i) for i in range(1, len(recall) + 1))
        passages = []
        page = 0
        while True:
            found = self.store.archival.search(None, page=page, page_size=500)
            passages.extend((p.id, p.text, sorted(p.tags), p.timestamp.timestamp()) for p in found.items)
            if not found.has_next:
                break
            page += 1
        state = {k: v for k, v in self._state.items()}
        payload = {
            "state": state,
            "core": self.ctx.snapshot(),
            "blocks": [[b.label, b.value, b.limit, b.description, b.read_only] for b in self.store.blocks.all()],
            "recall": [[m.id, m.role, m.content, m.timestamp.timestamp(), m.meta] for m in messages],
            "archival": sorted(passages),
            "context": self.compile(),
        }
        return hashlib.sha256(msgpack.packb(payload, use_bin_type=True)).hexdigest()
