"""The configurations ``vmem eval qa`` compares (a-f), one :class:`Method` each.

Part of :mod:`vmem.app.qa` (the protocol and the table of configurations are there): (a)
:class:`Full`, (b) :class:`Truncate`, (c) :class:`Rag`, and vmem as (d) :class:`AgentMethod`,
(e) :class:`PrefetchMethod`, (f) :class:`DaemonMethod`. A method prepares once per conversation
(:meth:`Method.prepare`) and answers each question from a fresh state (:meth:`Method.ask`);
:data:`METHODS` maps the letters to them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vmem import estimate_tokens
from vmem.app.evaluation import Turn
from vmem.app.extractive import ExtractiveSummarizer
from vmem.kernel import MEMORY_INSTRUCTIONS, Agent, Memory, StepRules
from vmem.kernel.drivers import Completion, Driver, DriverError
from vmem.kernel.tokens import MESSAGE_OVERHEAD
from vmem.storage import MemoryDir

from vmem.app.qa_items import (
    AGENT_PROMPT,
    BLOCK_LIMIT,
    CONTEXT_INTRO,
    PREFETCH_PROMPT,
    QUESTION_ROOM,
    SYSTEM_PROMPT,
    Dialogue,
    QAItem,
    QASettings,
    Session,
    Unavailable,
    Answer,
    count_tokens,
    question_message,
    turn_line,
)

# ---------------------------------------------------------------------------- configurations


class Method(ABC):
    """One configuration: prepared per conversation, then asked its questions in turn."""

    key: str

    def __init__(self, settings: QASettings, make_driver: Callable[[int], Driver], workdir: Path) -> None:
        self.settings = settings
        self.make_driver = make_driver
        self.workdir = workdir

    @abstractmethod
    def prepare(self, dialogue: Dialogue) -> dict[str, Any]:
        """Get ready for ``dialogue``'s questions; facts about what was built (for the report)."""

    @abstractmethod
    def ask(self, dialogue: Dialogue, item: QAItem) -> Answer:
        """Answer one question (LLM errors propagate: the runner records them)."""

    def close(self) -> None:
        """Release what :meth:`prepare` built."""


def _blocks(dialogue: Dialogue) -> dict[str, dict[str, Any]]:
    """The vmem memories' core blocks: what the conversation is, and one (empty) per speaker."""
    blocks: dict[str, dict[str, Any]] = {"conversation": {
        "value": f"A conversation between {dialogue.speaker_a} and {dialogue.speaker_b}.", "limit": BLOCK_LIMIT,
        "read_only": True}}
    for label, name in (("speaker_a", dialogue.speaker_a), ("speaker_b", dialogue.speaker_b)):
        blocks[label] = {"value": "", "limit": BLOCK_LIMIT, "description": f"what is known about {name}"}
    return blocks


def _system(dialogue: Dialogue, extra: str = "") -> str:
    return SYSTEM_PROMPT.format(a=dialogue.speaker_a, b=dialogue.speaker_b) + extra


