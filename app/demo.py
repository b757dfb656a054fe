"""``vmem demo``: the memory kernel at work on a built-in conversation, offline.

An agent with a small context window (4,096 tokens, of which the tool schemas
take about 1,800) talks with "Maya" over three sessions a few weeks apart:
she tells it about herself, her plans and the people around her, then asks
questions whose answers have long left the context window. The agent is
closed after the second session and reopened from its directory, as a new
process would, and its state digest is compared.

The LLM is replaced by :class:`RuleBasedPolicy`: a deterministic driver made
of a few rules over the latest user message and the tool results. It is NOT a
language model; it plays one so that everything the kernel does (memory
functions, the warning alert, flushes behind a recursive summary, prefetch
and page faults, persistence) can be watched without a server or an API key.

What the demo verifies about its own run (exit code 1 otherwise): every
question is answered with the expected fact, the run crosses the warning
watermark, flushes more than once, makes explicit page faults and answers
some questions from prefetched pages, the digests before closing and after
reopening are equal, and ``vm_check`` holds after every step.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from vmem import PageKind, page_kind
from vmem.app.activity import activity
from vmem.app.contextmap import render_map
from vmem.app.progress import Progress
from vmem.kernel import Agent, MemoryConfig, StepResult, prefix_cache, read_trace
from vmem.kernel.daemon import ConsolidationDaemon, DaemonConfig
from vmem.kernel.drivers import Completion, Driver, ToolCall
from vmem.kernel.summary import SUMMARIZER_PROMPT
from vmem.storage import display, is_url

__all__ = ["DEMO_CONFIG", "CONVERSATION", "Session", "Turn", "RuleBasedPolicy", "DemoReport", "run_demo"]

#: The demo agent's configuration: a small window, so memory pressure comes quickly.
DEMO_CONFIG = MemoryConfig(window=4096, reserve_output=512, keep_last=4, ws_budget=320, prefetch=2, page_size=3)

SYSTEM_PROMPT = (
    "You are a personal assistant with a paged memory. Keep the key facts about the user in core "
    "memory, save everything else worth keeping to archival memory, and search archival memory or "
    "the conversation history before answering a question whose answer is not in your context."
)
BLOCKS: dict[str, Any] = {
    "persona": {"value": "I am Vee, a concise assistant who remembers what the user tells me.", "limit": 300},
    "human": {"value": "", "limit": 600, "description": "key facts about the user"},
}


# ---------------------------------------------------------------------- the conversation


@dataclass(frozen=True)
class Turn:
    """One user message; ``expect`` is the fact a good answer must contain (questions only)."""

    text: str
    expect: str | None = None


@dataclass(frozen=True)
class Session:
    """A conversation session on one day."""

    title: str
    start: _dt.datetime
    turns: tuple[Turn, ...]


def _at(day: str, hour: int) -> _dt.datetime:
    return _dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=_dt.timezone.utc)


CONVERSATION: tuple[Session, ...] = (
    Session("first meeting", _at("2024-03-04", 19), (
        Turn("Hi! My name is Maya. I live in Lisbon and I work as a nurse at Santa Maria hospital."),
        Turn("My dog Pixel is a three-year-old beagle who is terrified of thunderstorms."),
        Turn("My sister Inês lives in Porto and her birthday is on 14 May."),
        Turn("I'm allergic to peanuts, so please keep that in mind for recipes."),
        Turn("Today I finally fixed the leaking kitchen tap myself."),
        Turn("I love cooking Goan fish curry on Sundays for friends."),
        Turn("By the way, which dog breed is Pixel?", expect="beagle"),
    )),
    Session("plans", _at("2024-03-16", 10), (
        Turn("I'm planning a trip to Japan in October with my partner João."),
        Turn("We want to spend a week in Kyoto and then hike the Nakasendo trail."),
        Turn("My colleague Rui will look after Pixel while we are away."),
        Turn("I started learning to surf at Carcavelos beach on Sunday mornings."),
        Turn("I also signed up for the Lisbon half marathon next March."),
        Turn("My best friend Leonor is getting married in Sintra on 8 June."),
        Turn("When is the birthday of my sister?", expect="14 May"),
        Turn("Who will look after Pixel during the trip?", expect="Rui"),
    )),
    Session("a few weeks later", _at("2024-04-02", 18), (
        Turn("Big news: we moved from Lisbon to Porto last week, closer to my sister."),
        Turn("I switched jobs too: I now work as a nurse at São João hospital."),
        Turn("My partner João got a job at a design studio by the river."),
        Turn("The Japan trip is booked: we fly to Osaka on 3 October."),
        Turn("The weather here has been rainy all week."),
        Turn("Where do I live now?", expect="Porto"),
        Turn("What did I tell you about the kitchen tap?", expect="kitchen tap"),
        Turn("What did I tell you about my plans on 16 March?", expect="Japan"),
        Turn("Which trail do we want to hike in Japan?", expect="Nakasendo"),
        Turn("What am I allergic to?", expect="peanuts"),
        Turn("Which race did I sign up for?", expect="half marathon"),
        Turn("Whose wedding is in Sintra?", expect="Leonor"),
    )),
)
REOPEN_BEFORE = 2  #: the agent is closed and reopened before this session (0-based)


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
_NOW = re.compile(r"now: (\d{4})-\d\d-\d\d")
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
            day = page.meta.split(" · ")[0][:10]
            when = _dt.date.fromisoformat(day).strftime("%-d %B")
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


# ---------------------------------------------------------------------- the run


class _Style:
    """ANSI styles, or none."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text


