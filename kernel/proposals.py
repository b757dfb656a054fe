"""Proposals: what the consolidation daemon's model may propose, read leniently from its answer.

Interface::

    batch = Batch(start, end, turns, blocks, known)      # what the model was shown
    found = parse_proposals(text, batch)                 # never raises on bad model output
    found.edits, found.facts, found.supersessions        # what to check and apply
    found.malformed                                      # items that could not be read
    verdict = parse_verdict(text)                        # True / False / None (unclear)
    n = parse_pick(text, len(choices))                   # which of dumps_choices(choices): 1.., 0 none, None

The answer asked of the model is one small JSON object, the simplest shape a 0.5B-1.5B
model writes reliably::

    {"human": ["name: Ana", "job: nurse"],          # one list of lines per writable block
     "persona": [],
     "facts": ["calls per day: 1200", {"fact": "moved to Porto", "replaces": 2}]}

Read leniently (:func:`vmem.kernel.drivers.toolcalls.parse_first_object`: code fences, prose
around the JSON, trailing commas, single quotes, Python literals, the answer written twice...), then item by item: a string is
one line or fact, an object may say ``old``/``new`` (a block edit) or ``fact``/``replaces``
(``replaces``: the number of a known fact shown to the model, or a list of them); a bare
list is taken as facts; keys are matched to block labels case-insensitively, with the
aliases ``user`` -> ``human`` and ``assistant``/``agent``/``self`` -> ``persona``. What
cannot be read is counted in ``malformed``, never guessed.

A block line written as ``topic: detail`` whose topic is already a line of the block
becomes a replacement of that line (a small model states the new value; it does not
quote the old line). Nothing here checks a proposal against the store: that is
:func:`vmem.kernel.consolidation.apply` (the store may have changed since the model read it).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vmem.kernel.drivers import parse_arguments
from vmem.kernel.drivers.lenient_json import parse_first_object
from vmem.storage import Block
from vmem.text import STOP_WORDS, tokenize

__all__ = [
    "Batch",
    "BlockEdit",
    "Fact",
    "KnownFact",
    "Merge",
    "Proposals",
    "Supersession",
    "Turn",
    "as_json",
    "dumps_choices",
    "dumps_known",
    "near_duplicate",
    "normal",
    "parse_pick",
    "parse_proposals",
    "parse_verdict",
    "closeness",
    "content_words",
    "related",
    "restates",
    "topic",
]

ALIASES = {"user": "human", "the_user": "human", "assistant": "persona", "agent": "persona", "self": "persona"}
FACT_KEYS = ("facts", "fact", "archival", "notes", "memories")


@dataclass(frozen=True)
class Turn:
    """A message of the conversation as the daemon reads it."""

    serial: int  #: the message's serial in recall storage (1, 2, ...)
    role: str  #: "user" or "assistant"
    text: str
    time: _dt.datetime


@dataclass(frozen=True)
class KnownFact:
    """A current archival passage shown to the model, numbered from 1 in the prompt."""

    id: int  #: its page id
    text: str
    time: _dt.datetime  #: when it began to hold


@dataclass(frozen=True)
class Batch:
    """What one consolidation run reads: the messages after the cursor, and what memory holds."""

    start: int  #: the cursor when the batch was taken: the last message already consolidated
    end: int  #: the last message in the batch (the cursor after the run)
    turns: tuple[Turn, ...]
    blocks: tuple[Block, ...]  #: the writable core memory blocks
    known: tuple[KnownFact, ...] = ()  #: current facts related to the turns
    common: frozenset[str] = frozenset()  #: words of the known facts most of the store holds (the user's name)
    nearby: tuple[KnownFact, ...] = ()  #: the daemon's newest current facts and those nearest the turns by vector

    def source_of(self, text: str) -> Turn:
        """The user turn ``text`` comes from: the one that shares most words with it (the newest on
        a tie; the newest user turn when none shares any). The batch has at least one turn."""
        users = [t for t in self.turns if t.role == "user"] or list(self.turns)
        words = _words(text)
        return max(users, key=lambda t: (len(words & _words(t.text)), t.serial))

    def time_of(self, text: str) -> _dt.datetime:
        """When ``text`` was said: the time of the turn it comes from (:meth:`source_of`)."""
        return self.source_of(text).time


@dataclass(frozen=True)
class BlockEdit:
    """Append ``new`` as a line of block ``label`` (``old`` None), or replace ``old`` by ``new``."""

    label: str
    new: str
    old: str | None = None


@dataclass(frozen=True)
class Fact:
    """A dated archival fact; ``replaces``: page ids of the known facts it makes untrue (stated by the model);
    ``line``: the index of the block edit it mirrors (a core memory line kept as a fact), or None."""

    text: str
    replaces: tuple[int, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class Supersession:
    """Known facts ``old`` are no longer true since fact number ``by`` (an index into the facts).
    ``why``: "stated" (the model said so), "topic" (same topic, another detail), "checked"
    (the model, asked about this pair, said so), "picked" (likewise, about a known fact no shared
    word led to, which the model chose as the one the new fact is about)."""

    old: tuple[int, ...]
    by: int
    why: str


@dataclass(frozen=True)
class Merge:
    """Known facts ``drop`` and ``keep`` say the same thing: ``drop`` is superseded by ``keep``."""

    keep: int
    drop: int


@dataclass
class Proposals:
    """Everything proposed in one run, before the checks."""

    edits: list[BlockEdit] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    supersessions: list[Supersession] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    malformed: int = 0  #: items of the answer that could not be read as a proposal
    error: str | None = None  #: why the answer as a whole could not be read (then nothing was proposed)

    @property
    def count(self) -> int:
        """Proposals made (the malformed items count as proposals, all skipped)."""
        return len(self.edits) + len(self.facts) + len(self.supersessions) + len(self.merges) + self.malformed


# --------------------------------------------------------------------------- text comparisons


@functools.lru_cache(maxsize=4096)
def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in tokenize(text) if w not in STOP_WORDS)


@functools.lru_cache(maxsize=4096)
def normal(text: str) -> str:
    """``text`` compared as words: lower case, no punctuation, single spaces."""
    return " ".join(tokenize(text))


_TOPIC = re.compile(r"^\s*([^:\n]{1,60}?)\s*:\s*(\S.*)$", re.DOTALL)


def topic(text: str) -> str | None:
    """The topic of a ``topic: detail`` line (normalised), or None when it has none."""
    m = _TOPIC.match(text)
    if m is None or len(m.group(1).split()) > 6:
        return None
    return normal(m.group(1)) or None


def near_duplicate(a: str, b: str) -> bool:
    """Whether two texts say the same thing: equal as words, or sharing 90% of their content words."""
    if normal(a) == normal(b):
        return True
    wa, wb = _words(a), _words(b)
    return bool(wa and wb) and len(wa & wb) / len(wa | wb) >= 0.9


def related(a: str, b: str, common: frozenset[str] = frozenset()) -> bool:
    """Whether two facts may be about the same thing (worth asking whether one replaced the other):
    the same topic when both are "topic: detail" lines, else a content word in common that is not in
    ``common`` (words most facts share, such as the user's name). An update rarely repeats the old
    statement's words ("I get to work by bus" -> "I cycle to work now"); the yes/no call decides,
    among the closest (:func:`closeness`)."""
    ta, tb = topic(a), topic(b)
    if ta is not None and tb is not None:  # "job: nurse" and "calls per day: 60": about two things
        return ta == tb
    return closeness(a, b, common)[1] > 0


def closeness(a: str, b: str, common: frozenset[str] = frozenset()) -> tuple[bool, int, float]:
    """How close two facts are, to order candidates (larger is closer): the same topic, then the
    content words in common (not counting ``common``), then their share of both."""
    ta, tb = topic(a), topic(b)
    wa, wb = _words(a) - common, _words(b) - common
    shared = len(wa & wb)
    return (ta is not None and ta == tb, shared, shared / len(wa | wb) if wa or wb else 0.0)


def restates(new: str, old: str) -> bool:
    """Whether ``new`` holds every content word of ``old``'s detail (of a "topic: detail" line, the
    detail): then it says the old value again, it does not replace it ("Ana lives in Porto" and
    "name: Ana"). No update of the written dev set does."""
    m = _TOPIC.match(old)
    words = _words(m.group(2) if m else old)
    return bool(words) and words <= _words(new)


def content_words(text: str) -> frozenset[str]:
    """The words of ``text`` that carry content (lower case, no stop words)."""
    return _words(text)


# --------------------------------------------------------------------------- parsing


def _answer_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The answer's JSON object (a bare list is taken as the facts), or why there is none."""
    if not text.strip() or text.strip() == "null":
        return None, "the answer is empty"
    parsed = parse_first_object(text)
    if parsed.arguments is not None:
        return parsed.arguments, None
    stripped = (text or "").strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").partition("\n")[2]
    first = min((i for i in (stripped.find("{"), stripped.find("[")) if i >= 0), default=-1)
    if first >= 0 and stripped[first] == "[":  # a list of facts
        wrapped = parse_arguments('{"facts": ' + stripped[first:].rstrip("`").strip() + "}")
        if wrapped.arguments is not None:
            return wrapped.arguments, None
    return None, (parsed.error or "").replace("the arguments", "the answer")


