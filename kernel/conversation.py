"""Conversation: what an agent loop calls on its memory each step, a layer of Memory.

Messages in (:meth:`~Conversation.append`, :meth:`~Conversation.extend`, an imported
agent's history), the compiled context out (:meth:`~Conversation.prepare`, then
:meth:`~Conversation.compile`; :meth:`~Conversation.context` does both), and the memory
functions the LLM called run (:meth:`~Conversation.execute`), each result appended as a
tool message. Over :class:`vmem.kernel.image.MemoryImage`; :class:`vmem.kernel.Memory` is
where these are used::

    from vmem.kernel import Memory

    memory.append({"role": "user", "content": "Hi, I'm Ana"})
    messages = memory.context(summarizer=my_summarize)   # compiled, within budget
    reply = memory.assistant_message(my_llm(messages, tools=memory.tools))
    memory.append(reply)
    for call in reply.get("tool_calls") or ():
        memory.execute(call)

Interface: ``Conversation`` (the methods above, plus ``acontext``, ``observe_usage``,
``prefetch`` and ``import_history``), ``Context`` (the compiled context, a list with its
``digest``), ``Prepared`` (what ``prepare`` did), ``Summarizer``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vmem import Region
from vmem.kernel.context import SUMMARY_PAGE, page_text, render_summary, render_workset
from vmem.kernel.drivers.toolcalls import parse_text_tool_calls
from vmem.kernel.errors import ContextWindowError, KernelError, MessageError
from vmem.kernel.functions import CallRecord, as_tool_call, invoke
from vmem.kernel.image import MemoryImage, one_caller
from vmem.kernel.messages import check_order, normalise, pending_calls, shorten
from vmem.kernel.paging import prefetch_hits
from vmem.kernel.pressure import Room
from vmem.kernel.summary import SummaryRequest, asummarize, cap_text, summarize

__all__ = ["Context", "Conversation", "Prepared", "Summarizer"]

Summarizer = Callable[[SummaryRequest], Any]
"""``(messages) -> str`` (or an awaitable of it, with :meth:`Memory.acontext`); a Driver works too."""

#: What the model reads when its edit of a shared block could not be applied.
SHARED_REFUSED = ("[vmem] Your last edit of the shared block {label!r} was not applied: {reason}. Another agent "
                  "changed the block first; it now shows their version. Edit it again if your change still matters.")


_NOTE_TOKENS = 48  # a result that does not fit beside its answer's others: its start and where it is

_REGION_NAMES = (("system", Region.SYSTEM), ("core", Region.CORE), ("summary", Region.SUMMARY),
                 ("queue", Region.QUEUE), ("workset", Region.WORKSET))


def _aware(t: _dt.datetime | None) -> _dt.datetime | None:
    """``t`` checked: a message's time must say its time zone (MessageError if not)."""
    if t is not None and (not isinstance(t, _dt.datetime) or t.tzinfo is None):
        raise MessageError(f"a message's timestamp must be a timezone-aware datetime, got {t!r}")
    return t


class Context(list):  # type: ignore[type-arg]
    """The compiled context: a list of OpenAI chat messages, with the request's ``digest``."""

    digest: str


@dataclass
class Prepared:
    """What :meth:`Memory.prepare` did before an LLM call."""

    room: Room = field(default_factory=Room)  #: alert, flushes, summary calls
    paged_in: list[int] = field(default_factory=list)  #: pages prefetched into the working set


class _FailedCall(Exception):
    """Internal: a memory function call failed; its savepoint is rolled back."""

    def __init__(self, record: CallRecord) -> None:
        super().__init__(record.result)
        self.record = record


