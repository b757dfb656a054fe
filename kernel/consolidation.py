"""Consolidation: one run of the kernel's kswapd over a memory's new turns.

Interface::

    batch = take_batch(memory.store, memory.consolidation_cursor)   # the turns since the last run
    answer = ask(batch, driver, lookup=facts_like(memory.store))   # the model's proposals (slow; reads only)
    report = apply(memory, batch, answer)    # checked and applied: ONE transaction of the memory
    report = consolidate(memory, driver)     # the three, synchronously

A run has three phases so that its slow part, the LLM, holds nothing: :func:`take_batch`
reads committed state only (the agent's own store between steps, or a read-only open of
it from another thread or process); :func:`ask` calls the daemon's own driver (it may be a
cheaper model than the agent's, or the same server) and reads the answers leniently
(:mod:`vmem.kernel.proposals`); :func:`apply` runs in the memory's owner (the agent's
thread, between steps; or the ``vmem consolidate`` process once it holds the store's lock).

What a run asks of the model (small local models included):

1. One call: the core memory blocks it may write, the known facts related to the turns
   (numbered), the turns; the answer is ``{"<block>": [lines], "facts": [...]}``. Each block
   line the run adds is a fact too (dated, searchable once the block lets the line go, and
   replaced like any fact): small models often write the user's news to core memory only.
2. For each new fact, the two known facts closest to it or to the turn it comes from
   (:func:`~.proposals.closeness`: the same topic, then content words in common, not counting
   words most of the store holds such as the user's name), among the batch's known facts and
   those ``lookup`` finds for the fact's own words, when the model did not say it replaces
   them and the fact does not simply say them again (:func:`~.proposals.restates`): one short
   yes/no call each (at most ``checks`` per run): does the new fact mean the old one is no
   longer true? So the daemon finds supersessions the model did not state. One shared word is
   enough to ask (an update rarely repeats the old words: "by bus" -> "I cycle to work now");
   the closest two, not every related fact, because a small model answers yes to most pairs it
   is shown. A fact of the form ``topic: detail`` supersedes the current facts with the same
   topic and another detail without asking (at apply, against the whole store).
   Before those, for each new fact (at most ``picks`` a run), one choice: which of up to ten
   known facts (the related ones, then the batch's ``nearby``: the daemon's newest facts and those
   nearest the turns by vector) is it about, if any? The one picked is asked about first: an update
   often shares no word with what it replaces ("platinum blonde" / "hair: copper red").
3. Known facts that say the same thing (:func:`~.proposals.near_duplicate`) are merged: the
   older is superseded by the newer (nothing is deleted).

:func:`apply` checks every proposal against the memory as it is then, and applies each one
whole or not at all (a savepoint each): a block edit needs its block to exist and be writable,
its old text to be there, the limit to hold, and a line that is not there yet; a fact must be
non-empty, at most :data:`MAX_FACT_CHARS`, and not a duplicate of a current fact; neither may
be a question (small models copy the user's questions); a supersession needs current facts that
exist. A bad proposal is skipped and counted by reason in :attr:`RunReport.skipped`. The run is
one transaction: the edits, facts, supersessions, the cursor and the trace event ``{"e":
"consolidate", ...}`` commit together, or (on an error that is not a bad proposal) nothing
does. A batch whose cursor another run moved in the meantime is stale: nothing is applied.

Facts are dated: ``valid_from`` is the time of the user turn they come from (not the time
the daemon ran), so "what was true then" (``as_of``) answers with the conversation's times.

:func:`replay_run` re-applies a recorded run (its event's ``ops``) in
:func:`vmem.kernel.replay.replay`, to the same digest.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmem import BudgetError, PageKind, make_page_id
from vmem.kernel.drivers import Completion, Driver
from vmem.kernel.errors import ContextWindowError, KernelError
from vmem.kernel.persistence import STATE_KEY, load_state
from vmem.kernel.proposals import (
    Batch,
    BlockEdit,
    Fact,
    KnownFact,
    Merge,
    Proposals,
    Supersession,
    Turn,
    closeness,
    content_words,
    dumps_choices,
    dumps_known,
    near_duplicate,
    normal,
    parse_pick,
    parse_proposals,
    parse_verdict,
    related,
    restates,
    topic,
)
from vmem.storage import BlockError, NotFoundError, Passage, Store

if TYPE_CHECKING:
    from vmem.kernel.memory import Memory

__all__ = [
    "Answer",
    "CHECKS",
    "FACT_TAG",
    "Lookup",
    "MAX_FACT_CHARS",
    "PICKS",
    "RunReport",
    "StaleBatch",
    "apply",
    "ask",
    "consolidate",
    "facts_like",
    "replay_run",
    "take_batch",
]

MAX_FACT_CHARS = 400
"""A fact longer than this is not a fact but a transcript: skipped ("too_long")."""
FACT_TAG = "consolidated"
"""The tag of every fact the daemon inserts (archival searches may filter on it)."""
MAX_BATCH_CHARS = 6000
"""The turns one run reads, in characters (a small model's window); the rest waits for the next run."""
MAX_TURN_CHARS = 600
MAX_KNOWN = 8
CHECKS = 6
"""Yes/no calls a run may make about known facts the new ones may replace (each ~1-2 s on a 1.5B model)."""
PICKS = 4
""""Which known fact is it about?" calls a run may make, one per new fact (each ~1-2 s on a 1.5B model)."""
MAX_CHOICES = 10
"""Known facts shown in one "which one" call."""
NEWEST = 8
"""The daemon's newest current facts a batch reads for the "which one" calls (with those nearest its turns)."""

SYSTEM = """You keep the long-term memory of an AI assistant up to date. Read the new conversation \
and answer with ONE JSON object, nothing else:
{{{keys}, "facts": ["..."]}}
- {labels}: short lines for that core memory block, written "topic: detail" (e.g. "name: Ana", \
"job: nurse"). A line with the same topic as an existing line replaces it.
- "facts": what is worth remembering later (events, plans, numbers, preferences), one short \
"topic: detail" each. If a new fact makes a known fact untrue, write {{"fact": "...", "replaces": N}} \
with the known fact's number N.
Use empty lists when there is nothing new. Do not repeat what memory already holds."""

PICK_SYSTEM = """You are given known facts about a user, numbered, and one new fact. Which known fact is \
about the same thing as the new fact (the same attribute of the same person or thing, even if its value \
changed)? Answer with ONE JSON object, nothing else: {"same": N} with the known fact's number, or \
{"same": 0} if no known fact is about the same thing."""

CHECK_SYSTEM = """You compare two facts about the same thing. Answer with ONE JSON object, nothing \
else: {"replaced": true} if the new fact means the old fact is no longer true, {"replaced": false} \
if both can be true."""


class StaleBatch(KernelError):
    """The memory's consolidation cursor is not where the batch began (another run applied first)."""


@dataclass
class Answer:
    """What the model proposed for a batch, with the exchanges that produced it."""

    proposals: Proposals
    texts: list[str] = field(default_factory=list)  #: the model's answers, in order (for the trace)
    checks: int = 0  #: yes/no calls made
    picks: int = 0  #: "which known fact is it about?" calls made
    unclear: int = 0  #: answers that could not be read (a yes/no that said neither, a choice not shown)


@dataclass
class RunReport:
    """What one run did."""

    start: int  #: the cursor before the run
    end: int  #: the cursor after it (== start when the run was stale or had nothing to read)
    messages: int = 0  #: messages read
    proposed: int = 0  #: proposals made (malformed items included)
    applied: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  #: skipped proposals by reason
    ops: list[dict[str, Any]] = field(default_factory=list)  #: what was applied (the trace's record)
    error: str | None = None  #: why the answer could not be read at all
    stale: bool = False  #: another run moved the cursor first: nothing was applied
    seconds: dict[str, float] = field(default_factory=dict)  #: phase -> wall time ("read", "ask", "apply"), if timed

    @property
    def skipped_total(self) -> int:
        """Proposals skipped, all reasons."""
        return sum(self.skipped.values())


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- reading the turns


def _turn_text(role: str, content: str, meta: dict[str, Any]) -> str:
    """What a message says: its text, or for an assistant the messages it sent with send_message."""
    parts = [content.strip()] if content and content.strip() else []
    if role == "assistant":
        for call in meta.get("tool_calls") or ():
            fn = call.get("function") or {}
            if fn.get("name") != "send_message":
                continue
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except (TypeError, ValueError):
                continue
            if isinstance(args, dict) and isinstance(args.get("message"), str):
                parts.append(args["message"].strip())
    text = " ".join(p for p in parts if p)
    return text if len(text) <= MAX_TURN_CHARS else text[: MAX_TURN_CHARS - 1] + "…"


Lookup = Callable[[str], Sequence[KnownFact]]
"""The current facts most like a text, read from the store as committed when asked (see :func:`facts_like`)."""


def facts_like(store: Store, size: int = 3) -> Lookup:
    """A :data:`Lookup` over ``store``: its text search, current facts only. Reads only."""
    def lookup(text: str) -> list[KnownFact]:
        return [KnownFact(h.id, h.text, h.held_from)
                for h in store.archival.search(text, mode="text", page_size=size).items if h.current]
    return lookup


def take_batch(store: Store, cursor: int, *, upto: int | None = None,
               max_chars: int = MAX_BATCH_CHARS) -> Batch | None:
    """The messages after ``cursor`` (a recall serial) in ``store``, as committed now, with the
    writable blocks and the current facts related to the user's turns; None if there is none.

    Reads only (any thread or process may call it on a read-only open of the store). A
    batch ends where ``max_chars`` of text is reached (at least one message); ``upto``
    caps its last serial."""
    last = len(store.recall) if upto is None else min(upto, len(store.recall))
    if last <= cursor:
        return None
    turns: list[Turn] = []
    used = 0
    end = cursor
    serial = cursor + 1
    while serial <= last:
        chunk = store.recall.get_many(make_page_id(PageKind.MESSAGE, s) for s in range(serial, min(last, serial + 31) + 1))
        for msg in chunk:
            text = _turn_text(msg.role, msg.content or "", msg.meta or {}) if msg.role in ("user", "assistant") else ""
            if text and turns and used + len(text) > max_chars:
                break
            end = serial
            serial += 1
            if text:
                turns.append(Turn(end, msg.role, text, msg.timestamp))
                used += len(text)
        else:
            continue
        break
    shared = load_state(store).shared if STATE_KEY in store.state else {}
    blocks = tuple(b for b in store.blocks.all() if not b.read_only and b.label not in shared)  # its own blocks
    known: dict[int, KnownFact] = {}
    like = facts_like(store)
    for turn in [t for t in turns if t.role == "user"][-6:]:
        for fact in like(turn.text):
            known.setdefault(fact.id, fact)
        if len(known) >= MAX_KNOWN:
            break
    chosen = tuple(list(known.values())[:MAX_KNOWN])
    return Batch(cursor, end, tuple(turns), blocks, chosen, _common_words(store, turns, chosen),
                 _nearby(store, turns, {k.id for k in chosen}))


def _nearby(store: Store, turns: Sequence[Turn], known: set[int]) -> tuple[KnownFact, ...]:
    """The daemon's own current facts an update may replace without a word in common with it: the
    :data:`NEWEST` newest, then the four nearest to the last two user turns by vector (by meaning, as
    far as the store's embedder knows it). Only the daemon's facts (tagged :data:`FACT_TAG`): the newest
    passages of a store may be a document's pages. Not ``known`` ones."""
    found: dict[int, KnownFact] = {}
    archival = store.archival

    def keep(hits: Sequence[Passage]) -> None:
        for h in hits:
            if h.current and h.id not in known:
                found.setdefault(h.id, KnownFact(h.id, h.text, h.held_from))

    keep(archival.search(None, tags=FACT_TAG, page_size=NEWEST).items)
    said = " ".join(t.text for t in [t for t in turns if t.role == "user"][-2:])
    if found and said:  # one search (the batch is read holding the agent's lock)
        keep(archival.search(said, mode="vector", tags=FACT_TAG, page_size=4).items)
    return tuple(found.values())


def _common_words(store: Store, turns: Sequence[Turn], known: Sequence[KnownFact]) -> frozenset[str]:
    """The known facts' words (those the turns hold too, or two facts) that more than half the store's
    passages hold (at least three passages): the user's name in "Ana drinks tea", "Ana has a dog" says
    nothing about which fact a new one is about. One count of the text index a word (~1 ms at 100k)."""
    total = len(store.archival)
    if total < 3:
        return frozenset()
    said = {w for t in turns for w in content_words(t.text)}
    seen = Counter(w for k in known for w in content_words(k.text))
    words = sorted(w for w, n in seen.items() if w in said or n > 1)  # "user" in "User's job: ..." too
    return frozenset(w for w in words if 2 * store.archival.search(w, mode="text", page_size=1).total > total)


# --------------------------------------------------------------------------- asking the model


def prompt(batch: Batch) -> list[dict[str, Any]]:
    """The messages of the run's one extraction call."""
    labels = [b.label for b in batch.blocks]
    keys = ", ".join(f'"{label}": ["..."]' for label in labels)
    system = SYSTEM.format(keys=keys, labels=", ".join(f'"{label}"' for label in labels) or "(no blocks)")
    lines = ["Core memory:"]
    for b in batch.blocks:
        about = f" ({b.description})" if b.description else ""
        lines.append(f"[{b.label}]{about}\n{b.value.strip() or '(empty)'}")
    lines.append("Known facts:\n" + (dumps_known(batch.known) or "(none)"))
    lines.append("New conversation:")
    for t in batch.turns:
        lines.append(f"[{t.time.strftime('%Y-%m-%d %H:%M')}] {t.role}: {t.text}")
    lines.append("Answer with the JSON object only.")
    if not batch.blocks:
        system = system.replace('{, "facts"', '{"facts"')
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(lines)}]


