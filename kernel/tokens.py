"""Token counting: the C core's estimate, calibrated against what the provider reports.

A page's tokens are counted once, when it is made: ``estimate + MESSAGE_OVERHEAD``, where
the estimate is the core's cl100k-like counter (:func:`vmem.estimate_tokens`). That count
is deterministic, so the core's accounting can be checked against the text at any time.

A model's own tokenizer counts differently, and a driver may send the tools in another
form than their JSON schemas (a JSON-mode driver writes them into the system prompt). So
the kernel learns, from the prompt tokens the provider reports for each request, an
affine model ``reported = calibration * context + fixed``: ``calibration`` the model's
tokens per counted token of the context, ``fixed`` what every request carries besides it
(the tools as the driver sends them, the chat template's framing). It is an exponentially
weighted least-squares fit over recent requests (while the contexts seen are too alike to
separate the two, ``fixed`` stays the calibrated count of the tool schemas and only the
ratio moves). The budget applies it (:mod:`vmem.kernel.budget`): the core's window and
output reserve are divided by ``calibration`` and ``fixed`` is reserved, so every page,
old or new, is budgeted by the model's measure at once.
"""

from __future__ import annotations

import math

from vmem import estimate_tokens

__all__ = ["MESSAGE_OVERHEAD", "TokenCounter"]

MESSAGE_OVERHEAD = 4
"""Tokens a chat format adds around each message."""

_LOW, _HIGH = 0.5, 3.0  # the calibration's range
_DECAY = 0.85  # weight of the previous observations at each new one (about 7 recent requests)
_SPREAD = 0.05  # contexts must differ by this share (standard deviation / mean) to fit the fixed part


class TokenCounter:
    """Counts pages' tokens; learns how the model counts a request (``calibration``, ``fixed``)."""

    __slots__ = ("calibration", "fixed", "sums")

    def __init__(self, calibration: float = 1.0, fixed: float | None = None,
                 sums: list[float] | None = None) -> None:
        self.calibration = calibration  #: the model's tokens per counted token of the context
        self.fixed = fixed  #: the model's tokens every request carries besides the context (None: not yet fitted)
        self.sums = list(sums) if sums else [0.0] * 5  #: the weighted fit's sums: n, x, y, xx, xy

    @staticmethod
    def count(text: str) -> int:
        """Tokens of a page holding ``text``, chat framing included (deterministic)."""
        return estimate_tokens(text) + MESSAGE_OVERHEAD

    def observe(self, reported: int, context: int, tools: int) -> bool:
        """The provider reported ``reported`` prompt tokens for a request whose context the kernel
        counted as ``context`` tokens, with tool schemas it counted as ``tools``. True if the
        calibration changed."""
        if reported <= 0 or context <= 0:
            return False
        s = self.sums
        x, y = float(context), float(reported)
        s[:] = [s[0] * _DECAY + 1, s[1] * _DECAY + x, s[2] * _DECAY + y, s[3] * _DECAY + x * x, s[4] * _DECAY + x * y]
        n, sx, sy, sxx, sxy = s
        mean = sx / n
        var = max(0.0, sxx / n - mean * mean)
        before = (self.calibration, self.fixed)
        c = (n * sxy - sx * sy) / (n * sxx - sx * sx) if var > (_SPREAD * mean) ** 2 else None
        if c is not None and _LOW <= c <= _HIGH and (sy - c * sx) / n >= 0:
            self.calibration = round(c, 4)
            self.fixed = round((sy - c * sx) / n, 1)
        else:  # the contexts are too alike: one ratio for the request as counted, tools included
            ratio = (sy / n) / (sx / n + tools)
            self.calibration = round(min(_HIGH, max(_LOW, ratio)), 4)
            self.fixed = None
        return (self.calibration, self.fixed) != before

    def fixed_tokens(self, tools: int) -> float:
        """The model's tokens every request carries besides the context (learned, or the tools' count calibrated)."""
        return self.fixed if self.fixed is not None else self.calibration * tools

    def estimate(self, context: int, tools: int) -> float:
        """The prompt tokens the provider will count for a request (after calibration)."""
        return self.calibration * context + self.fixed_tokens(tools)

    def to_core(self, model_tokens: float) -> int:
        """A length in the model's tokens (a window, an output reserve) in counted tokens."""
        return math.floor(model_tokens / self.calibration)
