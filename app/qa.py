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

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmem import VmemError
from vmem.app.evaluation import CATEGORIES
from vmem.app.f1 import score_answer
from vmem.kernel.drivers import Driver

from vmem.app.qa_items import (
    ADVERSARIAL_OPTION,
    Answer,
    Dialogue,
    Outcome,
    QAItem,
    QASettings,
    Session,
    Unavailable,
    load_dialogues,
    question_message,
    read_reply,
    select_items,
)
from vmem.app.qa_methods import METHODS, Method, daemon_status

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
        answer, error = Answer(), f"{type(exc).__name__}: {exc}"
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