def _complete(driver: Driver, messages: list[dict[str, Any]]) -> str:
    completion = driver.complete(messages, [])
    if not isinstance(completion, Completion):
        raise KernelError(f"the daemon's driver returned {type(completion).__name__}, not a Completion")
    return completion.text or ""


def ask(batch: Batch, driver: Driver, *, checks: int = CHECKS, per_fact: int = 2,
        lookup: Lookup | None = None, picks: int = PICKS) -> Answer:
    """The model's proposals for ``batch``: one extraction call, then for each new fact (up to
    ``picks`` of them) one "which known fact is this about?" call over the batch's known and
    nearby facts, then up to ``checks`` yes/no calls about facts the new ones may replace: the
    fact the model picked, and the ``per_fact`` closest of the batch's known facts and of those
    ``lookup`` finds for the fact's own words (a known fact that shares no word with the turns: "I
    have 12 houseplants" for "31 plants now"). Touches no memory but through ``lookup`` (reads; any
    thread may run it); a DriverError propagates (the run is retried later)."""
    text = _complete(driver, prompt(batch))
    answer = Answer(parse_proposals(text, batch), [text])
    found = answer.proposals
    for i, edit in enumerate(found.edits):  # a core memory line is a fact too (applied only if the line is added)
        if normal(edit.new) and not any(near_duplicate(edit.new, f.text) for f in found.facts):
            found.facts.append(Fact(edit.new, line=i))
    stated = {(s.by, old) for s in found.supersessions for old in s.old}
    common = batch.common
    for index, fact in enumerate(found.facts):
        # what the fact is about: its words and its turn's ("0687 111 222" from "my new phone number is ...")
        said = batch.source_of(fact.text).text if batch.turns else fact.text
        pool = {k.id: k for k in batch.known}
        if lookup is not None and index < MAX_KNOWN:  # one search a fact, for the first few
            for k in lookup(fact.text):
                pool.setdefault(k.id, k)
        t_fact = topic(fact.text)

        def candidate(k: KnownFact) -> bool:
            if (index, k.id) in stated or near_duplicate(fact.text, k.text) or restates(fact.text, k.text):
                return False
            if related(fact.text, k.text, common):
                return True
            # the turn's words count unless both are "topic: detail" lines (then only the topic does)
            return (t_fact is None or topic(k.text) is None) and related(said, k.text, common)

        candidates = [k for k in pool.values() if candidate(k)]
        candidates.sort(key=lambda k: max(closeness(fact.text, k.text, common), closeness(said, k.text, common)),
                        reverse=True)
        asked = candidates[:per_fact]
        asked_ids = {k.id for k in asked}
        picked = (_pick(driver, answer, fact, index, [*pool.values(), *batch.nearby], stated, asked_ids)
                  if answer.picks < picks else None)
        only_picked = picked if picked is not None and picked.id not in asked_ids else None  # no word led to it
        if only_picked is not None:
            asked.insert(0, only_picked)
        for known in asked:
            if t_fact is not None and t_fact == topic(known.text):  # same topic, another detail: no need to ask
                found.supersessions.append(Supersession((known.id,), index, "topic"))
                continue
            if answer.checks >= checks:
                continue
            reply = _complete(driver, [{"role": "system", "content": CHECK_SYSTEM},
                                       {"role": "user", "content": f"Old fact: {known.text}\nNew fact: {fact.text}"}])
            answer.texts.append(reply)
            answer.checks += 1
            verdict = parse_verdict(reply)
            if verdict is None:
                answer.unclear += 1
            elif verdict:
                why = "picked" if known is only_picked else "checked"
                found.supersessions.append(Supersession((known.id,), index, why))
    for i, a in enumerate(batch.known):  # near-duplicates among the known facts: keep the newer
        for b in batch.known[i + 1:]:
            if near_duplicate(a.text, b.text):
                keep, drop = (a, b) if (a.time, a.id) >= (b.time, b.id) else (b, a)
                found.merges.append(Merge(keep.id, drop.id))
    return answer