class _Prompted(Method):
    """(a), (b), (c): one prompt, the turns as text, one call."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.driver = self.make_driver(self.settings.answer_tokens)

    def call(self, dialogue: Dialogue, context: str, item: QAItem) -> Answer:
        messages = [{"role": "system", "content": _system(dialogue)},
                    {"role": "user", "content": context + "\n\n" + question_message(item, self.settings.seed)}]
        answer = Answer()
        completion = self.driver.complete(messages, [])
        answer.add(completion)
        answer.reply = completion.text or ""
        return answer

    def room(self, dialogue: Dialogue, item: QAItem | None) -> int:
        """Tokens of the window left for turns once the instructions and the question are in (``None``:
        a question of QUESTION_ROOM tokens)."""
        s = self.settings
        question = QUESTION_ROOM if item is None else estimate_tokens(question_message(item, s.seed))
        return (s.window - s.reserve - count_tokens(_system(dialogue)) - MESSAGE_OVERHEAD - question
                - estimate_tokens(CONTEXT_INTRO.format(a=dialogue.speaker_a, b=dialogue.speaker_b)))


def _sessions_text(dialogue: Dialogue, sessions: Iterable[tuple[Session, Sequence[Turn]]]) -> str:
    parts = [CONTEXT_INTRO.format(a=dialogue.speaker_a, b=dialogue.speaker_b)]
    for session, turns in sessions:
        parts.append(session.header() + "\n" + "\n".join(turn_line(t) for t in turns) + "\n")
    return "\n".join(parts).rstrip()


class Full(_Prompted):
    """(a) the whole conversation."""

    key = "a"

    def prepare(self, dialogue: Dialogue) -> dict[str, Any]:
        self.text = _sessions_text(dialogue, ((s, s.turns) for s in dialogue.sessions))
        return {"context_tokens": estimate_tokens(self.text)}

    def ask(self, dialogue: Dialogue, item: QAItem) -> Answer:
        return self.call(dialogue, self.text, item)


class Truncate(_Prompted):
    """(b) the newest turns that fit (each included session with its header)."""

    key = "b"

    def prepare(self, dialogue: Dialogue) -> dict[str, Any]:
        self.texts: dict[int, tuple[str, int]] = {}  # room -> (context, turns kept): questions share it
        return {}

    def context(self, dialogue: Dialogue, room: int) -> tuple[str, int]:
        if room not in self.texts:
            kept: list[tuple[Session, list[Turn]]] = []
            used = n = 0
            for session in reversed(dialogue.sessions):
                cost_header = estimate_tokens(session.header()) + 1
                turns: list[Turn] = []
                for turn in reversed(session.turns):
                    cost = estimate_tokens(turn_line(turn)) + 1 + (0 if turns else cost_header)
                    if used + cost > room:
                        break
                    turns.insert(0, turn)
                    used += cost
                if turns:
                    kept.insert(0, (session, turns))
                    n += len(turns)
                if len(turns) < len(session.turns):
                    break
            self.texts[room] = (_sessions_text(dialogue, kept), n)
        return self.texts[room]

    def ask(self, dialogue: Dialogue, item: QAItem) -> Answer:
        # One context for every question of the conversation (so the server's prompt cache serves it
        # after the first): the turns fit beside a question of QUESTION_ROOM tokens; a longer question
        # (rare) gets fewer turns, never more than the window.
        room = min(self.room(dialogue, item), self.room(dialogue, None))
        text, n = self.context(dialogue, room)
        answer = self.call(dialogue, text, item)
        answer.detail["turns"] = n
        return answer


class Rag(_Prompted):
    """(c) top-k hybrid retrieval over the turns, in conversation order, dated."""

    key = "c"
    store: MemoryDir | None = None  # the conversation's turns, after prepare()

    def prepare(self, dialogue: Dialogue) -> dict[str, Any]:
        self.close()
        path = Path(tempfile.mkdtemp(prefix="rag-", dir=self.workdir))
        self.store = store = MemoryDir.open(path, durability="normal")
        self.turn_of: dict[int, tuple[int, Session, Turn]] = {}
        position = 0
        with store.transaction():
            for session in dialogue.sessions:
                ids = store.archival.insert_many([turn_line(t) for t in session.turns], timestamp=session.when)
                for turn, pages in zip(session.turns, ids):
                    for page in pages:
                        self.turn_of[page] = (position, session, turn)
                    position += 1
        return {"turns": position}

    def ask(self, dialogue: Dialogue, item: QAItem) -> Answer:
        room = self.room(dialogue, item)
        k = self.settings.rag_k or len(self.turn_of)
        assert self.store is not None, "prepare() comes first"
        found = self.store.archival.search(item.question, mode="hybrid", page_size=min(k, 200))
        picked: dict[int, tuple[int, Session, Turn]] = {}
        used = 0
        for hit in found.hits:
            where = self.turn_of.get(hit.item.id)
            if where is None or where[0] in picked:
                continue
            line = f"[{where[1].date_text}] {turn_line(where[2])}"
            cost = estimate_tokens(line) + 1
            if used + cost > room:
                break
            picked[where[0]] = where
            used += cost
            if len(picked) >= k:
                break
        lines = [f"[{s.date_text}] {turn_line(t)}" for _, s, t in (picked[p] for p in sorted(picked))]
        text = (CONTEXT_INTRO.format(a=dialogue.speaker_a, b=dialogue.speaker_b)
                + "(the parts most relevant to the question, in order, each with its session's date)\n"
                + "\n".join(lines))
        answer = self.call(dialogue, text, item)
        answer.detail["turns"] = len(picked)
        return answer

    def close(self) -> None:
        store = self.store
        if store is not None and not store.closed:
            path = store.path
            store.close()
            shutil.rmtree(path, ignore_errors=True)
        self.store = None


class _Vmem(Method):
    """(d), (e), (f): a vmem memory per conversation, ingested without the model, copied per question."""

    prefetch = False
    #: the memory's instructions for its functions (the kernel's default; None for a configuration
    #: that offers the model no functions: instructions for tools it does not have are noise)
    instructions: str | None = MEMORY_INSTRUCTIONS
    snapshot: Path | None = None  # the conversation's memory, after prepare(); copied per question

    def prepare(self, dialogue: Dialogue) -> dict[str, Any]:
        self.close()
        self.snapshot = Path(tempfile.mkdtemp(prefix=f"vmem-{self.key}-", dir=self.workdir)) / "memory"
        summarizer = ExtractiveSummarizer()
        started = time.perf_counter()
        memory = Memory.create(self.snapshot, system=_system(dialogue, self.prompt_extra()),
                               blocks=_blocks(dialogue), instructions=self.instructions,
                               config=self.settings.memory_config(prefetch=self.prefetch),
                               clock=lambda: dialogue.end, durability="normal")
        flushes = 0
        try:
            for session in dialogue.sessions:
                for n, turn in enumerate(session.turns):
                    line = turn_line(turn)
                    content = f"{session.header()} {line}" if n == 0 else line
                    memory.append({"role": "user", "content": content},
                                  timestamp=session.when + _dt.timedelta(seconds=n))
                    gen = memory.prepare()
                    try:
                        request = next(gen)
                        while True:
                            request = gen.send(summarizer(request))
                    except StopIteration as stop:
                        flushes += stop.value.room.flushes
                    finally:
                        gen.close()
            facts = self.after_ingest(memory, dialogue)
            memory.check()
            facts.update(turns=sum(len(s.turns) for s in dialogue.sessions), flushes=flushes,
                         summary_requests=summarizer.requests, queued=len(memory.queue), evicted=memory.evicted,
                         summary_tokens=estimate_tokens(memory.summary),
                         ingest_seconds=round(time.perf_counter() - started, 3))
        finally:
            memory.close()
        return facts

    def prompt_extra(self) -> str:
        return ""

    def after_ingest(self, memory: Memory, dialogue: Dialogue) -> dict[str, Any]:
        """What a configuration does to the memory once the history is in (the daemon, for (f))."""
        return {}

    @contextlib.contextmanager
    def copy(self, dialogue: Dialogue) -> Iterator[Memory]:
        """A fresh copy of the conversation's memory, open, the clock just after its last turn."""
        assert self.snapshot is not None, "prepare() comes first"
        work = self.snapshot.parent / "question"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(self.snapshot, work)
        memory = Memory.open(work, clock=lambda: dialogue.end + _dt.timedelta(hours=1), durability="normal")
        try:
            yield memory
        finally:
            memory.close()
            shutil.rmtree(work, ignore_errors=True)

    def close(self) -> None:
        snapshot = self.snapshot
        if snapshot is not None:
            shutil.rmtree(snapshot.parent, ignore_errors=True)
        self.snapshot = None


