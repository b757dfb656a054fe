"""The one shape every vmem benchmark reports in, and how it prints.

A figure is one measured value beside its baseline measured in the same run::

    {"name": str, "value": float, "unit": str, "baseline": float | None,
     "ratio": float | None, "target": str | None, "met": bool | None}

``ratio`` is how many times better the value is than the baseline (for
times: baseline / value; for rates and recalls: value / baseline). ``met``
says whether the target holds (None when a figure has no target). Every bench
script takes ``--json`` (print a JSON list of figures) and ``--quick``; ``vmem
bench`` runs them all and prints one table.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

__all__ = ["Figure", "print_figures", "emit"]


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None

    @classmethod
    def timed(cls, name: str, seconds: float, baseline: float | None = None, *, unit: str = "us",
              target: str | None = None, met: bool | None = None) -> "Figure":
        """A time (lower is better), shown in ``unit``; ratio = baseline / value."""
        scale = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
        ratio = baseline / seconds if baseline and seconds else None
        return cls(name, round(seconds * scale, 3), unit,
                   round(baseline * scale, 3) if baseline is not None else None,
                   round(ratio, 1) if ratio else None, target, met)


def print_figures(figures: Sequence[Figure], out=sys.stdout) -> None:
    """A table: figure, value, baseline, ratio, target, met (the same table as ``vmem bench``)."""
    from vmem.app.benchrun import print_table

    print_table([asdict(f) for f in figures], out)


def emit(figures: Iterable[Figure], as_json: bool, out=sys.stdout) -> None:
    """Print figures as a JSON list (``--json``) or as the table."""
    figures = list(figures)
    if as_json:  # strict JSON: a value that is not a finite number is null, never NaN
        rows = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(f).items()}
                for f in figures]
        json.dump(rows, out, indent=1, allow_nan=False)
        out.write("\n")
    else:
        print_figures(figures, out)