def _label(key: str, labels: Sequence[str]) -> str | None:
    k = str(key).strip().lower().replace(" ", "_").replace("-", "_")
    by_lower = {label.lower(): label for label in labels}
    if k in by_lower:
        return by_lower[k]
    alias = ALIASES.get(k)
    return by_lower.get(alias) if alias else None


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _numbers(value: Any) -> list[int] | None:
    """Known-fact numbers from ``replaces``: an int, a numeric string, or a list of them; None if unreadable."""
    out = []
    for item in _items(value):
        if isinstance(item, bool):
            return None
        if isinstance(item, int):
            out.append(item)
        elif isinstance(item, float) and item.is_integer():
            out.append(int(item))
        elif isinstance(item, str) and item.strip().lstrip("#").isdigit():
            out.append(int(item.strip().lstrip("#")))
        else:
            return None
    return out


def _block_edit(label: str, item: Any, value: str) -> BlockEdit | None:
    if isinstance(item, dict):
        new = _proposed(item.get("new", item.get("line", item.get("text"))))
        old = _text(item.get("old")) if item.get("old") is not None else None
        return BlockEdit(label, new, old or None) if new is not None else None
    line = _proposed(item)
    if line is None:
        return None
    key = topic(line)
    if key is not None:  # "topic: detail" replaces the block's line on the same topic
        for existing in value.splitlines():
            if topic(existing) == key and existing.strip() != line:
                return BlockEdit(label, line, existing.strip())
    return BlockEdit(label, line)


