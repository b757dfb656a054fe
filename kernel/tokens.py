"""Token counting: the C core's estimate, calibrated against what the provider reports.

A page's tokens are counted once, when it is made: ``estimate + MESSAGE_OVERHEAD``, where
the estimate is the core's cl100k-like counter (:func:`vmem.estimate_tokens`). That count
is deterministic, so the core's accounting can be checked against the text at any time.

A model's own tokenizer may count differently. The kernel learns the ratio between the
prompt tokens a provider reports and its own count of the same request (an exponential
average, clamped to [0.5, 3]), and applies it to the budget instead of to the pages: the
core's window and output reserve are divided by it (:meth:`TokenCounter.core_window`), so
every page, old or new, is budgeted by the model's measure at once.
"""

from __future__ import annotations

import math

from vmem import estimate_tokens

__all__ = ["MESSAGE_OVERHEAD", "TokenCounter"]

MESSAGE_OVERHEAD = 4
"""Tokens a chat format adds around each message."""

_LOW, _HIGH, _WEIGHT = 0.5, 3.0, 0.2


class TokenCounter:
    """Counts pages' tokens; learns the model's tokens per counted token (``calibration``)."""

    __slots__ = ("calibration",)

    def __init__(self, calibration: float = 1.0) -> None:
        self.calibration = calibration

    @staticmethod
    def count(text: str) -> int:
        """Tokens of a page holding ``text``, chat framing included (deterministic)."""
        return estimate_tokens(text) + MESSAGE_OVERHEAD

    def observe(self, reported: int, counted: int) -> bool:
        """The provider reported ``reported`` prompt tokens for a request the kernel counted
        as ``counted``; move the calibration toward their ratio. True if it changed."""
        if reported <= 0 or counted <= 0:
            return False
        moved = (1 - _WEIGHT) * self.calibration + _WEIGHT * (reported / counted)
        new = round(min(_HIGH, max(_LOW, moved)), 4)
        changed = new != self.calibration
        self.calibration = new
        return changed

    def to_core(self, model_tokens: int) -> int:
        """A length in the model's tokens (a window, an output reserve) in counted tokens."""
        return math.floor(model_tokens / self.calibration)
