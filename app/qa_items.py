"""LoCoMo questions for ``vmem eval qa``: the dialogues, the message per question, how a reply is
read, what a question's outcome records, and the run's settings.

Part of :mod:`vmem.app.qa` (the protocol is described there). Interface: :class:`Dialogue`,
:class:`Session`, :class:`QAItem`, :func:`load_dialogues`, :func:`select_items`,
:func:`question_message`, :func:`read_reply`, :func:`turn_line`, :class:`Outcome`,
:class:`QASettings`, :class:`Unavailable`, :func:`tools_reserve`, and the prompts' texts.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmem import estimate_tokens
from vmem.app.evaluation import CATEGORIES, Turn, parse_session_date
from vmem.app.f1 import gold_answer
from vmem.kernel import MemoryConfig
from vmem.kernel.drivers import Completion
from vmem.kernel.builtins import BUILTINS
from vmem.kernel.functions import MemoryFunction, memory_function
from vmem.kernel.tokens import MESSAGE_OVERHEAD, TokenCounter

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


def count_tokens(text: str) -> int:
    """A message's tokens as the kernel estimates them (its text and the message's overhead)."""
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
class Answer:
    """What a configuration's model said to one question, and what its LLM calls cost."""

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
    merge_system: bool = False  #: the driver sends one leading system message and the question last (OpenAIDriver)

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