def _pick(driver: Driver, answer: Answer, fact: Fact, index: int, pool: Sequence[KnownFact],
          stated: set[tuple[int, int]], asked: set[int]) -> KnownFact | None:
    """The known fact the model says ``fact`` is about (one call, counted in ``answer``), among the
    first :data:`MAX_CHOICES` of ``pool`` that ``fact`` neither repeats nor was stated to replace;
    None when the model chose none (or answered unclearly), and without a call when every choice
    is ``asked`` about already (or there is none).

    Why a choice: an update often shares no word with the fact it replaces ("came out platinum
    blonde" / "hair: copper red"), so word overlap cannot find it, and the yes/no question alone,
    asked of unrelated pairs, a small model answers yes to about half of. Shown seven statements,
    Qwen 1.5B picked the one the update was about in 40 of the dev set's 42 cases, and said "none"
    for 5 of 8 unrelated statements; the yes/no check then confirms."""
    choices = list({k.id: k for k in pool if (index, k.id) not in stated and not near_duplicate(fact.text, k.text)
                    and not restates(fact.text, k.text)}.values())[:MAX_CHOICES]
    if not {k.id for k in choices} - asked:
        return None
    question = f"Known facts:\n{dumps_choices(choices)}\n\nNew fact: {fact.text}"
    reply = _complete(driver, [{"role": "system", "content": PICK_SYSTEM}, {"role": "user", "content": question}])
    answer.texts.append(reply)
    answer.picks += 1
    n = parse_pick(reply, len(choices))
    if n is None:
        answer.unclear += 1
    return choices[n - 1] if n else None


