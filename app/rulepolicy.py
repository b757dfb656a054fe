"""RuleBasedPolicy: the deterministic stand-in for an LLM that drives ``vmem demo`` offline.

It is NOT a language model: a few rules over the latest user message, the memory's alerts and
the tool results decide each step -- save a stated fact to core memory (name, city, job...) or
to archival memory, answer a question from the context, page in what is missing with
``archival_memory_search`` or ``conversation_search`` and answer from the hits, write the
recursive summary when the kernel asks for one. So every kernel mechanism can be watched without
a server. Interface: :class:`RuleBasedPolicy` (a :class:`vmem.kernel.drivers.Driver`), its
:class:`Answer` records, and the text helpers it is made of (:func:`keywords`, :func:`sentences`,
:func:`second_person`, :func:`topics`, :func:`query_words`).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from vmem.kernel.drivers import Completion, Driver, ToolCall
from vmem.kernel.summary import SUMMARIZER_PROMPT

__all__ = ["Answer", "RuleBasedPolicy", "keywords", "query_words", "second_person", "sentences", "topics"]

# ---------------------------------------------------------------------- text rules

_STOP = frozenset("""
a about after again all also am an and any are as at be been before but by can could did do does doing
during for from had has have he her here him his how i i'm if in into is it its just me mine my myself
no nor not now of on or our ours out over own please same she should so some such than that the their
them then there these they this those through to too under up us very was we were what when where which
while who whom whose why will with would you your yours way wait well tell told say said mention
mentioned remember again week
""".split())
_WORD = re.compile(r"[\w'’-]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# topic tags for archival passages: a sentence with none of these is a passing remark
_TOPICS: dict[str, tuple[str, ...]] = {
    "people": ("sister", "brother", "mother", "father", "partner", "friend", "colleague", "married", "wedding"),
    "pets": ("dog", "cat", "beagle", "pixel"),
    "plans": ("plan", "planning", "trip", "want", "booked", "fly", "signed", "will", "next"),
    "hobbies": ("surf", "learning", "cooking", "marathon", "hike"),
    "work": ("job", "work", "studio", "hospital"),
}
# rules for the user's core facts: (regex, core line label)
_CORE_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bmy name is (\w+)", re.I), "Name"),
    (re.compile(r"\bI live in ([A-Z][\w ]*?)(?=[,.!]| and\b| with\b)"), "Lives in"),
    (re.compile(r"\bmoved from \w+ to ([A-Z]\w+)"), "Lives in"),
    (re.compile(r"\bI (?:now )?work as (an? [\w ]+?)(?=[,.!]| and\b)"), "Works as"),
    (re.compile(r"\bI now work as (an? [\w ]+?)(?=[,.!]|$)"), "Works as"),
    (re.compile(r"\bI'm allergic to ([\w ]+?)(?=[,.!])"), "Allergic to"),
)
_CORE_ANSWERS = {"Name": "Your name is {}.", "Lives in": "You live in {}.", "Works as": "You work as {}.",
                 "Allergic to": "You are allergic to {}."}
_RECALL_Q = re.compile(r"\b(?:did|have) I (?:tell|say|mention)", re.I)
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
           "october", "november", "december")
_DATE_Q = re.compile(r"\bon (\d{1,2}) (" + "|".join(_MONTHS) + r")\b", re.I)
_NOW = re.compile(r"now: \d{1,2} [A-Z][a-z]+ (\d{4})")  # the statistics' clock: "now: 16 March 2024 10:00 UTC"
_SWAP = {"i": "you", "i'm": "you're", "my": "your", "me": "you", "myself": "yourself", "we": "you",
         "our": "your", "am": "are", "we're": "you're", "us": "you", "mine": "yours"}
_SUMMARY_HEAD = re.compile(r"^Running summary \(fold (\d+), (\d+) messages\)")
ALERT_PREFIX = "Memory pressure:"
SUMMARY_PROMPT_PREFIX = SUMMARIZER_PROMPT.split("{", 1)[0]


def _stem(word: str) -> str:
    w = word.lower().strip("'’-").replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    for suffix, keep in (("ing", 3), ("ed", 4), ("es", 4), ("s", 3)):
        if w.endswith(suffix) and len(w) - len(suffix) >= keep:
            w = w[: -len(suffix)]
            if suffix in ("ing", "ed") and len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
                w = w[:-1]  # planning -> plan, stopped -> stop
            return w
    return w


def query_words(text: str) -> str:
    """The content words of ``text`` as a search query (unstemmed: the stores stem)."""
    out: list[str] = []
    for w in _WORD.findall(text):
        if w.lower().replace("’", "'") not in _STOP and w.lower() not in out:
            out.append(w.lower())
    return " ".join(out)


def keywords(text: str) -> list[str]:
    """The content words of ``text``, stemmed, in order, without repeats."""
    out: list[str] = []
    for w in _WORD.findall(text):
        if w.lower().replace("’", "'") in _STOP:
            continue
        s = _stem(w)
        if s and s not in out and s not in _STOP:
            out.append(s)
    return out


def sentences(text: str) -> list[str]:
    """``text`` cut into sentences."""
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def second_person(text: str) -> str:
    """Turn the user's first-person sentence into one addressed to them ("my dog" -> "your dog")."""
    def swap(m: re.Match[str]) -> str:
        word = m.group(0)
        new = _SWAP.get(word.lower().replace("’", "'"))
        if new is None:
            return word
        return new.capitalize() if m.start() == 0 else new
    return re.sub(r"\b[\w'’]+\b", swap, text)


