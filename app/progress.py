"""Live progress while the model thinks: no long silences in ``vmem chat`` and ``vmem demo``.

A real model on a CPU takes a minute or more for its first call (the whole prompt is
evaluated); a command that prints nothing meanwhile looks hung. :class:`Progress` wraps a
driver so that every LLM call it waits on longer than ``after`` seconds shows a live line
(what it waits for and the elapsed time, redrawn every second) and, when the answer comes,
one line with the call's figures: seconds, prompt tokens and how many the server served from
its prompt cache, tokens generated, and tokens processed per second (evaluated prompt tokens
plus generated ones, over the call's wall time) where the server reports its usage.

Interface::

    progress = Progress(sys.stderr, enabled=Progress.auto(sys.stderr))  # on in a terminal, off when piped
    driver = progress.wrap(driver)        # a Driver; summary calls (no tools) are named as such
    progress.stage = "message 3 of 27"    # what the calls are for (shown in the line)
    progress.calls                        # CallTiming of every call made through it

It writes only to its own stream (stderr by default, so stdout stays clean for a pipe or a
file) and only while a call is in flight; disabled, it still counts calls and writes nothing.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence, TextIO

from vmem.kernel.drivers import Completion, Driver, Usage

__all__ = ["CallTiming", "Progress", "ProgressDriver"]


@dataclass(frozen=True)
class CallTiming:
    """One LLM call made through a :class:`Progress`."""

    purpose: str  #: "step" (an answer) or "summary"
    seconds: float
    usage: Usage | None

    @property
    def tokens_per_second(self) -> float | None:
        """Tokens the server processed per second (prompt tokens it evaluated, i.e. not served
        from its cache, plus tokens generated), or None without usage."""
        if self.usage is None or self.seconds <= 0:
            return None
        evaluated = self.usage.prompt_tokens - (self.usage.cached_tokens or 0)
        return (evaluated + self.usage.completion_tokens) / self.seconds

    def line(self) -> str:
        """The call's figures as one line."""
        what = "summary" if self.purpose == "summary" else "LLM call"
        parts = [f"{what} {self.seconds:.1f} s"]
        u = self.usage
        if u is not None:
            cached = f" ({u.cached_tokens:,} from the server's cache)" if u.cached_tokens is not None else ""
            parts.append(f"prompt {u.prompt_tokens:,} tokens{cached}")
            parts.append(f"{u.completion_tokens:,} generated")
            rate = self.tokens_per_second
            if rate is not None:
                parts.append(f"{rate:,.1f} tokens/s")
        return " · ".join(parts)


class Progress:
    """Shows each slow LLM call live on ``stream`` when ``enabled``; records every call."""

    def __init__(self, stream: TextIO, *, enabled: bool, after: float = 1.0, every: float = 1.0,
                 clock: Any = time.monotonic) -> None:
        self.stream = stream
        self.enabled = enabled
        self.after = after  #: seconds a call runs before its live line appears
        self.every = every  #: seconds between redraws
        self.stage = ""  #: what the calls are for, shown in the line
        self.calls: list[CallTiming] = []
        self._clock = clock

    @staticmethod
    def auto(stream: TextIO) -> bool:
        """On when ``stream`` is a terminal (and TERM is not "dumb"); off when piped or redirected."""
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"

    def wrap(self, driver: Driver) -> "ProgressDriver":
        """``driver``, with every call shown and timed."""
        return ProgressDriver(driver, self)

    def run(self, purpose: str, call: Any) -> Completion:
        """Run ``call()`` (an LLM call for ``purpose``), showing it live while it lasts."""
        started = self._clock()
        done = threading.Event()
        shown = threading.Event()
        ticker = None
        if self.enabled:
            ticker = threading.Thread(target=self._tick, args=(purpose, started, done, shown), daemon=True,
                                      name="vmem-progress")
            ticker.start()
        completion: Completion | None = None
        try:
            completion = call()
            return completion
        finally:
            done.set()
            if ticker is not None:
                ticker.join()
            timing = CallTiming(purpose, self._clock() - started,
                                completion.usage if completion is not None else None)
            self.calls.append(timing)
            if shown.is_set():  # the live line was up: replace it with the call's figures
                ending = timing.line() if completion is not None else f"{self._label(purpose)}: failed"
                self._write(f"\r\x1b[K  · {self._prefix()}{ending}\n")

    def _label(self, purpose: str) -> str:
        return "summarising evicted messages" if purpose == "summary" else "waiting for the model"

    def _prefix(self) -> str:
        return f"{self.stage}: " if self.stage else ""

    def _tick(self, purpose: str, started: float, done: threading.Event, shown: threading.Event) -> None:
        if done.wait(self.after):
            return
        while True:
            shown.set()
            elapsed = self._clock() - started
            self._write(f"\r\x1b[K  ⋯ {self._prefix()}{self._label(purpose)} {elapsed:.0f} s")
            if done.wait(self.every):
                return

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: progress is not worth an error
            self.enabled = False


class ProgressDriver(Driver):
    """A driver whose calls a :class:`Progress` shows and times (everything else is the inner driver's)."""

    def __init__(self, inner: Driver, progress: Progress) -> None:
        self.inner = inner
        self.progress = progress

    def complete(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> Completion:
        return self.progress.run("step" if tools else "summary", lambda: self.inner.complete(messages, tools))

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