@dataclass
class DemoReport:
    """What the demo run did (its self-checks read this)."""

    user_messages: int = 0
    llm_steps: int = 0
    summaries: int = 0
    alerts: int = 0
    flushes: int = 0
    prefetched: int = 0
    page_faults: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    answers: list[tuple[str, str, str, bool]] = field(default_factory=list)  # question, reply, source, ok
    digest_before: str = ""
    digest_after: str = ""
    checks: int = 0
    seconds: float = 0.0
    model: str | None = None  #: the real model's name, when a server answered (not RuleBasedPolicy)
    prompt_tokens: int = 0  #: step calls after a step call with no flush between: tokens sent ...
    cached_tokens: int = 0  #: ... and those the server said it served from its prompt cache
    model_seconds: float = 0.0
    daemon_runs: int = 0  #: consolidation runs applied (with a daemon)
    daemon_applied: int = 0  #: their proposals applied
    blocks_changed: list[str] = field(default_factory=list)  #: core memory blocks the run changed

    def failures(self) -> list[str]:
        """What the run should have shown and did not. With a real model only what the kernel
        owes counts (the invariants after every step, an identical state after reopening):
        a small model answering badly is reported, not a failure."""
        if self.model is not None:
            same = self.digest_before and self.digest_before == self.digest_after
            return [] if same else ["the digest after reopening differs from the one before closing"]
        out = []
        wrong = [q for q, _, _, ok in self.answers if not ok]
        if wrong:
            out.append(f"{len(wrong)} question(s) not answered with the expected fact: {wrong}")
        if not self.alerts:
            out.append("the warning watermark was never crossed")
        if self.flushes < 2:
            out.append(f"expected more than one flush, got {self.flushes}")
        if not self.page_faults:
            out.append("no explicit page fault")
        if not any(src == "working set" for _, _, src, _ in self.answers):
            out.append("no answer came from a prefetched page")
        if not self.digest_before or self.digest_before != self.digest_after:
            out.append("the digest after reopening differs from the one before closing")
        return out


class DemoClock:
    """A deterministic clock: the agent's creation a minute before the first session, then each
    session's messages two minutes apart from its start (one reading per step)."""

    def __init__(self, sessions: Sequence[Session]) -> None:
        self._times = iter([s.start + _dt.timedelta(minutes=2 * i) for s in sessions for i in range(len(s.turns))])
        self._now = sessions[0].start - _dt.timedelta(minutes=1)
        self._started = False

    def __call__(self) -> _dt.datetime:
        if self._started:
            self._now = next(self._times, self._now)
        self._started = True
        return self._now


def _describe_call(name: str, arguments: dict[str, Any] | None, width: int = 100) -> str:
    args = {k: v for k, v in (arguments or {}).items() if k != "request_heartbeat"}
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    text = f"{name}({text})"
    return text if len(text) <= width else text[: width - 1] + "…"