class Conversation(MemoryImage):
    """The agent loop's calls: messages in, the compiled context out, memory functions run."""

    # ================================================================ the conversation

    def append(self, message: Mapping[str, Any] | Any, *, timestamp: _dt.datetime | None = None,
               prefetch_for: str | None = None) -> int:
        """Add one OpenAI chat message to recall storage and the queue; return its page id.

        Accepts a dict or an ``openai`` message object: roles ``user``, ``assistant`` (with
        ``tool_calls``), ``tool`` (each result right after its call, in the calls' order)
        and ``system``. A user message starts a new turn (the clock is read). A message too
        large for the queue is stored whole in recall storage and represented in the queue by
        its summary (a user message, at the next :meth:`prepare`) or a shortened copy (other
        roles). Raises MessageError, changing nothing, for a message that breaks the chat protocol.

        ``timestamp`` (timezone-aware): when the message was sent, for history brought from
        elsewhere (an imported agent); it becomes the memory's current time instead of the
        clock's (user message) or the turn's (other roles).

        ``prefetch_for`` (a user message, with prefetch on): the text prefetch searches for instead
        of the message's content, for a message that wraps the user's words in an app's own
        instructions or template ("Answer briefly: ..."), which would otherwise be searched for too.
        """
        msg = normalise(message)
        if prefetch_for is not None:
            if not isinstance(prefetch_for, str):
                raise TypeError(f"prefetch_for must be text, got {type(prefetch_for).__name__}")
            if msg["role"] != "user":
                raise MessageError(f"prefetch_for is for a user message, this one is {msg['role']!r}")
        with self.transaction():
            return self._append(msg, _aware(timestamp), prefetch_for)

    def extend(self, messages: Iterable[Mapping[str, Any] | Any]) -> list[int]:
        """:meth:`append` each message, in one transaction (all or none)."""
        with self.transaction():
            return [self._append(normalise(m)) for m in messages]

    def _append(self, msg: dict[str, Any], timestamp: _dt.datetime | None = None,
                prefetch_for: str | None = None) -> int:
        check_order(msg, self.pending_calls)
        if len(msg.get("tool_calls") or ()) > self.config.max_calls:
            raise MessageError(f"an assistant message may hold at most {self.config.max_calls} tool calls "
                               f"(MemoryConfig.max_calls), this one holds {len(msg['tool_calls'])}")
        role, state = msg["role"], self._state
        if timestamp is not None:
            self._session.now = timestamp
        if role == "user":
            if timestamp is None:
                self._session.now = self.clock()
            state.turns += 1
            event = {"e": "user", "text": msg["content"], "time": self.now.timestamp()}
            if prefetch_for is not None:
                event["prefetch_for"] = prefetch_for  # a replay searches for the same text
            self.trace.write(event)
            if self.config.prefetch:
                self._session.prefetch = msg["content"] if prefetch_for is None else prefetch_for
        group = 0
        if role == "assistant" and msg.get("tool_calls"):
            state.group = state.group % (2**32 - 1) + 1
            group = state.group
        elif role == "tool":
            group = state.group
        meta: dict[str, Any] = {k: msg[k] for k in ("tool_calls", "tool_call_id", "name") if k in msg}
        tokens = self.counter.count(page_text(msg))
        if self.pressure.oversize(tokens):
            return self._append_oversize(msg, meta, tokens, group)
        if role == "tool" and self.pressure.group_overflows(self._group_tokens(), tokens):
            # the answer's results so far fill its share of the window: this one is kept whole in
            # recall storage, and its start with a note takes its place in the queue
            return self._append_oversize(msg, meta, tokens, group, quota=_NOTE_TOKENS)
        return self._enqueue(role, msg["content"] or "", meta, group, tokens)

    def _group_tokens(self) -> int:
        """Tokens of the newest answer's group in the queue: its assistant message and the results so far."""
        messages = self.queue.messages
        answered = 0
        for chat in reversed(messages):
            if chat["role"] != "tool":
                break
            answered += 1
        pages = self.ctx.pages(Region.QUEUE).tolist()[-(answered + 1):] if messages else []
        return sum(self.ctx.info(p).tokens for p in pages)

    def import_history(self, history: Iterable[tuple[Mapping[str, Any] | Any, _dt.datetime]], *,
                       summary: str = "",
                       recent: Iterable[tuple[Mapping[str, Any] | Any, _dt.datetime | None]] = ()) -> list[int]:
        """Bring an imported agent's history in: its older messages, its summary, its context.

        For a new memory, before any message. ``history``: ``(message, timestamp)`` pairs already
        out of the agent's context window: they go to recall storage verbatim and in order
        (searchable with conversation_search, never queued), checked against the chat protocol as
        :meth:`append` checks it. ``summary``: the recursive summary of those messages as the
        agent's previous host made it; with one they count as evicted and it becomes the
        memory's (a summary over its cap is kept whole in recall storage and cut, with a note
        saying where), without one they are stored-only history. ``recent``: the agent's
        in-context messages, oldest first: the newest of them that fit in half of what the queue
        may use (whole tool-call groups) are queued as :meth:`append` queues them; the older
        ones join the history in recall storage, counted as evicted, and a line of the summary
        says so (no LLM runs here: they are not summarised). So the next step runs whatever
        the imported context's size.

        Returns the page ids of the history's and then the recent messages, in order. All or
        nothing: KernelError if the memory holds messages already or a summary comes without
        history, MessageError for a message that breaks the protocol, ContextWindowError if
        the summary's note alone does not fit.
        """
        items = [(normalise(m), _aware(t)) for m, t in history]
        recents = [(normalise(m), _aware(t)) for m, t in recent]
        if summary and not items:
            raise KernelError("import_history: a summary needs the messages it summarises")
        with self.transaction():
            if self.stats.recall:
                raise KernelError("import_history: the memory holds messages already; older history comes first")
            cut = self._fitting(recents)
            folded, recents = recents[:cut], recents[cut:]
            done: list[dict[str, Any]] = []
            pages = []
            for msg, at in items + folded:
                check_order(msg, pending_calls(done))
                done.append(msg)
                if len(msg.get("tool_calls") or ()) > self.config.max_calls:
                    raise MessageError(f"import_history: an assistant message holds {len(msg['tool_calls'])} tool "
                                       f"calls, more than MemoryConfig.max_calls ({self.config.max_calls})")
                meta: dict[str, Any] = {k: msg[k] for k in ("tool_calls", "tool_call_id", "name") if k in msg}
                page = self.store.recall.append(msg["role"], msg["content"] or "", timestamp=at or self.now,
                                                meta=meta or None)
                self.stats.appended(page)
                pages.append(page)
            if pending_calls(done):
                raise MessageError(f"import_history: tool call(s) {', '.join(pending_calls(done))} have no result")
            state = self._state
            if folded:
                first, last = folded[0][1], folded[-1][1]
                when = f" ({first.date().isoformat()} to {last.date().isoformat()})" if first and last else ""
                note = (f"{len(folded)} more messages{when} were in the imported agent's context window but do not "
                        f"fit in this one: they are in recall storage (conversation_search), not in this summary.")
                summary = f"{summary}\n\n{note}" if summary else note
            if summary:
                state.evicted += len(pages)
                state.summary = self._imported_summary(summary)
                self.ctx.resize(SUMMARY_PAGE, self.pressure.summary_tokens())
                used, budget = self.ctx.stats().used, self.ctx.config.budget
                if used > budget:
                    raise ContextWindowError(f"the imported summary does not fit in the context window: with it "
                                             f"the context needs {used} tokens of a budget of {budget}")
            else:
                state.stored_only += len(pages)
            self.trace.write({"e": "history", "messages": len(pages), "summary": summary, "folded": len(folded)})
            self._session.dirty = True
            for msg, at in recents:
                pages.append(self._append(msg, at))
        return pages

    def _fitting(self, recents: list[tuple[dict[str, Any], _dt.datetime | None]]) -> int:
        """Where to cut imported context messages so that those after the cut fit in half of what the
        queue may use (the summary at its cap), at a message that is not a tool result."""
        room = (self.ctx.config.budget - int(self.ctx.stats().tokens[Region.SYSTEM])
                - int(self.ctx.stats().tokens[Region.CORE]) - self.pressure.summary_cap) // 2
        short = max(64, self.ctx.config.budget // 8)  # what an oversize message is queued as, about
        total, cut = 0, len(recents)
        for i in range(len(recents) - 1, -1, -1):
            msg = recents[i][0]
            total += min(self.counter.count(page_text(msg)), short)
            if total > room:
                break
            if msg["role"] != "tool":
                cut = i
        return cut

    def _imported_summary(self, summary: str) -> str:
        """An imported summary within its cap: a longer one is kept whole in recall storage (a
        stored-only message) and cut, with a note saying where."""
        cap = self.pressure.summary_cap
        if self.counter.count(render_summary(summary, max(self._state.evicted, 1))) <= cap:
            return summary
        page = self.store.recall.append("system", f"The imported agent's summary, whole:\n{summary}",
                                        timestamp=self.now, meta={"kind": "imported_summary"})
        self.stats.appended(page)
        self._state.stored_only += 1
        note = f"\n[cut: the whole imported summary is {page:#x} in recall storage]"
        return cap_text(summary, cap - self.counter.count(note) - 32, self.counter.count) + note

    def _append_oversize(self, msg: dict[str, Any], meta: dict[str, Any], tokens: int, group: int,
                         quota: int | None = None) -> int:
        """Keep a message too large for the queue verbatim in recall storage only; a user message
        is summarised into the queue at the next prepare(), any other is queued shortened now
        (to about ``quota`` tokens: by default an eighth of the budget)."""
        page = self.store.recall.append(msg["role"], msg["content"] or "", timestamp=self.now,
                                        meta={**meta, "kind": "oversize"})
        self.stats.appended(page)
        self._state.stored_only += 1
        self._session.dirty = True
        self.trace.write({"e": "oversize", "role": msg["role"], "page": page, "tokens": tokens})
        if msg["role"] == "user":
            self._state.pending.append(page)
            return page
        short = shorten(msg, quota or max(64, self.ctx.config.budget // 8), self.counter.count, page)
        meta = {k: short[k] for k in ("tool_calls", "tool_call_id", "name") if k in short}
        meta.update(kind="shortened", page=page)
        return self._enqueue(msg["role"], short["content"] or "", meta, group)

    # ================================================================ the context

    def prepare(self, *, force: bool = False) -> Generator[SummaryRequest, str, Prepared]:
        """Get the context ready for an LLM call (sans-IO): prefetch for the latest user message
        (when ``config.prefetch``), queue pending summaries, alert at the warning line, flush
        over the flush line (or when ``force``d, after a provider's overflow error).

        A generator: it yields summarizer requests (chat messages, no tools) and must be sent
        each summary's text; drive it to the end (or close it). :meth:`context` and
        :meth:`acontext` drive it for you. All of it is one transaction.
        """
        with self.transaction():
            prepared = Prepared()
            notices, self.shared_blocks.notices = self.shared_blocks.notices, []
            for label, reason in notices:  # an edit the model made that the shared store could not apply
                self._enqueue("system", SHARED_REFUSED.format(label=label, reason=reason), {"kind": "shared_refused"})
            if self._session.prefetch is not None:
                text, self._session.prefetch = self._session.prefetch, None
                prepared.paged_in = self.prefetch(text)
            prepared.room = yield from self.pressure.make_room(force)
            if prepared.room.alerted or prepared.room.flushes:
                self._session.dirty = True
            if self.stats.refresh(self._state, self.now):
                self._session.dirty = True
            tokens = self.ctx.stats().tokens  # what the LLM call gets, region by region (the inspector's history)
            self.trace.write({"e": "context", "time": self.now.timestamp(), "budget": self.ctx.config.budget,
                              "tokens": {name: int(tokens[r]) for name, r in _REGION_NAMES}})
            return prepared

    def prefetch(self, text: str) -> list[int]:
        """Page in the archival passages and recall messages most relevant to ``text``
        (``config.prefetch`` of each), as the kernel does before an LLM call; the pages admitted."""
        with self.transaction():
            hits = prefetch_hits(self.store, text, self.config.prefetch or 1, self.queue.pages())
            admitted = self.workset.page_in(hits)
            if hits:
                self._session.dirty = True
        return admitted

    def context(self, summarizer: Summarizer | None = None, *, force: bool = False) -> Context:
        """The compiled context, within budget: :meth:`prepare`, then :meth:`compile`.

        ``summarizer``: a callable ``(messages) -> str`` or a Driver, called when a flush
        needs a summary (KernelError if one is needed and none was given).
        """
        gen = self.prepare(force=force)
        try:
            request = next(gen)
            while True:
                request = gen.send(summarize(summarizer, request))
        except StopIteration:
            pass
        finally:
            gen.close()
        return self.compile()

    async def acontext(self, summarizer: Summarizer | None = None, *, force: bool = False) -> Context:
        """:meth:`context` with an ``async`` summarizer (or a Driver's ``acomplete``)."""
        gen = self.prepare(force=force)
        try:
            request = next(gen)
            while True:
                request = gen.send(await asummarize(summarizer, request))
        except StopIteration:
            pass
        finally:
            gen.close()
        return self.compile()

    @one_caller
    def compile(self) -> Context:
        """The main context as chat messages, as it stands (no flush), laid out for prompt caches:
        what changes least first (system and memory instructions, core memory, summary), then the queue (append-only
        between flushes), then what changes every step (statistics and clock, working set)."""
        state = self._state
        parts = [{"role": "system", "content": state.system}]
        if state.instructions:
            parts.append({"role": "system", "content": state.instructions})
        core = self.core_memory.render()
        if core is not None:
            parts.append({"role": "system", "content": core})
        if state.summary:
            parts.append({"role": "system", "content": render_summary(state.summary, state.evicted)})
        prefix = list(parts)
        parts += self.queue.messages
        tail = [{"role": "system", "content": self.stats.text}]
        if state.workset:
            tail.append({"role": "system", "content": render_workset(state.workset.values())})
        parts += tail
        out = Context(parts)
        out.digest = self._digest.digest(prefix, self.queue.digests, self.queue.version, tail, self._tools_digest)
        return out

    def observe_usage(self, prompt_tokens: int) -> None:
        """The provider counted ``prompt_tokens`` for the context as it stands (the last
        :meth:`compile`, with the tools): calibrate the budget to the model's tokenizer."""
        if self.counter.observe(prompt_tokens, self.ctx.stats().used, self.budget.tools_tokens):
            with self.transaction():
                self._sync_calibration()
                self.budget.apply(self.ctx, self._state, self.trace)
                self._session.dirty = True

    # ================================================================ memory functions

    def assistant_message(self, reply: Mapping[str, Any] | Any) -> dict[str, Any]:
        """The model's answer (an ``openai`` message object or its dict) as the chat message to
        :meth:`append`, with the calls of this memory's functions that the model wrote as JSON in
        its text made tool calls, and the text that remains as its content. Small local models
        often write their calls so when the server's chat template does not turn them into tool
        calls (what ``OpenAIDriver``'s ``auto`` tool mode reads too). A reply with tool calls of its
        own is returned as it is. MessageError if it is not an assistant message."""
        msg = normalise(reply)
        if msg["role"] != "assistant":
            raise MessageError(f"assistant_message: a reply has role assistant, not {msg['role']!r}")
        if msg.get("tool_calls"):
            return msg
        found = parse_text_tool_calls(msg.get("content"), known=set(self.functions), only_known=True)
        if not found.calls:
            return msg
        return {"role": "assistant", "content": found.text,
                "tool_calls": [c.to_openai() for c in found.calls]}

    def execute(self, call: Any) -> CallRecord:
        """Run one memory function the LLM called and append its result as a tool message.

        ``call``: a :class:`vmem.kernel.drivers.ToolCall`, an ``openai`` tool call object or
        its dict. Nothing the function does escapes as an exception: a bad call, a
        FunctionError or any other error is answered as a failed call (``ok`` False), and
        whatever the failed function changed is undone.
        """
        call = as_tool_call(call)
        with self.transaction():
            self._replies = []
            try:
                with self.savepoint():  # a failed call leaves nothing behind
                    record = invoke(self.functions, self, call)
                    if not record.ok:
                        raise _FailedCall(record)
            except _FailedCall as failed:
                record = failed.record
            record.replies = self._replies if record.ok else []
            self._replies = None
            self.trace.write({"e": "call", "name": call.name, "arguments": call.arguments, "ok": record.ok,
                              "result": record.result})
            self._append(normalise({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                    "content": record.result}))
        return record