# --------------------------------------------------------------------------- applying


def _block_value(memory: "Memory", edit: BlockEdit) -> str:
    """The block's value after ``edit``, checked (raises _Skip)."""
    try:
        block = memory.block(edit.label)
    except NotFoundError:
        raise _Skip("unknown_block") from None
    if block.read_only:
        raise _Skip("read_only")
    new = " ".join(edit.new.split())
    if not normal(new):  # nothing but spaces and punctuation ("...": a placeholder copied from the prompt)
        raise _Skip("empty")
    if _is_question(new):
        raise _Skip("question")
    lines = [line.strip() for line in block.value.splitlines()]
    if edit.old is None:
        words = content_words(new)
        # the same line, or one whose every word a line already says ("The user's assistant" beside "I am
        # the user's assistant.": Qwen 1.5B echoes the persona block back in its own words)
        if any(normal(line) == normal(new) or (words and words <= content_words(line)) for line in lines):
            raise _Skip("duplicate")
        value = block.value.rstrip("\n") + ("\n" if block.value.strip() else "") + new
    else:
        if edit.old not in block.value:
            raise _Skip("old_text_missing")
        if normal(edit.old) == normal(new):
            raise _Skip("duplicate")
        value = block.value.replace(edit.old, new, 1)
    if len(value) > block.limit:
        raise _Skip("limit")
    return value


