"""Answers, end to end: LoCoMo question answering by a real model, vmem beside what people do without it.

Interface:

- :func:`load_dialogues` -- a LoCoMo file as :class:`Dialogue` objects (sessions, turns, QA items).
- :func:`select_items` -- the questions to ask: by conversation, id, category, or a fixed random
  sample spread across the categories.
- :func:`run_qa` -- ask every selected question under every chosen configuration; a :class:`QAReport`.
- :func:`format_qa_report` -- the report as a table; :meth:`QAReport.to_dict` as strict JSON.
- :data:`CONFIGS` -- the configurations, by letter; :class:`QASettings` -- their parameters.

What is compared, on one model and one question set:

====  ==============  =======================================================================
a     ``full``        the whole conversation in the prompt: the upper bound, when the server's
                      context holds it (a server that cannot: the question is an error, counted)
b     ``truncate``    the newest turns that fit the window (what a chat app does)
c     ``rag``         top-k retrieval over the turns (the store's hybrid search: BM25 + the
                      default embedder), the hits in conversation order with their session
                      dates, into the same window; ``rag_k`` 0 takes as many as fit
d     ``agent``       the vmem agent (:class:`vmem.kernel.Agent`) with its memory functions, the
                      question asked as a user step; it may search before answering
e     ``prefetch``    vmem with prefetch only: the kernel pages in the turns most relevant to the
                      question and the model answers from the compiled context, no tools offered
f     ``daemon``      vmem after its consolidation daemon ran over the history (see
                      :func:`daemon_status`; reported as not available until the kernel has one)
====  ==============  =======================================================================

Protocol (after the LoCoMo paper's QA task, Maharana et al. 2024, and its scorer; see
:mod:`vmem.app.f1` for the score):

- Every configuration gets the same system instructions (answer with a short phrase, in the
  conversation's words) and the same user message per question: the question, with LoCoMo's
  hint for temporal questions (category 2) and, for adversarial ones (category 5), its two
  options -- "Not mentioned in the conversation" and the plausible wrong answer, in an order
  drawn per question from a fixed seed -- a reply that only names an option letter is read as
  that option. Greedy decoding; ``answer_tokens`` tokens for an answer (32, as LoCoMo).
- A turn reads ``Speaker: text`` (a shared image adds ``[shares <caption>]``); a session
  opens with ``[Session n · <date as LoCoMo gives it>]``. (a) and (b) show the header of every
  session they include; (c) dates every hit; vmem gets the header on each session's first turn.
- The window: (b) and (c) fill ``window - reserve`` tokens (the kernel's estimate) with turns;
  the vmem memories are created with the same window and output reserve, and lose to their own
  tool schemas, core memory, statistics and summary what they lose. The prompt tokens the
  server reports are what the table shows.
- vmem ingestion calls no model. Each turn is appended as a user message
  (:meth:`vmem.kernel.Memory.append` with its session's date, a second apart per turn), and the
  context is prepared after each, so the queue manager flushes when the window fills, exactly
  as in a live agent -- with :class:`vmem.app.extractive.ExtractiveSummarizer` writing the
  recursive summary instead of the model. Replaying ~600 turns through a 1.5B model on a CPU
  would take hours per conversation; the model is called for the questions only.
- Questions are independent: each is asked of a fresh copy of the conversation's ingested
  memory (a copy of its directory), so one answer never leaks into the next and every question
  sees the same prompt prefix (the server's prompt cache then serves it: the table shows the
  prompt tokens, and how many of them were cached).
- Per question: the F1, the prompt tokens summed over its LLM calls (and the cached share),
  the calls, the wall time. An LLM error (timeout, a prompt over the server's context) or a
  memory that cannot make room in the window (ContextWindowError, at ingestion or at the
  question) is recorded with the question and scores 0; the table counts them.

The data is read from where it lies (``../shared/data/locomo``, CC BY-NC 4.0); nothing here
downloads anything.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.util
import json
import random
import re
import shutil
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmem import VmemError, estimate_tokens
from vmem.app.evaluation import CATEGORIES, Turn, parse_session_date
from vmem.app.extractive import ExtractiveSummarizer
from vmem.app.f1 import gold_answer, score_answer
from vmem.kernel import Agent, Memory, MemoryConfig, StepRules
from vmem.kernel.drivers import Completion, Driver, DriverError
from vmem.kernel.builtins import BUILTINS
from vmem.kernel.functions import MemoryFunction, memory_function
from vmem.kernel.tokens import MESSAGE_OVERHEAD, TokenCounter
from vmem.storage import MemoryDir

__all__ = [
    "CONFIGS",
    "ADVERSARIAL_OPTION",
    "Dialogue",
    "Session",
    "QAItem",
    "QASettings",
    "Outcome",
    "QAReport",
    "Unavailable",
    "load_dialogues",
    "select_items",
    "question_message",
    "read_reply",
    "daemon_status",
    "run_qa",
    "format_qa_report",
]

#: The configurations, by letter: (short name, what it is).
CONFIGS: dict[str, tuple[str, str]] = {
    "a": ("full", "the whole conversation in the prompt (upper bound)"),
    "b": ("truncate", "the newest turns that fit the window"),
    "c": ("rag", "top-k hybrid retrieval over the turns into the window"),
    "d": ("agent", "vmem agent with its memory functions"),
    "e": ("prefetch", "vmem, prefetch only (no function calls)"),
    "f": ("daemon", "vmem after its consolidation daemon ran"),
}

#: The abstaining option of an adversarial question (what LoCoMo offers, and its scorer looks for).
ADVERSARIAL_OPTION = "Not mentioned in the conversation"

SYSTEM_PROMPT = (
    "You answer questions about a long conversation between {a} and {b}, held over several sessions on "
    "different dates. Write the answer as a short phrase, with exact words from the conversation whenever "
    "possible. No explanation."
)
AGENT_PROMPT = (
    " The conversation is in your memory: its latest part is in your context, the whole of it is in recall "
    "storage. When the answer is not in your context, search the conversation (conversation_search) first. "
    "Give the answer with send_message."
)
PREFETCH_PROMPT = (
    " The latest part of the conversation is in your context, and the parts most relevant to the question "
    "are paged in from memory into the working set (each with its date)."
)
CONTEXT_INTRO = "Conversation between {a} and {b}:\n"
TEMPORAL_HINT = " Use the dates of the sessions to answer with an approximate date."
BLOCK_LIMIT = 400
QUESTION_ROOM = 96  #: tokens (b) keeps for the question: LoCoMo's, with their hints and options, fit


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Session:
    """One session of a conversation: its number, its date (LoCoMo's text and parsed) and turns."""

    number: int
    date_text: str
    when: _dt.datetime
    turns: tuple[Turn, ...]

    def header(self) -> str:
        """The line that opens the session wherever it is shown."""
        return f"[Session {self.number} · {self.date_text}]"


@dataclass(frozen=True)
class QAItem:
    """A question of a conversation, with its gold answer as the scorer reads it."""

    conversation: str
    index: int  #: position in the conversation's ``qa`` list
    question: str
    answer: str
    category: int

    @property
    def qid(self) -> str:
        """``<sample_id>:<index>``: how ``--questions`` names it."""
        return f"{self.conversation}:{self.index}"


@dataclass(frozen=True)
class Dialogue:
    """A LoCoMo conversation: its speakers, sessions in order, and questions."""

    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: tuple[Session, ...]
    items: tuple[QAItem, ...]

    @property
    def end(self) -> _dt.datetime:
        """When the conversation's last turn was said (the time the questions are asked from)."""
        last = self.sessions[-1]
        return last.when + _dt.timedelta(seconds=len(last.turns))


def turn_line(turn: Turn) -> str:
    """A turn as every configuration shows it."""
    body = " ".join(turn.text.split())
    if turn.caption:
        body = f"{body} [shares {' '.join(turn.caption.split())}]"
    return f"{turn.speaker}: {body}"


def load_dialogues(path: str | Path) -> list[Dialogue]:
    """Read a LoCoMo JSON file (see ``../shared/data/README.md``). Sessions in numeric order; a
    date without its session is ignored; ValueError for a file that is not LoCoMo's shape."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of conversations")
    out: list[Dialogue] = []
    for n_sample, sample in enumerate(data):
        if not isinstance(sample, dict) or not isinstance(sample.get("conversation"), dict):
            raise ValueError(f"{path}: conversation {n_sample} has no 'conversation' object")
        raw = sample["conversation"]
        sample_id = str(sample.get("sample_id", n_sample))
        numbers = sorted(int(m.group(1)) for k in raw
                         if (m := re.fullmatch(r"session_(\d+)", k)) and isinstance(raw[k], list))
        sessions = []
        for number in numbers:
            date_text = raw.get(f"session_{number}_date_time")
            if not isinstance(date_text, str):
                raise ValueError(f"{path}: {sample_id} session {number} has no date")
            when = parse_session_date(date_text)
            turns = tuple(Turn(str(t["dia_id"]), number, str(t["speaker"]), str(t["text"]),
                               t.get("blip_caption"), when) for t in raw[f"session_{number}"])
            if turns:
                sessions.append(Session(number, date_text.strip(), when, turns))
        if not sessions:
            raise ValueError(f"{path}: {sample_id} has no session with turns")
        items = []
        for index, qa in enumerate(sample.get("qa", [])):
            category = int(qa["category"])
            if category not in CATEGORIES:
                raise ValueError(f"{path}: {sample_id} question {index} has category {category}, not 1-5")
            items.append(QAItem(sample_id, index, str(qa["question"]).strip(), gold_answer(qa), category))
        speaker_a = str(raw.get("speaker_a") or sessions[0].turns[0].speaker)
        speaker_b = str(raw.get("speaker_b") or next(
            (t.speaker for s in sessions for t in s.turns if t.speaker != speaker_a), speaker_a))
        out.append(Dialogue(sample_id, speaker_a, speaker_b, tuple(sessions), tuple(items)))
    return out


def select_items(dialogues: Sequence[Dialogue], *, conversations: Iterable[str] | None = None,
                 questions: Iterable[str] | None = None, categories: Iterable[int] | None = None,
                 limit: int | None = None, seed: int = 0) -> list[QAItem]:
    """The questions to ask, in file order.

    ``conversations``: sample ids to keep; ``questions``: ids ``<sample_id>:<index>``;
    ``categories``: 1-5. ``limit``: a fixed random sample of that many (``seed``), spread evenly
    across the categories present (round robin over each category's shuffled questions), so the
    same arguments always give the same questions. ValueError for an unknown id.
    """
    known = {d.sample_id for d in dialogues}
    pool = [item for d in dialogues for item in d.items]
    if conversations is not None:
        wanted = set(conversations)
        if wanted - known:
            raise ValueError(f"no conversation {', '.join(sorted(wanted - known))} (have {', '.join(sorted(known))})")
        pool = [i for i in pool if i.conversation in wanted]
    if questions is not None:
        asked = list(dict.fromkeys(questions))
        by_id = {i.qid: i for i in pool}
        missing = [q for q in asked if q not in by_id]
        if missing:
            raise ValueError(f"no question {', '.join(missing[:5])} (ids are <sample_id>:<index>)")
        pool = [by_id[q] for q in asked]
    if categories is not None:
        cats = set(categories)
        bad = cats - set(CATEGORIES)
        if bad:
            raise ValueError(f"categories are 1-5, got {sorted(bad)}")
        pool = [i for i in pool if i.category in cats]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        rng = random.Random(seed)
        queues: dict[int, list[QAItem]] = {}
        for item in pool:
            queues.setdefault(item.category, []).append(item)
        for q in queues.values():
            rng.shuffle(q)
        chosen: list[QAItem] = []
        while len(chosen) < limit and any(queues.values()):
            for cat in sorted(queues):
                if queues[cat] and len(chosen) < limit:
                    chosen.append(queues[cat].pop(0))
        order = {item.qid: n for n, item in enumerate(pool)}
        pool = sorted(chosen, key=lambda i: order[i.qid])
    return pool


# ---------------------------------------------------------------------------- prompts


def _options(item: QAItem, seed: int) -> tuple[str, str]:
    """An adversarial question's options (a), (b): the abstention and the wrong answer, in an order
    drawn from ``seed`` and the question (the same on every run and in every configuration)."""
    digest = hashlib.sha256(f"{seed}:{item.qid}:{item.question}".encode()).digest()
    return (ADVERSARIAL_OPTION, item.answer) if digest[0] & 1 else (item.answer, ADVERSARIAL_OPTION)


def question_message(item: QAItem, seed: int = 0) -> str:
    """The user message that asks ``item`` (the same in every configuration)."""
    if item.category == 2:
        return item.question + TEMPORAL_HINT
    if item.category == 5:
        a, b = _options(item, seed)
        return f"{item.question} Select the correct answer: (a) {a} (b) {b}."
    return item.question


_LETTER = re.compile(r"^\(?([ab])\)?[.:]?$")


def read_reply(item: QAItem, reply: str, seed: int = 0) -> str:
    """The prediction a reply stands for: the reply, stripped, or -- for an adversarial question --
    the option it names when it is only an option letter (``a``, ``(b)``, ``b.``)."""
    reply = (reply or "").strip()
    if item.category == 5:
        letter = _LETTER.match(reply.lower())
        if letter:
            a, b = _options(item, seed)
            return a if letter.group(1) == "a" else b
    return reply


def _count(text: str) -> int:
    return estimate_tokens(text) + MESSAGE_OVERHEAD


# ---------------------------------------------------------------------------- results


@dataclass
class Outcome:
    """One question answered under one configuration."""

    config: str
    qid: str
    category: int
    question: str
    gold: str
    prediction: str
    f1: float
    prompt_tokens: int  #: summed over the question's LLM calls, as the server counted them
    cached_tokens: int  #: of which the server's prompt cache served (0 when it does not say)
    calls: int  #: LLM calls made for the answer
    seconds: float  #: wall time of the answer (copying the memory, the calls, the kernel)
    error: str | None = None  #: an LLM error that left the question unanswered (scored 0)
    detail: dict[str, Any] = field(default_factory=dict)  #: per-configuration facts (hits, tool calls...)


@dataclass
class _Answer:
    reply: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    calls: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    def add(self, completion: Completion) -> None:
        self.calls += 1
        if completion.usage is not None:
            self.prompt_tokens += completion.usage.prompt_tokens
            self.cached_tokens += completion.usage.cached_tokens or 0


class Unavailable(Exception):
    """A configuration that cannot run here (the reason is its message)."""


@dataclass(frozen=True)
class QASettings:
    """The parameters of a run (every configuration reads the ones that concern it)."""

    window: int = 4096  #: the context window of (b)-(f), tokens
    reserve: int = 512  #: tokens kept free for the answer, in every windowed configuration
    answer_tokens: int = 32  #: max tokens of an answer ((a), (b), (c), (e))
    agent_tokens: int = 256  #: max tokens of one agent LLM call (it writes tool calls)
    max_steps: int = 4  #: LLM calls per question for the agent, at most
    rag_k: int = 0  #: turns retrieved for (c); 0: as many as fit the window
    prefetch: int = 10  #: pages prefetched per question for (e) (and (f))
    workset: int = 0  #: working-set tokens for (e) (and (f)); 0: a third of the window
    seed: int = 0  #: adversarial option order (and the sample, see select_items)
    daemon_tokens: int = 512  #: max tokens of one consolidation call ((f))

    def __post_init__(self) -> None:
        if self.window < 512:
            raise ValueError(f"window must be at least 512 tokens, got {self.window}")
        if not 0 < self.reserve < self.window // 2:
            raise ValueError(f"reserve must be in (0, window/2), got {self.reserve}")
        for name in ("answer_tokens", "agent_tokens", "daemon_tokens", "max_steps", "prefetch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.rag_k < 0 or self.workset < 0:
            raise ValueError("rag_k and workset must be >= 0")

    def memory_config(self, *, prefetch: bool) -> MemoryConfig:
        """The vmem memories' configuration: this window and reserve. With ``prefetch`` (no tools are
        sent), the window grows by what the memory reserves for the tool schemas, so that the prompt
        the model gets fits the same window as the others'; and the working set is sized for it."""
        if not prefetch:
            return MemoryConfig(window=self.window, reserve_output=self.reserve)
        return MemoryConfig(window=self.window + tools_reserve(), reserve_output=self.reserve,
                            prefetch=self.prefetch, ws_budget=self.workset or self.window // 3)


def tools_reserve() -> int:
    """Tokens a memory reserves for the built-in memory functions' schemas (as :mod:`vmem.kernel.budget`
    counts them before any calibration)."""
    tools = [f if isinstance(f, MemoryFunction) else memory_function(f) for f in BUILTINS]
    return TokenCounter().count(json.dumps([f.tool for f in tools]))


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
    def ask(self, dialogue: Dialogue, item: QAItem) -> _Answer:
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

    def call(self, dialogue: Dialogue, context: str, item: QAItem) -> _Answer:
        messages = [{"role": "system", "content": _system(dialogue)},
                    {"role": "user", "content": context + "\n\n" + question_message(item, self.settings.seed)}]
        answer = _Answer()
        completion = self.driver.complete(messages, [])
        answer.add(completion)
        answer.reply = completion.text or ""
        return answer

    def room(self, dialogue: Dialogue, item: QAItem | None) -> int:
        """Tokens of the window left for turns once the instructions and the question are in (``None``:
        a question of QUESTION_ROOM tokens)."""
        s = self.settings
        question = QUESTION_ROOM if item is None else estimate_tokens(question_message(item, s.seed))
        return (s.window - s.reserve - _count(_system(dialogue)) - MESSAGE_OVERHEAD - question
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

    def ask(self, dialogue: Dialogue, item: QAItem) -> _Answer:
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

    def ask(self, dialogue: Dialogue, item: QAItem) -> _Answer:
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

    def ask(self, dialogue: Dialogue, item: QAItem) -> _Answer:
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
    snapshot: Path | None = None  # the conversation's memory, after prepare(); copied per question

    def prepare(self, dialogue: Dialogue) -> dict[str, Any]:
        self.close()
        self.snapshot = Path(tempfile.mkdtemp(prefix=f"vmem-{self.key}-", dir=self.workdir)) / "memory"
        summarizer = ExtractiveSummarizer()
        started = time.perf_counter()
        memory = Memory.create(self.snapshot, system=_system(dialogue, self.prompt_extra()),
                               blocks=_blocks(dialogue),
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

    def ask(self, dialogue: Dialogue, item: QAItem) -> _Answer:
        answer = _Answer()
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

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.driver = self.make_driver(self.settings.answer_tokens)

    def prompt_extra(self) -> str:
        return PREFETCH_PROMPT

    def ask(self, dialogue: Dialogue, item: QAItem) -> _Answer:
        answer = _Answer()
        summarizer = ExtractiveSummarizer()
        with self.copy(dialogue) as memory:
            memory.append({"role": "user", "content": question_message(item, self.settings.seed)})
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
        counted = _Answer()
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

    def __init__(self, inner: Driver, answer: _Answer) -> None:
        self.inner, self.answer = inner, answer

    def complete(self, messages: Any, tools: Any) -> Completion:
        completion = self.inner.complete(messages, tools)
        self.answer.add(completion)
        return completion


METHODS: dict[str, type[Method]] = {"a": Full, "b": Truncate, "c": Rag, "d": AgentMethod, "e": PrefetchMethod,
                                    "f": DaemonMethod}


# ---------------------------------------------------------------------------- the run


@dataclass
class QAReport:
    """Every outcome of a run, and what each configuration built."""

    settings: QASettings
    configs: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  #: config -> why it did not run
    prepared: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  #: config -> conv -> facts
    seconds: float = 0.0

    def summary(self, config: str, category: int | None = None) -> dict[str, Any]:
        """Means over the config's outcomes (one category, or all): f1, tokens, calls, seconds, errors."""
        rows = [o for o in self.outcomes if o.config == config and (category is None or o.category == category)]
        n = len(rows)
        if not n:
            return {"questions": 0, "f1": None, "prompt_tokens": None, "cached_tokens": None, "calls": None,
                    "seconds": None, "errors": 0}
        return {"questions": n,
                "f1": sum(o.f1 for o in rows) / n,
                "prompt_tokens": sum(o.prompt_tokens for o in rows) / n,
                "cached_tokens": sum(o.cached_tokens for o in rows) / n,
                "calls": sum(o.calls for o in rows) / n,
                "seconds": sum(o.seconds for o in rows) / n,
                "errors": sum(1 for o in rows if o.error)}

    def to_dict(self) -> dict[str, Any]:
        """The whole report as plain data (strict JSON: numbers or null, never NaN)."""
        configs: dict[str, Any] = {}
        for key in self.configs:
            name, what = CONFIGS[key]
            entry: dict[str, Any] = {"name": name, "description": what,
                                     "available": key not in self.unavailable,
                                     "reason": self.unavailable.get(key)}
            if key not in self.unavailable:
                entry["overall"] = self.summary(key)
                entry["by_category"] = {CATEGORIES[c]: self.summary(key, c) for c in CATEGORIES
                                        if any(o.category == c for o in self.outcomes if o.config == key)}
                entry["prepared"] = self.prepared.get(key, {})
            configs[key] = entry
        return {"settings": asdict(self.settings), "seconds": self.seconds, "configs": configs,
                "questions": [asdict(o) for o in self.outcomes]}


def run_qa(dialogues: Sequence[Dialogue], items: Sequence[QAItem], configs: Sequence[str], settings: QASettings,
           make_driver: Callable[[int], Driver], *, progress: bool = False,
           workdir: str | Path | None = None, on_outcome: Callable[[Outcome], None] | None = None) -> QAReport:
    """Ask ``items`` under each of ``configs`` (letters of :data:`CONFIGS`).

    ``make_driver(max_tokens)`` gives the driver a configuration calls (greedy decoding is the
    driver's business). Conversation by conversation, configuration by configuration, question by
    question -- so a server's prompt cache sees each configuration's shared prefix in a row. A
    configuration that cannot run here is reported unavailable (:class:`Unavailable`).
    ``progress``: a bar on stderr (elapsed time, rate, the configuration running). ``on_outcome``
    is called with each outcome as it is scored (to keep a long run's partial results).
    """
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {', '.join(unknown)}: choose from {', '.join(CONFIGS)}")
    report = QAReport(settings, list(dict.fromkeys(configs)))
    by_conv = {d.sample_id: d for d in dialogues}
    asked: dict[str, list[QAItem]] = {}
    for item in items:
        if item.conversation not in by_conv:
            raise ValueError(f"question {item.qid}: its conversation is not among the dialogues")
        asked.setdefault(item.conversation, []).append(item)
    from tqdm import tqdm

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vmem-eval-qa-", dir=workdir) as tmp:
        methods: dict[str, Method] = {}
        for key in report.configs:
            try:
                methods[key] = METHODS[key](settings, make_driver, Path(tmp))
            except Unavailable as exc:
                report.unavailable[key] = str(exc)
        total = len(items) * len(methods)
        bar = tqdm(total=total, disable=not progress, file=sys.stderr, unit="q", dynamic_ncols=True)
        try:
            for conv, conv_items in asked.items():
                dialogue = by_conv[conv]
                for key, method in list(methods.items()):
                    bar.set_postfix_str(f"{conv} {key}:{CONFIGS[key][0]} preparing")
                    try:
                        report.prepared.setdefault(key, {})[conv] = method.prepare(dialogue)
                    except Unavailable as exc:
                        report.unavailable[key] = str(exc)
                        del methods[key]
                        bar.total -= len(items) - sum(1 for o in report.outcomes if o.config == key)
                        bar.refresh()
                        continue
                    except VmemError as exc:  # e.g. the window cannot hold this memory, the server failed
                        why = f"{type(exc).__name__}: {exc}"
                        report.prepared.setdefault(key, {})[conv] = {"error": why}
                        for item in conv_items:
                            outcome = _failed(key, item, why)
                            report.outcomes.append(outcome)
                            if on_outcome is not None:
                                on_outcome(outcome)
                            bar.update(1)
                        method.close()
                        continue
                    bar.set_postfix_str(f"{conv} {key}:{CONFIGS[key][0]}")
                    for item in conv_items:
                        outcome = _ask(method, dialogue, item, settings.seed)
                        report.outcomes.append(outcome)
                        if on_outcome is not None:
                            on_outcome(outcome)
                        bar.update(1)
                    method.close()
        finally:
            bar.close()
            for method in methods.values():
                method.close()
    report.seconds = time.perf_counter() - started
    return report


def _ask(method: Method, dialogue: Dialogue, item: QAItem, seed: int) -> Outcome:
    t0 = time.perf_counter()
    error = None
    try:
        answer = method.ask(dialogue, item)
    except VmemError as exc:  # the server failed (DriverError), the memory could not make room (ContextWindowError)
        answer, error = _Answer(), f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    prediction = read_reply(item, answer.reply, seed)
    return Outcome(method.key, item.qid, item.category, item.question, item.answer, prediction,
                   0.0 if error else score_answer(prediction, item.answer, item.category),
                   answer.prompt_tokens, answer.cached_tokens, answer.calls, round(seconds, 3), error, answer.detail)


def _failed(config: str, item: QAItem, why: str) -> Outcome:
    return Outcome(config, item.qid, item.category, item.question, item.answer, "", 0.0, 0, 0, 0, 0.0, why)


# ---------------------------------------------------------------------------- the table


def format_qa_report(report: QAReport) -> str:
    """F1 (percent) per configuration and category, prompt tokens and seconds per question."""
    cats = [c for c in CATEGORIES if any(o.category == c for o in report.outcomes)]
    head = (["config"] + [f"{CATEGORIES[c]} (n)" for c in cats]
            + ["F1 all", "prompt tok/q", "cached", "calls/q", "s/q", "errors"])
    rows = [head]
    for key in report.configs:
        label = f"({key}) {CONFIGS[key][0]}"
        if key in report.unavailable:
            rows.append([label, report.unavailable[key]])
            continue
        s = report.summary(key)
        if not s["questions"]:
            rows.append([label, "no questions"])
            continue
        row = [label]
        for c in cats:
            sc = report.summary(key, c)
            row.append(f"{100 * sc['f1']:.1f} ({sc['questions']})" if sc["questions"] else "-")
        cached = s["cached_tokens"] / s["prompt_tokens"] if s["prompt_tokens"] else 0.0
        row += [f"{100 * s['f1']:.1f}", f"{s['prompt_tokens']:.0f}", f"{100 * cached:.0f}%", f"{s['calls']:.2f}",
                f"{s['seconds']:.1f}", str(s["errors"])]
        rows.append(row)
    full = [r for r in rows if len(r) == len(head)]
    widths = [max(len(r[i]) for r in full) for i in range(len(head))]
    lines = []
    for r in rows:
        if len(r) == len(head):
            lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                                   enumerate(zip(r, widths))))
        else:
            lines.append(f"{r[0].ljust(widths[0])}  {r[1]}")
    return "\n".join(lines)