def _page_names(pages: Sequence[int]) -> str:
    kinds = {PageKind.PASSAGE: "archival", PageKind.MESSAGE: "recall"}
    return ", ".join(f"{kinds.get(page_kind(p), '?')} {p & ((1 << 56) - 1)}" for p in pages)


def run_demo(out: TextIO, *, color: bool = False, directory: str | Path | None = None,
             quiet: bool = False, driver: Driver | None = None, model: str | None = None,
             config: MemoryConfig = DEMO_CONFIG, daemon: Driver | None = None,
             daemon_every: int = 3, progress: Progress | None = None) -> tuple[int, DemoReport]:
    """Run the demo, writing to ``out``; return (exit code, report).

    ``progress``: shows each slow call of the real model live (its own stream, stderr in the CLI).

    ``directory``: where the agent lives (kept afterwards; must not hold an
    agent); None for a temporary directory removed at the end. ``driver``: a real
    model's driver (named ``model`` in the report) instead of RuleBasedPolicy.
    ``daemon``: a driver for a consolidation daemon beside the agent
    (:class:`vmem.kernel.daemon.ConsolidationDaemon`, every ``daemon_every`` turns; it
    finishes its work at the end of each session, the weeks between them being idle time).
    """
    style = _Style(color)
    report = DemoReport(model=model if driver is not None else None)
    started = time.perf_counter()
    tmp = None
    path: str | Path  # the agent's directory, or a PostgreSQL URL
    if directory is None:
        tmp = tempfile.mkdtemp(prefix="vmem-demo-")
        path = Path(tmp) / "agent"
    else:
        path = directory if is_url(directory) else Path(directory)
    rules = RuleBasedPolicy()
    if driver is not None and progress is not None:
        driver = progress.wrap(driver)
    policy: Driver = _Timed(driver, report) if driver is not None else rules
    clock = DemoClock(CONVERSATION)

    def say(text: str = "") -> None:
        if not quiet:
            out.write(text + "\n")

    try:
        if driver is None:
            say(style("vmem demo", "1") + ": a MemGPT-style agent with a " f"{config.window:,}-token window, "
                "driven by RuleBasedPolicy,")
            say("a deterministic rule-based stand-in for the LLM (not a language model): no server, no API key.")
        else:
            say(style("vmem demo", "1") + f": a MemGPT-style agent with a {config.window:,}-token window, "
                f"answered by the model {model}")
            say("(the same conversation; how well it answers is the model's, what the memory does is the kernel's)")
        say(f"agent directory: {display(path)}" + ("" if tmp is None else " (temporary)"))
        agent = Agent.create(path, system=SYSTEM_PROMPT, blocks=BLOCKS, driver=policy, config=config,
                             clock=clock)
        kswapd = ConsolidationDaemon(agent, daemon, DaemonConfig(every=daemon_every)) if daemon else None
        shown = failed = 0  # the daemon's reports and errors already shown
        memory = agent.memory
        c = memory.ctx.config
        say(f"budget {c.budget:,} tokens = window {c.window:,} - output reserve {config.reserve_output:,} "
            f"- tool schemas {c.reserve - config.reserve_output:,}; warn at {c.warn:.0%}, "
            f"flush at {c.flush:.0%}; prefetch {config.prefetch} pages per message")
        say(render_map(memory.context_map(), color=color))
        try:
            for n, session in enumerate(CONVERSATION):
                if n == REOPEN_BEFORE:
                    if kswapd is not None:
                        kswapd.stop()
                    agent = _reopen(agent, path, policy, clock, report, say, style)
                    if daemon is not None:
                        kswapd = ConsolidationDaemon(agent, daemon, DaemonConfig(every=daemon_every))
                        shown = failed = 0
                say()
                say(style(f"── session {n + 1} · {session.start:%a %-d %b %Y} · {session.title} ", "1;36")
                    + "─" * max(0, 40 - len(session.title)))
                for k, turn in enumerate(session.turns):
                    if progress is not None:
                        progress.stage = (f"session {n + 1} of {len(CONVERSATION)}, message {k + 1} of "
                                          f"{len(session.turns)}")
                    _step(agent, turn, rules if driver is None else None, report, say, style, color)
                if kswapd is not None:  # the time until the next session: the daemon finishes its run
                    kswapd.wait()
                    for run in kswapd.reports[shown:]:
                        say(f"{style('kswpd', '1;33')} consolidated messages {run.start + 1}-{run.end}: "
                            f"{run.applied} applied, {run.skipped_total} skipped of {run.proposed} proposed")
                        report.daemon_runs += 1
                        report.daemon_applied += run.applied
                    shown = len(kswapd.reports)
                    for error in kswapd.errors[failed:]:
                        say(f"{style('kswpd', '1;31')} {error}")
                    failed = len(kswapd.errors)
            evicted, summary = agent.memory.evicted, agent.memory.summary
            say()
            say(style(f"the recursive summary of the {evicted} evicted messages, as the agent sees it now:", "1"))
            say("\n".join("  " + line for line in summary.splitlines()))
            say(style("core memory (human):", "1"))
            say("\n".join("  " + line for line in agent.memory.block("human").value.splitlines()))
        finally:
            if kswapd is not None:
                kswapd.stop()
            if not agent.memory.closed:
                agent.close()
        if driver is None:
            report.summaries = rules.summaries
        _cache_figures(path, report)
        report.seconds = time.perf_counter() - started
        failures = report.failures()
        _summary(out, report, style, failures)
        return (1 if failures else 0), report
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _reopen(agent: Agent, path: str | Path, policy: Driver, clock: DemoClock,
            report: DemoReport, say: Callable[..., None], style: _Style) -> Agent:
    report.digest_before = agent.memory.digest()
    agent.close()
    say()
    say(style("── closing the agent and reopening it from its directory (as a new process would) ", "1;35"))
    say(f"state digest before close: {report.digest_before}")
    agent = Agent.open(path, driver=policy, clock=clock)
    report.digest_after = agent.memory.digest()
    same = "identical" if report.digest_after == report.digest_before else style("DIFFERENT", "1;31")
    say(f"state digest after open:   {report.digest_after}  ({same})")
    return agent