class AgentMethod(_Vmem):
    """(d) the agent and its memory functions."""

    key = "d"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.driver = self.make_driver(self.settings.agent_tokens)

    def prompt_extra(self) -> str:
        return AGENT_PROMPT

    def ask(self, dialogue: Dialogue, item: QAItem) -> Answer:
        answer = Answer()
        with self.copy(dialogue) as memory:
            agent = Agent(memory, _Counting(self.driver, answer), rules=StepRules(max_steps=self.settings.max_steps))
            result = agent.step(question_message(item, self.settings.seed))
            memory.check()
        answer.reply = " ".join(r.strip() for r in result.replies if r.strip())
        answer.detail = {"tool_calls": [c.name for c in result.calls], "stopped": result.stopped,
                         "flushes": result.flushes}
        return answer


class PrefetchMethod(_Vmem):
    """(e) prefetch only: the compiled context, no tools."""

    key = "e"
    prefetch = True
    instructions = None  # no tools are sent

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.driver = self.make_driver(self.settings.answer_tokens)

    def prompt_extra(self) -> str:
        return PREFETCH_PROMPT

    def ask(self, dialogue: Dialogue, item: QAItem) -> Answer:
        answer = Answer()
        summarizer = ExtractiveSummarizer()
        with self.copy(dialogue) as memory:
            # prefetch searches for the question, as (c) does: not for the answering hints around it
            memory.append({"role": "user", "content": question_message(item, self.settings.seed)},
                          prefetch_for=item.question)
            context = memory.context(summarizer=summarizer)
            completion = self.driver.complete(list(context), [])
            answer.add(completion)
            memory.check()
            answer.detail = {"workset_pages": len(memory.state.workset), "flushes": summarizer.requests}
        answer.reply = completion.text or ""
        return answer


