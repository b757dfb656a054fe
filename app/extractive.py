"""ExtractiveSummarizer: a summarizer for a memory's flushes that calls no model.

Interface:

- :class:`ExtractiveSummarizer` -- ``summarizer(request) -> str`` for :meth:`Memory.context`
  (a :data:`vmem.kernel.summary.SummaryRequest` in, the new summary's text out).

Why: a flush folds evicted messages into the recursive summary through a summarizer, which is
normally the agent's own model. Replaying a long recorded conversation into a memory (``vmem
eval qa`` ingests LoCoMo's ~600 turns per conversation) would then cost one model call per
flush, far too slow on a CPU; this summarizer keeps the memory machinery real (the same
appends, watermarks, flushes and recursive folding) while the model is called only for what is
measured.

What it writes. It reads the request the kernel sends (:func:`vmem.kernel.summary.fold`: a
system prompt asking for "at most N words", then the previous summary and the transcript lines
to fold in) and answers with lines of extracted sentences:

1. The lines to fold (a system message's lines aside: the kernel's notes, such as its pressure
   alerts, are not what was said) are split into sentences, each kept with its speaker (``Name: ...`` after
   the role) and the latest date seen (a ``[Session n · date]`` marker, as the harness writes
   it at a session's first turn, sets the date for what follows).
2. Each sentence scores by its content: distinct words outside a stop list, plus two for each
   number and each capitalised word that does not start the sentence (names, places, titles).
   Sentences under four words score nothing.
3. The best sentences, up to a third of the word allowance, are kept in their original order,
   grouped by date as ``On <date>: Speaker: sentence | Speaker: sentence`` (when even the best
   one is longer than that, its first words).
4. The previous summary's lines come first; while the whole is over the allowance the oldest
   line goes (the newest folds are kept: the recursive summary forgets from its far end).

It is a baseline for a model's summary, not a replacement: it cannot merge facts or resolve
"yesterday" into a date. Deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ExtractiveSummarizer"]

_WORDS = re.compile(r"at most (\d+) words")
_PREVIOUS = "Previous summary:\n"
_MESSAGES = "\n\nMessages to fold in:\n"
_MARKER = re.compile(r"^\[Session (\d+) · ([^\]]+)\]\s*")
_ROLE = re.compile(r"^(?:\(continued\) )?(user|assistant|system|tool): ?")
_SPEAKER = re.compile(r"^([A-Z][\w .'-]{0,40}?): ")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'-]*|\d[\d,.:/-]*")
_STOP = frozenset("""
a about above after again all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just let
me more most my myself no nor not now of off on once only or other our ours ourselves out over
own really same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which while
who whom why will with would you your yours yourself yourselves yeah yes oh wow hey hi thanks
thank great awesome cool totally sounds sure glad love like good nice know think get got going
""".split())


class ExtractiveSummarizer:
    """Answers a memory's summary requests with extracted sentences (see the module doc).

    ``share``: the fraction of the allowance one fold may add (default a third).
    """

    def __init__(self, share: float = 1 / 3) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share = share
        self.requests = 0  #: summary requests answered

    def __call__(self, request: Sequence[Mapping[str, Any]]) -> str:
        system = next((m["content"] for m in request if m.get("role") == "system"), "")
        user = next((m["content"] for m in request if m.get("role") == "user"), None)
        found = _WORDS.search(system or "")
        if user is None or found is None or _MESSAGES not in user:
            raise ValueError("ExtractiveSummarizer: not a summary request of vmem.kernel.summary.fold "
                             "(a system prompt naming 'at most N words', previous summary and messages)")
        self.requests += 1
        words = int(found.group(1))
        head, body = user.split(_MESSAGES, 1)
        previous = head[len(_PREVIOUS):] if head.startswith(_PREVIOUS) else head
        previous = "" if previous.strip() == "(none)" else previous.strip()
        lines = [line for line in previous.splitlines() if line.strip()]
        lines += self._extract(body.splitlines(), max(8, int(words * self.share)), _last_date(lines))
        while len(lines) > 1 and sum(len(line.split()) for line in lines) > words:
            lines.pop(0)
        if lines and len(lines[0].split()) > words:
            lines[0] = " ".join(lines[0].split()[:words])
        return "\n".join(lines)

    @staticmethod
    def _extract(raw: list[str], allowance: int, date: str | None) -> list[str]:
        """Lines ``On <date>: ...`` of the best sentences of ``raw``, within ``allowance`` words."""
        candidates: list[tuple[int, str | None, str, str]] = []  # (position, date, speaker, sentence)
        speaker = ""
        kernel_note = False  # a system message's lines: the kernel's notes (pressure alerts...), not the talk
        for line in raw:
            role = _ROLE.match(line.strip())
            if role:
                kernel_note = role.group(1) == "system"
            if kernel_note:
                continue
            text = _ROLE.sub("", line.strip(), count=1)
            marker = _MARKER.match(text)
            if marker:
                date = marker.group(2).strip()
                text = text[marker.end():]
            named = _SPEAKER.match(text)
            if named:
                speaker, text = named.group(1), text[named.end():]
            for sentence in _SENTENCE.split(text):
                if sentence.strip():
                    candidates.append((len(candidates), date, speaker, sentence.strip()))
        ranked = sorted(candidates, key=lambda c: (-_score(c[3]), c[0]))
        chosen: list[tuple[int, str | None, str, str]] = []
        used = 0
        for cand in ranked:
            n = len(cand[3].split())
            if _score(cand[3]) == 0 or used + n > allowance:
                continue
            chosen.append(cand)
            used += n
        best = ranked[0] if ranked and _score(ranked[0][3]) else None
        if not chosen and best is not None:  # nothing fits whole: the best sentence, cut to the allowance
            chosen.append((best[0], best[1], best[2], " ".join(best[3].split()[:allowance])))
        chosen.sort()
        out: list[str] = []
        group: list[str] = []
        group_date: str | None = None
        for _, when, who, sentence in chosen:
            if group and when != group_date:
                out.append(_line(group_date, group))
                group = []
            group_date = when
            group.append(f"{who}: {sentence}" if who else sentence)
        if group:
            out.append(_line(group_date, group))
        return out


def _score(sentence: str) -> int:
    tokens = _TOKEN.findall(sentence)
    if len(tokens) < 4:
        return 0
    content = {t.lower() for t in tokens if t.lower() not in _STOP}
    numbers = sum(1 for t in tokens if t[0].isdigit())
    names = sum(1 for t in tokens[1:] if t[0].isupper() and t.lower() not in _STOP)
    return len(content) + 2 * numbers + 2 * names


def _line(date: str | None, parts: list[str]) -> str:
    return (f"On {date}: " if date else "") + " | ".join(parts)


def _last_date(lines: list[str]) -> str | None:
    for line in reversed(lines):
        if line.startswith("On ") and ": " in line:
            return line[3:line.index(": ")]
    return None