def parse_proposals(text: str | None, batch: Batch) -> Proposals:
    """The proposals in the model's answer ``text`` to a run over ``batch`` (never raises)."""
    out = Proposals()
    obj, error = _answer_object(text or "")
    if obj is None:
        out.error = error or "no JSON object in the answer"
        return out
    labels = [b.label for b in batch.blocks]
    values = {b.label: b.value for b in batch.blocks}
    for key, value in obj.items():
        if str(key).strip().lower() in FACT_KEYS:
            for item in _items(value):
                fact = _fact(item, batch)
                if fact is None:
                    out.malformed += 1
                else:
                    out.facts.append(fact)
            continue
        label = _label(key, labels)
        if label is None:  # a block that does not exist, or one the daemon may not write
            out.malformed += len(_items(value)) or 1
            continue
        for item in _items(value):
            edit = _block_edit(label, item, values[label])
            if edit is None:
                out.malformed += 1
            else:
                out.edits.append(edit)
    for index, fact in enumerate(out.facts):
        if fact.replaces:
            out.supersessions.append(Supersession(fact.replaces, index, "stated"))
    return out


#: The prompt's own markup, which small models copy back into what they propose: a turn's head
#: ("[2024-01-22 09:00] user: ", the time in brackets or parentheses), a known fact's number ("1. ")
#: and tail (" (since 2024-01-08)"). None is content: kept, the old value of a fact comes back as a
#: new fact dated on the day it was copied (and ranked first), and "user" becomes a topic.
_STAMP = r"\d{4}-\d{2}-\d{2}(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?"
_ECHO_HEAD = re.compile(rf"^\s*(?:\d{{1,2}}\.\s+)?(?:[\[(]{_STAMP}[\])]\s*:?\s*|{_STAMP}\s*:\s*)?"
                        r"(?:(?:user|assistant)\s*:\s*)?", re.IGNORECASE)
