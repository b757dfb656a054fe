"""The token budget: the core's configuration from the memory's config, its tools and calibration.

The core counts pages in the kernel's own tokens (:mod:`vmem.kernel.tokens`). The model's
window and output reserve are in the model's tokens, so the core's window and reserve are
those divided by the calibration factor; what every request carries besides the context
(the tools as the driver sends them: learned, or their schemas' calibrated count) is
reserved too. Reconfiguring (a new calibration, or other tools at reopen)
first evicts the coldest working-set pages if the working set's budget shrank; a budget that
cannot hold the pinned pages keeps the old configuration (and says so in the trace).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from vmem import PagedContext, Policy, Region
from vmem.kernel.config import MemoryConfig
from vmem.kernel.errors import ContextWindowError
from vmem.kernel.persistence import MemoryState
from vmem.kernel.tokens import TokenCounter
from vmem.kernel.trace import Trace

__all__ = ["Budget"]


class Budget:
    """Keeps the core configured for the memory's config, tools and calibration."""

    def __init__(self, config: MemoryConfig, counter: TokenCounter, tools: Sequence[dict[str, Any]]) -> None:
        self.config = config
        self.counter = counter
        self.tools_tokens = counter.count(json.dumps(list(tools)))  #: what the tool schemas cost per request

    def core_config(self) -> dict[str, Any]:
        """The core's configuration now (ContextWindowError if the tool schemas alone fill the window)."""
        c, counter = self.config, self.counter
        window = counter.to_core(c.window)
        reserve = window - counter.to_core(c.window - c.reserve_output - counter.fixed_tokens(self.tools_tokens))
        budget = window - reserve
        if budget <= 0:
            need = c.reserve_output + math.ceil(counter.fixed_tokens(self.tools_tokens))
            raise ContextWindowError(f"the output reserve ({c.reserve_output}) and the tool schemas "
                                     f"({self.tools_tokens}) fill a {c.window}-token window: they alone need a "
                                     f"window of at least {need + 1} tokens, and the system prompt, core memory "
                                     f"and a queue need more")
        return dict(window=window, reserve=reserve, warn=c.warn, flush=c.flush, target=c.target,
                    keep_last=c.keep_last, policy=Policy.LFU if c.policy == "lfu" else Policy.LRU,
                    ws_budget=counter.to_core(c.ws_budget) if c.ws_budget else budget // 10)

    @staticmethod
    def configured(ctx: PagedContext) -> dict[str, Any]:
        """The core's configuration as it stands."""
        c = ctx.config
        return dict(window=c.window, reserve=c.reserve, warn=c.warn, flush=c.flush, target=c.target,
                    keep_last=c.keep_last, policy=c.policy, ws_budget=c.ws_budget)

    def apply(self, ctx: PagedContext, state: MemoryState, trace: Trace) -> bool:
        """Configure ``ctx`` as :meth:`core_config` says; False if it already was."""
        try:
            want = self.core_config()
        except ContextWindowError as exc:  # a calibration that leaves no budget: keep the one there is
            trace.write({"e": "reconfigure_refused", "reason": str(exc)})
            return False
        if want == self.configured(ctx):
            return False
        if ctx.stats().tokens[Region.WORKSET] > want["ws_budget"]:
            self._shrink_workset(ctx, state, trace, want["ws_budget"])
        try:
            ctx.configure(**want)
        except Exception as exc:  # noqa: BLE001 - BudgetError: pinned pages exceed the new budget
            trace.write({"e": "reconfigure_refused", "reason": str(exc)})
        return True

    @staticmethod
    def _shrink_workset(ctx: PagedContext, state: MemoryState, trace: Trace, budget: int) -> None:
        infos = sorted((ctx.info(p) for p in ctx.pages(Region.WORKSET).tolist()), key=lambda i: (i.last_touch, i.id))
        total = sum(i.tokens for i in infos)
        out = []
        for info in infos:  # least recently touched first
            if total <= budget:
                break
            out.append(info.id)
            total -= info.tokens
        if out:
            ctx.remove_many(np.array(out, dtype=np.uint64))
            for page in out:
                state.workset.pop(page, None)
            trace.write({"e": "workset_shrunk", "evicted": out})