def _is_question(text: str) -> bool:
    """A line that asks (ends with a question mark): what the user wants to know, not what is true
    (small models copy the user's questions into memory)."""
    return text.rstrip(" \"'»”)").endswith(("?", "？"))


def _current_facts(memory: "Memory", query: str, size: int = 10) -> list[Passage]:
    return [p for p in memory.store.archival.search(query, mode="text", page_size=size).items if p.current]


def _check_fact(memory: "Memory", fact: Fact, inserted: list[str], near: dict[str, list[Passage]]) -> str:
    """The fact's text, checked; ``near[text]``: the current facts most like it (for the topic rule too)."""
    text = " ".join(fact.text.split())
    if not normal(text):
        raise _Skip("empty")
    if len(text) > MAX_FACT_CHARS:
        raise _Skip("too_long")
    if _is_question(text):
        raise _Skip("question")
    if any(near_duplicate(text, other) for other in inserted):
        raise _Skip("duplicate")
    near[text] = _current_facts(memory, text)
    if any(near_duplicate(text, p.text) for p in near[text]):
        raise _Skip("duplicate")
    return text


def _checked_old(memory: "Memory", old: Sequence[int], by: int | None) -> list[int]:
    """The ids of ``old``, checked: they exist, are current, and are not ``by``."""
    ids = list(dict.fromkeys(int(i) for i in old))
    if not ids or by in ids:
        raise _Skip("not_found" if not ids else "self")
    try:
        found = memory.store.archival.get_many(ids, missing_ok=True)
    except ValueError:  # not a passage's page id at all
        raise _Skip("not_found") from None
    if len(found) != len(ids):
        raise _Skip("not_found")
    if not all(p.current for p in found):
        raise _Skip("not_current")
    return ids