def _step(agent: Agent, turn: Turn, policy: RuleBasedPolicy | None, report: DemoReport,
          say: Callable[..., None], style: _Style, color: bool) -> None:
    """One user message; ``policy`` None when a real model answers (its replies are checked)."""
    before_answers = len(policy.answers) if policy is not None else 0
    evicted_before = agent.memory.evicted
    result: StepResult = agent.step(turn.text)
    agent.memory.check()  # every invariant of the memory (the C core's vm_check among them)
    report.checks += 1
    report.user_messages += 1
    report.llm_steps += result.steps
    report.alerts += result.alerts
    report.flushes += result.flushes
    report.prefetched += len(result.paged_in)
    for call in result.calls:
        report.calls[call.name] = report.calls.get(call.name, 0) + 1
        if call.name in ("archival_memory_search", "conversation_search"):
            report.page_faults += 1
    say()
    say(f"{style('user ', '1;34')} {turn.text}")
    if result.paged_in:
        say(f"{style('pref ', '33')} kernel prefetched {len(result.paged_in)} page(s) into the working set "
            f"before the call: {_page_names(result.paged_in)}")
    if result.alerts:
        say(f"{style('alert', '1;33')} warning watermark crossed: the kernel inserted a memory-pressure alert")
    for call in result.calls:
        mark = "ok" if call.ok else style("failed", "31")
        fault = " ← page fault" if call.name in ("archival_memory_search", "conversation_search") else ""
        if call.name != "send_message":
            say(f"{style('call ', '2')} {_describe_call(call.name, call.arguments)} → {mark}{fault}")
    if result.flushes:
        evicted, summary = agent.memory.evicted, agent.memory.summary
        items = sum(1 for line in summary.splitlines() if line.startswith("- "))
        fold = re.match(r"Running summary \(fold (\d+)", summary)
        say(f"{style('flush', '1;35')} flush watermark reached: {evicted - evicted_before} oldest queue messages "
            f"evicted to recall storage behind a recursive summary (fold {fold.group(1) if fold else '?'}: "
            f"{items} items, {len(summary.split())} words)")
    for reply in result.replies:
        say(f"{style('agent', '1;32')} {reply}")
    if policy is None:  # a real model: does its reply hold the expected fact?
        if turn.expect is not None:
            reply = " ".join(result.replies)
            ok = turn.expect.lower() in reply.lower()
            report.answers.append((turn.text, reply, "the model" if reply else "no answer", ok))
            say(f"{style('check', '2')} {'✓' if ok else style('✗ expected ' + repr(turn.expect), '31')}")
    else:
        for answer in policy.answers[before_answers:]:
            ok = turn.expect is not None and turn.expect.lower() in answer.reply.lower()
            report.answers.append((turn.text, answer.reply, answer.source, ok))
            verdict = "✓" if ok else style("✗ expected " + repr(turn.expect), "31")
            say(f"{style('from ', '2')} {answer.source} {verdict}")
        if turn.expect is not None and len(policy.answers) == before_answers:
            report.answers.append((turn.text, "", "no answer", False))
    if result.usage:
        u = result.usage[-1]
        cached = f", {u.cached_tokens:,} from the server's prompt cache" if u.cached_tokens is not None else ""
        say(f"{style('usage', '2')} {result.steps} LLM call(s); the last prompt {u.prompt_tokens:,} tokens{cached}")
    say(render_map(agent.memory.context_map(), color=color))


