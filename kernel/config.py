"""MemoryConfig: how a memory uses its context window (saved with the memory)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["MemoryConfig"]


@dataclass(frozen=True)
class MemoryConfig:
    """How a memory uses its context window. Saved with the memory; fixed at creation."""

    window: int = 8192  #: the model's context window, tokens
    reserve_output: int = 1024  #: tokens kept free for the model's answer
    warn: float = 0.70  #: warning watermark, fraction of the budget
    flush: float = 1.00  #: flush watermark
    target: float = 0.50  #: fraction of the queue a flush keeps
    keep_last: int = 4  #: newest queue messages a flush never evicts
    ws_budget: int = 0  #: working-set tokens (0: a tenth of the budget)
    policy: str = "lru"  #: working-set eviction policy: "lru" or "lfu"
    prefetch: int = 0  #: pages to prefetch per user message (0: off)
    page_size: int = 5  #: results per page of a memory search
    summary_share: float = 0.10  #: the summary's share of the budget (the summarizer is asked for this length)
    max_calls: int = 16  #: tool calls one assistant message may hold (one answer's group stays bounded)

    def __post_init__(self) -> None:
        if self.window < 256:
            raise ValueError(f"window must be at least 256 tokens, got {self.window}")
        if not 0 <= self.reserve_output < self.window // 2:
            raise ValueError("reserve_output must be below half the window")
        if self.policy not in ("lru", "lfu"):
            raise ValueError(f"policy must be 'lru' or 'lfu', got {self.policy!r}")
        if self.page_size < 1 or self.prefetch < 0 or self.keep_last < 0 or self.ws_budget < 0:
            raise ValueError("page_size must be >= 1; prefetch, keep_last and ws_budget >= 0")
        if not 0 < self.warn <= self.flush <= 1 or not 0 <= self.target < 1:
            raise ValueError("watermarks must satisfy 0 < warn <= flush <= 1 and 0 <= target < 1")
        if not 1 <= self.max_calls <= 256:
            raise ValueError(f"max_calls must be in [1, 256], got {self.max_calls}")
        if not 0 < self.summary_share < 0.5:
            raise ValueError("summary_share must be in (0, 0.5)")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what is saved)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MemoryConfig":
        """Inverse of :meth:`to_dict`; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