def topics(sentence: str) -> list[str]:
    """The topic tags of a sentence (empty for a passing remark)."""
    words = {w.lower() for w in _WORD.findall(sentence)} | set(keywords(sentence))
    return [tag for tag, cues in _TOPICS.items() if words.intersection(cues)]


def _overlap(question: Sequence[str], text: str) -> int:
    have = set(keywords(text))
    return sum(1 for k in question if k in have)


_LINE = re.compile(r"^\[(archival|recall) (0x[0-9a-f]+) · ([^\]]*)\] (.*)$", re.S)


@dataclass(frozen=True)
class _Page:
    """A page line as the kernel writes it (working set, search results)."""

    tier: str
    page: int
    meta: str
    text: str


def _parse_line(line: str) -> _Page | None:
    line = line.strip()
    if line.startswith("- "):
        line = line[2:]
    line = re.sub(r"(…)? \(in context\)$", "", line)
    m = _LINE.match(line)
    if not m:
        return None
    return _Page(m.group(1), int(m.group(2), 16), m.group(3), m.group(4))


# ---------------------------------------------------------------------- the policy


def _call(name: str, heartbeat: bool = False, **arguments: Any) -> ToolCall:
    """A call; its id is given when the policy answers (numbered, so runs are reproducible)."""
    args = {**arguments, "request_heartbeat": True} if heartbeat else arguments
    return ToolCall("", name, args)


@dataclass
class Answer:
    """How the policy answered a question (for the demo's report)."""

    question: str
    reply: str
    source: str  #: "core memory", "working set", "archival search", "recall search" or "not found"