_ECHO_TAIL = re.compile(rf"\s*\(since {_STAMP}\)\s*$", re.IGNORECASE)


def _unecho(text: str) -> str:
    """``text`` without the prompt's markup a model copied into it (see :data:`_ECHO_HEAD`)."""
    return _ECHO_TAIL.sub("", _ECHO_HEAD.sub("", text, count=1)).strip()


def _proposed(value: Any) -> str | None:
    """New text the model proposes (a fact, a block line): read, without the prompt's markup; None if
    nothing is left."""
    text = _text(value)
    if text is None:
        return None
    return _unecho(text) or None


def _fact(item: Any, batch: Batch) -> Fact | None:
    if isinstance(item, dict):
        text = _proposed(item.get("fact", item.get("text", item.get("new"))))
        numbers = _numbers(item.get("replaces", item.get("replace", item.get("old"))))
        if text is None or numbers is None:
            return None
        ids = []
        for n in numbers:
            if not 1 <= n <= len(batch.known):
                return None  # a number the model was not shown
            ids.append(batch.known[n - 1].id)
        return Fact(text, tuple(dict.fromkeys(ids)))
    text = _proposed(item)
    return Fact(text) if text is not None else None


_YES = re.compile(r"^\W*(yes|true|replaced|outdated|no longer)\b", re.IGNORECASE)
_NO = re.compile(r"^\W*(no|false|not replaced|still true)\b", re.IGNORECASE)


def parse_verdict(text: str | None) -> bool | None:
    """The model's answer to "does the new fact replace the old one?": True, False, or None when unclear.
    Reads ``{"replaced": true}`` (a bool, or "yes"/"no") leniently, or an answer that starts with yes/no."""
    obj, _ = _answer_object(text or "")
    if obj is not None:
        for key in ("replaced", "replaces", "answer", "outdated"):
            if key in obj:
                v = obj[key]
                if isinstance(v, bool):
                    return v
                if isinstance(v, str):
                    return parse_verdict(v)
                return None
        return None
    t = (text or "").strip()
    if _YES.match(t) and t.lstrip(" \"'*").lower().startswith("no longer"):
        return True
    if _NO.match(t):
        return False
    if _YES.match(t):
        return True
    return None


def parse_pick(text: str | None, choices: int) -> int | None:
    """The model's answer to "which known fact is the new one about?": the chosen fact's number
    (1..``choices``), 0 for none, or None when unclear. Reads ``{"same": N}`` leniently (a number,
    a numeric string, null for none), or an answer that is a number alone ("2", "[2]")."""
    bare = _BARE_NUMBER.fullmatch((text or "").strip())
    if bare is not None:
        n: int | None = int(bare.group(1))
    else:
        obj, _ = _answer_object(text or "")
        value = next((obj[k] for k in ("same", "fact", "number", "answer") if k in obj), ...) if obj else ...
        if value is None:
            return 0
        numbers = _numbers(value) if value is not ... else None
        n = numbers[0] if numbers and len(numbers) == 1 else None
    return n if n is not None and 0 <= n <= choices else None


_BARE_NUMBER = re.compile(r"[\[(#]?\s*(\d{1,3})\s*[\])]?\.?")


def dumps_choices(choices: Sequence[KnownFact]) -> str:
    """Known facts as the "which one" question numbers them: ``[N] text`` (Qwen 1.5B picked the
    right one of seven for 40 of the dev set's 42 updates so, 32 with ``N. text``)."""
    return "\n".join(f"[{n}] {k.text}" for n, k in enumerate(choices, 1))


def dumps_known(known: Sequence[KnownFact]) -> str:
    """The known facts as the prompt numbers them."""
    return "\n".join(f"{n}. {k.text} (since {k.time.date().isoformat()})" for n, k in enumerate(known, 1))


def as_json(value: Any) -> str:
    """Compact JSON for prompts and traces."""
    return json.dumps(value, ensure_ascii=False)