class _Timed(Driver):
    """A real model's driver, timed (the report splits model time from kernel time)."""

    def __init__(self, inner: Driver, report: DemoReport) -> None:
        self.inner, self.report = inner, report

    def complete(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> Completion:
        t = time.perf_counter()
        try:
            return self.inner.complete(messages, tools)
        finally:
            self.report.model_seconds += time.perf_counter() - t
            if not tools:
                self.report.summaries += 1


def _cache_figures(path: str | Path, report: DemoReport) -> None:
    """Prompt tokens sent and served from the server's cache where the prefix should be stable;
    the core memory blocks changed."""
    events = list(read_trace(path))
    tally = prefix_cache(events)
    report.prompt_tokens, report.cached_tokens = tally.prompt_tokens, tally.cached_tokens
    report.blocks_changed = activity(events).blocks


def _summary(out: TextIO, r: DemoReport, style: _Style, failures: list[str]) -> None:
    sources: dict[str, int] = {}
    for _, _, src, _ in r.answers:
        sources[src] = sources.get(src, 0) + 1
    right = sum(ok for *_, ok in r.answers)
    out.write("\n" + style("summary", "1") + "\n")
    who = f"the model {r.model}" if r.model else "RuleBasedPolicy (not a language model)"
    out.write(f"  {r.user_messages} user messages in {len(CONVERSATION)} sessions; {r.llm_steps} LLM steps "
              f"({r.llm_steps / max(1, r.user_messages):.1f} per message) and {r.summaries} summary calls to {who}\n")
    out.write(f"  memory pressure: {r.alerts} warning alert(s), {r.flushes} flushes into a recursive summary\n")
    calls = ", ".join(f"{n} {k}" for k, n in sorted(r.calls.items()))
    out.write(f"  memory functions: {calls or 'none'}\n")
    out.write(f"  core memory blocks changed: {', '.join(r.blocks_changed) or 'none'}\n")
    out.write(f"  paging: {r.page_faults} explicit page faults (searches), {r.prefetched} pages prefetched "
              f"by the kernel without a call\n")
    out.write(f"  answers: {right}/{len(r.answers)} with the expected fact ("
              + ", ".join(f"{n} from {s}" for s, n in sorted(sources.items())) + ")\n")
    if r.daemon_runs:
        out.write(f"  consolidation daemon: {r.daemon_runs} runs, {r.daemon_applied} proposals applied\n")
    same = "identical" if r.digest_before and r.digest_before == r.digest_after else "DIFFERENT"
    out.write(f"  persistence: digest before close {r.digest_before[:16]}… after reopen "
              f"{r.digest_after[:16]}… ({same})\n")
    if r.prompt_tokens:
        out.write(f"  prompt cache: {r.cached_tokens:,} of {r.prompt_tokens:,} prompt tokens between flushes served "
                  f"from the server's cache ({100 * r.cached_tokens / r.prompt_tokens:.0f}%)\n")
    model = f" ({r.model_seconds:.1f} s in the model, {r.seconds - r.model_seconds:.1f} s the rest)" if r.model else ""
    out.write(f"  invariants: Memory.check() (vm_check among them) passed after all {r.checks} steps; "
              f"{r.seconds:.1f} s{model}\n")
    for f in failures:
        out.write(style(f"  FAILED: {f}", "1;31") + "\n")