class RuleBasedPolicy(Driver):
    """A deterministic stand-in for an LLM: rules over the latest user message and tool results.

    This is NOT a language model. Each request is answered by rules:

    * a summary request (no tools offered; the system prompt is the kernel's
      summarizer prompt) gets a deterministic fold: the previous summary's
      facts plus the user's statements in the new messages, newest kept
      within the word limit;
    * after a memory-pressure alert, the user's passing remarks still in the
      queue and not yet saved are saved to archival memory (what MemGPT asks
      of the LLM before the queue is flushed);
    * statements are saved: the user's name, home, job and allergy to the
      ``human`` core memory block (``core_memory_append``, or
      ``core_memory_replace`` when the fact changed), other statements with a
      topic to archival memory (``archival_memory_insert``, tagged);
    * a question is answered from core memory or from the working set (pages
      the kernel prefetched, no call) when a line there holds all its
      keywords; otherwise the policy page-faults: ``conversation_search`` for
      "what did I tell you about ..." questions, else
      ``archival_memory_search`` (then ``conversation_search`` if archival
      memory has nothing), and answers from the best result;
    * anything else is acknowledged with ``send_message``.
    """

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.summaries = 0
        self.calls = 0
        self.orphaned = 0  #: steps continued after the user message was flushed mid-chain
        self._user = ""

    # -- the driver interface

    def complete(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> Completion:
        """Answer one request of the kernel (see the class docstring)."""
        if not tools:
            system = str(messages[0].get("content") or "") if messages else ""
            if not system.startswith(SUMMARY_PROMPT_PREFIX):
                raise ValueError("RuleBasedPolicy: a request without tools that is not a summary request")
            self.summaries += 1
            return Completion(text=self.fold(system, str(messages[-1].get("content") or "")))
        calls = []
        for call in self.decide(list(messages)):
            self.calls += 1
            calls.append(ToolCall(f"call_{self.calls}", call.name, call.arguments))
        return Completion(tool_calls=calls, finish_reason="tool_calls")

    # -- summaries

    @staticmethod
    def fold(system: str, request: str) -> str:
        """The new summary: the previous one's facts and the new user statements, within the word limit."""
        limit_match = re.search(r"at most (\d+) words", system)
        limit = int(limit_match.group(1)) if limit_match else 200
        previous, _, new = request.partition("\n\nMessages to fold in:\n")
        previous = previous.removeprefix("Previous summary:\n")
        head = _SUMMARY_HEAD.match(previous)
        fold, covered = (int(head.group(1)), int(head.group(2))) if head else (0, 0)
        facts = [line[2:] for line in previous.splitlines() if line.startswith("- ")]
        lines = new.splitlines()
        for line in lines:
            role, _, text = line.partition(": ")
            if role != "user":
                continue
            for s in sentences(text.removeprefix("(continued) ")):
                fact = ("asked: " + s) if s.endswith("?") else "said: " + s
                if fact not in facts:
                    facts.append(fact)
        header = f"Running summary (fold {fold + 1}, {covered + len(lines)} messages) of what the user"
        kept = list(facts)
        words = len(header.split()) + sum(len(f.split()) + 1 for f in kept) + 8
        while kept and words > limit:  # over the limit: drop questions first, then the oldest statements
            victim = next((f for f in kept if f.startswith("asked: ")), kept[0])
            kept.remove(victim)
            words -= len(victim.split()) + 1
        dropped = len(facts) - len(kept)
        tail = [f"({dropped} older items dropped; they are in recall storage)"] if dropped else []
        return "\n".join([header, *(f"- {f}" for f in kept), *tail])

    # -- steps

    def decide(self, messages: list[dict[str, Any]]) -> list[ToolCall]:
        """The calls for one step of the agent."""
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is not None:
            self._user = str(messages[last_user]["content"])
            after = messages[last_user + 1:]
        else:  # the user message was flushed mid-chain: this step began after the last reply sent
            self.orphaned += 1
            sent = [i for i, m in enumerate(messages)
                    if any(c["function"]["name"] == "send_message" for c in m.get("tool_calls") or ())]
            begin = sent[-1] + 2 if sent else 0  # past the reply and its tool result
            after = [m for m in messages[begin:] if m["role"] in ("assistant", "tool") or _is_alert(m)]
        calls: list[tuple[str, dict[str, Any]]] = []
        results: dict[str, str] = {}
        alert_at = None
        for i, m in enumerate(after):
            if _is_alert(m):
                alert_at = i
            for c in m.get("tool_calls") or ():
                calls.append((c["function"]["name"], json.loads(c["function"]["arguments"] or "{}")))
            if m["role"] == "tool":
                results[str(m.get("tool_call_id"))] = str(m.get("content") or "")
        if alert_at is not None and not any(
                "remark" in (args.get("tags") or ()) for m in after[alert_at:] for args in _call_args(m)):
            pending = self._unsaved_remarks(messages)
            if pending:
                return [_call("archival_memory_insert", heartbeat=(k == len(pending) - 1), content=s,
                              tags=["remark"]) for k, s in enumerate(pending)]
        names = [n for n, a in calls if "remark" not in (a.get("tags") or ())]
        text = self._user
        question = next((s for s in sentences(text) if s.endswith("?")), None)
        if not names:
            saves = self._saves(text, messages)
            if saves:
                return saves
        if question is None:
            remarks = sum(1 for _, a in calls if "remark" in (a.get("tags") or ()))
            return [_call("send_message", message=self._acknowledge(names, remarks))]
        searches = [n for n in names if n in ("archival_memory_search", "conversation_search")]
        day = _DATE_Q.search(question) if _RECALL_Q.search(question) else None
        if day is not None:  # "what did I tell you on <day>": the conversation record of that day
            question = _DATE_Q.sub("", question)
            if not searches:
                year = next((int(m.group(1)) for msg in messages
                             for m in [_NOW.search(str(msg.get("content") or ""))] if m), 2000)
                date = _dt.date(year, _MONTHS.index(day.group(2).lower()) + 1, int(day.group(1))).isoformat()
                return [_call("conversation_search", heartbeat=True, query=query_words(question),
                              roles=["user"], start_date=date, end_date=date)]
        if not searches:
            found = self._answer_in_context(question, messages)
            if found is not None:
                return [self._reply(question, *found)]
            tier = "conversation_search" if _RECALL_Q.search(question) else "archival_memory_search"
            return [_call(tier, heartbeat=True, query=query_words(question))]
        last_search = searches[-1]
        last_result = ""
        for m in after:
            for c in m.get("tool_calls") or ():
                if c["function"]["name"] == last_search:
                    last_result = results.get(str(c["id"]), "")
        found = self._answer_from_results(question, last_result, messages)
        if found is not None:
            return [self._reply(question, *found)]
        if last_search == "archival_memory_search" and "conversation_search" not in searches:
            return [_call("conversation_search", heartbeat=True, query=query_words(question))]
        return [self._reply(question, "I could not find that in my memory.", "not found")]

    def _reply(self, question: str, reply: str, source: str) -> ToolCall:
        self.answers.append(Answer(question, reply, source))
        return _call("send_message", message=reply)

    @staticmethod
    def _acknowledge(names: list[str], remarks: int) -> str:
        saved = []
        if any(n.startswith("core_memory") for n in names):
            saved.append("updated your core memory")
        if "archival_memory_insert" in names:
            saved.append("saved it to archival memory")
        text = ("Got it: I " + " and ".join(saved) + ".") if saved else "Noted."
        if remarks:
            text += (f" (My memory is filling up, so I first saved {remarks} passing remark(s) of yours "
                     "to archival memory.)")
        return text

    # -- saving

    @staticmethod
    def _core_block(messages: list[dict[str, Any]]) -> str:
        for m in messages:
            content = str(m.get("content") or "")
            if m["role"] == "system" and content.startswith("<core_memory>"):
                found = re.search(r"<human[^>]*>\n(.*?)\n</human>", content, re.S)
                return found.group(1) if found else ""
        return ""

    def _core_facts(self, text: str) -> list[tuple[str, str, str]]:
        """(label, value, sentence) for each core fact stated in ``text``."""
        facts: list[tuple[str, str, str]] = []
        for s in sentences(text):
            for rule, label in _CORE_RULES:
                m = rule.search(s)
                if m and not any(f[0] == label for f in facts):
                    facts.append((label, m.group(1).strip(), s))
        return facts

    def _saves(self, text: str, messages: list[dict[str, Any]]) -> list[ToolCall]:
        core = self._core_block(messages)
        out: list[ToolCall] = []
        covered: set[str] = set()
        for label, value, s in self._core_facts(text):
            line = f"{label}: {value}"
            old = re.search(rf"^{re.escape(label)}: .*$", core, re.M)
            if old and old.group(0) == line:
                continue
            if old:
                out.append(_call("core_memory_replace", label="human", old_content=old.group(0), new_content=line))
            else:
                out.append(_call("core_memory_append", label="human", content=line))
            covered.add(s)
        for s in sentences(text):
            if s.endswith("?") or s in covered:
                continue
            tags = topics(s)
            if tags:
                out.append(_call("archival_memory_insert", content=s, tags=tags))
        if out:  # chain: the next step acknowledges or answers
            last = out[-1]
            out[-1] = ToolCall(last.id, last.name, {**(last.arguments or {}), "request_heartbeat": True})
        return out

    def _unsaved_remarks(self, messages: list[dict[str, Any]]) -> list[str]:
        """Passing remarks in the queue that nothing saved yet (to save before they are evicted)."""
        saved = {str(a.get("content")) for m in messages for a in _call_args(m)}
        pending = []
        for m in messages:
            if m["role"] != "user":
                continue
            core = {f[2] for f in self._core_facts(str(m["content"]))}
            for s in sentences(str(m["content"])):
                if _is_remark(s) and s not in core and s not in saved and s not in pending:
                    pending.append(s)
        return pending

    # -- answering

    def _answer_in_context(self, question: str, messages: list[dict[str, Any]]) -> tuple[str, str] | None:
        """An answer from core memory or the working set, when a line there holds every keyword."""
        want = keywords(question)
        if not want:
            return None
        for line in self._core_block(messages).splitlines():
            label, _, value = line.partition(": ")
            if label in _CORE_ANSWERS and _overlap(want, line) == len(want):
                return _CORE_ANSWERS[label].format(value), "core memory"
        pages = _working_set(messages)
        if _RECALL_Q.search(question):  # what the user said: only the conversation's record will do
            pages = [p for p in pages if p.tier == "recall" and p.meta.endswith("· user")]
        best = self._best(want, pages, need=len(want))
        if best is not None:
            return self._phrase(best, want), "working set"
        return None

    def _answer_from_results(self, question: str, result: str, messages: list[dict[str, Any]]
                             ) -> tuple[str, str] | None:
        """An answer from a search result (full lines come from the working set when cut short)."""
        try:
            text = json.loads(result).get("message", "")
        except (ValueError, AttributeError):
            return None
        resident = {p.page: p for p in _working_set(messages)}
        pages = []
        for line in str(text).splitlines():
            page = _parse_line(line)
            if page is not None:
                pages.append(resident.get(page.page, page))
        pages = [p for p in pages if p.tier == "archival" or p.meta.endswith("· user")]
        want = keywords(question)
        best = self._best(want, pages, need=1)
        if best is None:
            return None
        source = "archival search" if best.tier == "archival" else "recall search"
        return self._phrase(best, want), source

    @staticmethod
    def _best(want: Sequence[str], pages: Sequence[_Page], need: int) -> _Page | None:
        scored = [(_overlap(want, p.text), -k, p) for k, p in enumerate(pages)]
        scored = [s for s in scored if s[0] >= need]
        return max(scored, key=lambda s: (s[0], s[1]))[2] if scored else None

    @staticmethod
    def _phrase(page: _Page, want: Sequence[str]) -> str:
        best = max(sentences(page.text), key=lambda s: _overlap(want, s))
        if page.tier == "recall":
            when = " ".join(page.meta.split(" · ")[0].split()[:2])  # "4 March 2024 10:00" -> "4 March"
            return f'On {when} you told me: "{best}"'
        return second_person(best)


def _is_remark(sentence: str) -> bool:
    """A passing remark: a first-person statement of a few words with no topic tag."""
    words = [w.lower() for w in _WORD.findall(sentence)]
    return (not sentence.endswith("?") and len(words) >= 5 and not topics(sentence)
            and bool({"i", "my", "we", "our", "me", "i'm"}.intersection(words)))


def _is_alert(m: dict[str, Any]) -> bool:
    return m["role"] == "system" and str(m.get("content") or "").startswith(ALERT_PREFIX)


def _call_args(m: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for c in m.get("tool_calls") or ():
        try:
            out.append(json.loads(c["function"]["arguments"] or "{}"))
        except ValueError:
            continue
    return out


def _working_set(messages: list[dict[str, Any]]) -> list[_Page]:
    for m in reversed(messages):
        content = str(m.get("content") or "")
        if m["role"] == "system" and content.startswith("<working_set"):
            return [p for p in map(_parse_line, content.splitlines()[1:-1]) if p is not None]
    return []