def daemon_status() -> str | None:
    """None when the kernel has the consolidation run (f) needs
    (``vmem.kernel.consolidation.consolidate``), else why (f) is not available."""
    if importlib.util.find_spec("vmem.kernel.consolidation") is None:
        return ("not available: this vmem has no consolidation daemon (vmem.kernel.consolidation); "
                "(f) runs once it does")
    if not hasattr(importlib.import_module("vmem.kernel.consolidation"), "consolidate"):
        return "not available: vmem.kernel.consolidation has no consolidate(memory, driver)"
    return None


class DaemonMethod(PrefetchMethod):
    """(f) prefetch over a memory the consolidation daemon has curated: once the history is in,
    consolidation runs (``vmem.kernel.consolidation.consolidate``, the daemon's synchronous run,
    through its own driver -- the same server) until every turn has been read, then the questions
    are asked as in (e). The runs' model calls are counted in ``prepared``, not per question."""

    key = "f"

    def __init__(self, *args: Any) -> None:
        why = daemon_status()
        if why is not None:
            raise Unavailable(why)
        super().__init__(*args)
        self.daemon_driver = self.make_driver(self.settings.daemon_tokens)

    def after_ingest(self, memory: Memory, dialogue: Dialogue) -> dict[str, Any]:
        consolidate = importlib.import_module("vmem.kernel.consolidation").consolidate
        counted = Answer()
        driver = _Counting(self.daemon_driver, counted)
        runs = applied = skipped = unreadable = 0
        error = None
        started = time.perf_counter()
        while True:
            try:
                report = consolidate(memory, driver)
            except DriverError as exc:  # the rest of the history stays unconsolidated: said, not hidden
                error = f"{type(exc).__name__}: {exc}"
                break
            if report is None or report.end == report.start:
                break
            runs += 1
            applied += report.applied
            skipped += report.skipped_total
            unreadable += report.error is not None
        return {"daemon_runs": runs, "daemon_applied": applied, "daemon_skipped": skipped,
                "daemon_unreadable": unreadable, "daemon_calls": counted.calls,
                "daemon_prompt_tokens": counted.prompt_tokens, "daemon_error": error,
                "daemon_seconds": round(time.perf_counter() - started, 3)}


class _Counting(Driver):
    """A driver that adds each completion's usage to an answer."""

    def __init__(self, inner: Driver, answer: Answer) -> None:
        self.inner, self.answer = inner, answer

    def complete(self, messages: Any, tools: Any) -> Completion:
        completion = self.inner.complete(messages, tools)
        self.answer.add(completion)
        return completion


METHODS: dict[str, type[Method]] = {"a": Full, "b": Truncate, "c": Rag, "d": AgentMethod, "e": PrefetchMethod,
                                    "f": DaemonMethod}
