"""The context map: the main context drawn as a bar of regions, in the terminal.

    [SSCCCCCSQQQQQQQQQQQQQQQQWW········|·····rrrr]  6,120/7,168 (85%) WARN
                               ^         ^  (^ watermarks: warn 70%, flush 100%)

One character per ``window / width`` tokens; the reserve (output and tool
schemas) is drawn at the right end. Colour is used when asked (on a TTY).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from vmem import Region, State
from vmem.kernel.context import ContextMap

__all__ = ["render_map"]

# region -> (letter, ANSI background, name)
STYLE: dict[object, tuple[str, str, str]] = {
    Region.SYSTEM: ("S", "\x1b[45;97m", "system"),
    Region.CORE: ("C", "\x1b[44;97m", "core"),
    Region.SUMMARY: ("Σ", "\x1b[46;30m", "summary"),
    Region.QUEUE: ("Q", "\x1b[42;30m", "queue"),
    Region.WORKSET: ("W", "\x1b[43;30m", "working set"),
    "free": ("·", "\x1b[2m", "free"),
    "reserve": ("r", "\x1b[100;97m", "reserve"),
}
RESET = "\x1b[0m"
STATE_STYLE = {State.OK: "\x1b[32m", State.WARN: "\x1b[33m", State.OVER: "\x1b[31;1m"}


def _cells(counts: Sequence[tuple[object, int]], total: int, width: int) -> list[object]:
    """Apportion ``width`` cells to (key, tokens) parts by largest remainder; nonzero parts get one."""
    exact = [(key, tokens * width / total if total else 0.0) for key, tokens in counts]
    cells = {key: int(x) for key, x in exact}
    for key, tokens in counts:
        if tokens and not cells[key]:
            cells[key] = 1
    spare = width - sum(cells.values())
    for key, x in sorted(exact, key=lambda kx: kx[1] - int(kx[1]), reverse=True):
        if spare <= 0:
            break
        cells[key] += 1
        spare -= 1
    while spare < 0:  # the one-cell minimums overflowed: shrink the largest part
        big = max(cells, key=lambda k: cells[k])
        cells[big] -= 1
        spare += 1
    return [key for key, _ in counts for _ in range(cells[key])]


def render_map(m: ContextMap, *, width: int = 64, color: bool = False) -> str:
    """The context map as text: the bar, the watermarks, tokens per region, tier sizes."""
    s, c = m.stats, m.config
    free = max(0, c.budget - s.used)
    parts: list[tuple[Region | str, int]] = [
        (r, s.tokens[r]) for r in (Region.SYSTEM, Region.CORE, Region.SUMMARY, Region.QUEUE, Region.WORKSET)]
    parts += [("free", free), ("reserve", c.reserve)]
    total = max(c.window, s.used + c.reserve)
    bar = _cells(parts, total, width)
    if color:  # one escape sequence per run of cells, not per cell
        runs = [(k, len(list(g))) for k, g in itertools.groupby(bar)]
        body = "".join(f"{STYLE[k][1]}{STYLE[k][0] * n}{RESET}" for k, n in runs)
        state = f"{STATE_STYLE[m.state]}{m.state.name}{RESET}"
    else:
        body = "".join(STYLE[k][0] for k in bar)
        state = m.state.name
    pct = 100 * s.used / c.budget if c.budget else 0.0
    lines = [f"[{body}]  {s.used:,}/{c.budget:,} tokens ({pct:.0f}%) {state}"]
    marks = [" "] * (width + 2)
    for frac, label in ((c.warn, "w"), (c.flush, "f")):
        pos = 1 + min(width - 1, int(frac * c.budget * width / total))
        marks[pos] = "^" if marks[pos] == " " else marks[pos]
    lines.append("".join(marks).rstrip() + f"  (^ watermarks: warn {c.warn:.0%}, flush {c.flush:.0%})")
    legend = " · ".join(f"{STYLE[k][2]} {t:,}" for k, t in parts)
    lines.append(legend)
    tiers = []
    if m.recall_messages is not None:
        tiers.append(f"recall storage: {m.recall_messages:,} messages")
    if m.archival_passages is not None:
        tiers.append(f"archival storage: {m.archival_passages:,} passages")
    if tiers:
        lines.append(" · ".join(tiers))
    return "\n".join(lines)