def _at(ts: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)


def _do(memory: "Memory", op: dict[str, Any], ids: dict[int, int]) -> None:
    """Apply one recorded op (``ids`` maps recorded fact ids to this memory's; filled in here)."""
    kind = op["op"]
    if kind == "block":
        block = memory.block(op["label"])
        value = (block.value.replace(op["old"], op["new"], 1) if op["old"] is not None
                 else block.value.rstrip("\n") + ("\n" if block.value.strip() else "") + op["new"])
        memory.set_block(op["label"], value)
    elif kind == "fact":
        new = memory.archival_insert(op["text"], tags=(FACT_TAG,), valid_from=_at(op["valid_from"]))
        ids.update(zip(op["ids"], new))
        op["ids"] = op["ids"] or new
    elif kind == "supersede":
        by = op["by"]
        memory.supersede([ids.get(i, i) for i in op["old"]], by=ids.get(by, by) if by is not None else None,
                         at=_at(op["at"]))
    else:
        raise KernelError(f"unknown consolidation op {kind!r}")


def apply(memory: "Memory", batch: Batch, answer: Answer | Proposals) -> RunReport:
    """Check and apply what the model proposed for ``batch``, as ONE transaction of ``memory``
    (see the module docstring). Raises StaleBatch (nothing applied) if the memory's cursor
    is not ``batch.start``; any error that is not a bad proposal rolls the whole run back."""
    if isinstance(answer, Proposals):
        answer = Answer(answer)
    found = answer.proposals
    report = RunReport(batch.start, batch.end, messages=batch.end - batch.start, proposed=found.count,
                       error=found.error)
    skipped: Counter[str] = Counter()
    if found.malformed:
        skipped["malformed"] += found.malformed
    ids: dict[int, int] = {}

    def attempt(make_op: Callable[..., dict[str, Any]]) -> dict[str, Any] | None:
        """Check and apply one proposal in a savepoint: all of it, or nothing and a reason."""
        try:
            with memory.savepoint():
                op = make_op()
                _do(memory, op, ids)
        except _Skip as skip:
            skipped[skip.reason] += 1
            return None
        except (BlockError, NotFoundError, BudgetError, ContextWindowError, ValueError) as exc:
            # refused by the memory itself (the window, the block's limit, an id)
            skipped[f"refused: {type(exc).__name__}"] += 1
            return None
        report.ops.append(op)
        return op

    with memory.transaction():
        if memory.consolidation_cursor != batch.start:
            raise StaleBatch(f"the memory was consolidated up to message {memory.consolidation_cursor}, "
                             f"not {batch.start}, since this batch was read")
        added: set[int] = set()  # the block edits applied
        for i, edit in enumerate(found.edits):
            if attempt(lambda edit=edit: {"op": "block", "label": edit.label, "old": edit.old,
                                          "new": " ".join(edit.new.split()), "value": _block_value(memory, edit)}):
                added.add(i)
        fact_ids: dict[int, int] = {}  # fact index -> its passage id
        fact_times: dict[int, float] = {}
        inserted: list[str] = []
        near: dict[str, list[Passage]] = {}  # a fact's text -> the current facts most like it
        for index, fact in enumerate(found.facts):
            def make_fact(fact: Fact = fact) -> dict[str, Any]:
                if fact.line is not None and fact.line not in added:  # a line the block already held, or refused
                    raise _Skip("line_not_added")
                text = _check_fact(memory, fact, inserted, near)
                return {"op": "fact", "text": text, "valid_from": batch.time_of(text).timestamp(), "ids": []}
            op = attempt(make_fact)
            if op is not None:
                fact_ids[index] = op["ids"][0]
                fact_times[index] = op["valid_from"]
                inserted.append(op["text"])
        for sup in found.supersessions:
            if sup.by not in fact_ids:
                skipped["fact_skipped"] += 1
                continue
            attempt(lambda sup=sup: {"op": "supersede", "old": _checked_old(memory, sup.old, fact_ids[sup.by]),
                                     "by": fact_ids[sup.by], "at": fact_times[sup.by], "why": sup.why})
        for index, by in fact_ids.items():  # the same topic in the store: the new detail wins
            text = inserted[list(fact_ids).index(index)]
            key = topic(text)
            if key is None:
                continue
            done = {i for op in report.ops if op["op"] == "supersede" for i in op["old"]}
            stale = [p.id for p in near.get(text, ()) if p.id != by and p.id not in done and topic(p.text) == key]
            if stale:
                report.proposed += 1  # the daemon's own proposal: counted like the model's
                attempt(lambda stale=stale, by=by, index=index: {
                    "op": "supersede", "old": _checked_old(memory, stale, by), "by": by, "at": fact_times[index],
                    "why": "topic"})
        for merge in found.merges:
            attempt(lambda merge=merge: {"op": "supersede", "old": _checked_old(memory, [merge.drop], merge.keep),
                                         "by": merge.keep, "at": memory.now.timestamp(), "why": "merge"})
        for op in report.ops:
            op.pop("value", None)
        report.applied = len(report.ops)
        report.skipped = dict(skipped)
        memory.advance_consolidation(batch.end)
        memory.log({"e": "consolidate", "time": memory.now.timestamp(), "start": batch.start, "end": batch.end,
                    "proposed": report.proposed, "applied": report.applied, "skipped": report.skipped,
                    "error": report.error, "checks": answer.checks, "picks": answer.picks, "ops": report.ops,
                    "answers": [t[:4000] for t in answer.texts]})
    return report


def consolidate(memory: "Memory", driver: Driver, *, checks: int = CHECKS, picks: int = PICKS,
                max_chars: int = MAX_BATCH_CHARS) -> RunReport | None:
    """One whole run, synchronously, in the caller's thread (which must own ``memory``): the turns
    since the cursor (up to ``max_chars``), the model's proposals, applied. None when there are
    no new turns."""
    batch = take_batch(memory.store, memory.consolidation_cursor, max_chars=max_chars)
    if batch is None:
        return None
    return apply(memory, batch, ask(batch, driver, checks=checks, picks=picks, lookup=facts_like(memory.store)))


def replay_run(memory: "Memory", event: dict[str, Any]) -> None:
    """Re-apply a recorded run (a ``consolidate`` trace event) to ``memory``, in one transaction."""
    ids: dict[int, int] = {}
    with memory.transaction():
        ops = [dict(op) for op in event["ops"]]
        for op in ops:
            _do(memory, op, ids)
        memory.advance_consolidation(event["end"])
        memory.log(dict(event))
