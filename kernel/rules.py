"""StepRules: when the agent's chain of LLM calls for one user message ends."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["StepRules"]


@dataclass(frozen=True)
class StepRules:
    """The step loop's limits (an Agent's, not saved with the memory)."""

    max_steps: int = 8  #: LLM calls per user message, at most (the last resort)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what the trace records)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepRules":
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})
