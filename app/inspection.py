"""Inspecting an agent on disk: what ``vmem inspect`` shows, as text or as one HTML page.

Interface::

    view = collect(memory, events=20)     # an AgentView: plain data, no live objects
    print(render_text(view, color=False))
    Path("agent.html").write_text(render_html(view))

:func:`collect` reads an open :class:`vmem.kernel.Memory` (and its trace) without
changing it; ``vmem inspect`` opens the memory read-only, so it works beside a running
agent and writes nothing. :func:`render_html` writes a
self-contained page: inline CSS, a little inline JavaScript (tabs also work
without it), the context map and the agent's history (:mod:`vmem.app.history`:
tokens per region over the LLM calls of the trace) as inline SVG charts; no
network, no external asset. Every text that comes from the agent is HTML-escaped.
"""

from __future__ import annotations

import collections
import datetime as _dt
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from vmem import PageKind, Region, page_kind, page_serial
from vmem.app.contextmap import render_map
from vmem.app.history import History, HistoryBuilder, describe, render_history_svg
from vmem.kernel.context import ContextMap

if TYPE_CHECKING:
    from vmem.kernel.memory import Memory

__all__ = ["AgentView", "PageRow", "TraceRow", "collect", "render_text", "render_html", "REGION_COLORS"]

#: Region -> (name, fill colour) in the HTML chart (the terminal map's palette).
REGION_COLORS: dict[str, tuple[str, str]] = {
    "system": ("system", "#a23fb5"),
    "core": ("core", "#2f6fd6"),
    "summary": ("summary", "#1fa3b3"),
    "queue": ("queue", "#3a9d4a"),
    "workset": ("working set", "#d9a520"),
    "free": ("free", "#e8e8e8"),
    "reserve": ("reserve", "#8a8a8a"),
}
_REGIONS = (("system", Region.SYSTEM), ("core", Region.CORE), ("summary", Region.SUMMARY),
            ("queue", Region.QUEUE), ("workset", Region.WORKSET))


@dataclass(frozen=True)
class PageRow:
    """A resident page of the main context."""

    region: str
    page: int
    tokens: int
    label: str


@dataclass(frozen=True)
class TraceRow:
    """One trace event, made readable."""

    index: int
    time: str
    kind: str
    text: str


@dataclass
class AgentView:
    """Everything ``vmem inspect`` shows about one agent (plain data)."""

    path: str
    system: str
    config: dict[str, Any]
    map: ContextMap
    pages: list[PageRow]
    blocks: list[dict[str, Any]]
    summary: str
    evicted: int
    queue: list[dict[str, Any]]
    workset: list[dict[str, Any]]
    recall: list[dict[str, Any]]
    recall_total: int
    archival: list[dict[str, Any]]
    archival_total: int
    store: dict[str, Any]
    trace: list[TraceRow]
    trace_total: int
    trace_counts: dict[str, int] = field(default_factory=dict)
    user_total: int = 0  #: user messages in recall storage (imported history among them)
    last_step: str = ""
    history: History = field(default_factory=lambda: History([]))  #: tokens per region over the LLM calls


def _iso(ts: _dt.datetime | float | None) -> str:
    if ts is None:
        return ""
    if isinstance(ts, (int, float)):
        ts = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
    return ts.isoformat(timespec="seconds")


def _message_row(m: Any) -> dict[str, Any]:
    row = {"id": f"{m.id:#x}", "serial": page_serial(m.id), "role": m.role, "time": _iso(m.timestamp),
           "content": m.content or ""}
    calls = m.meta.get("tool_calls") if isinstance(m.meta, dict) else None
    if calls:
        row["content"] = (row["content"] + " " if row["content"] else "") + "; ".join(
            f"→ {c.get('function', {}).get('name')}({c.get('function', {}).get('arguments')})" for c in calls)
    if m.role == "tool" and isinstance(m.meta, dict) and m.meta.get("name"):
        row["role"] = f"tool:{m.meta['name']}"
    kind = m.meta.get("kind") if isinstance(m.meta, dict) else None
    if kind:
        row["role"] += f" ({kind})"
    return row


def _passage_row(p: Any) -> dict[str, Any]:
    return {"id": f"{p.id:#x}", "serial": page_serial(p.id), "time": _iso(p.timestamp), "tags": list(p.tags),
            "text": p.text}


def _short(value: Any, width: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _event_text(e: dict[str, Any]) -> str:
    kind = e.get("e")
    if kind == "create":
        cfg = e.get("config") or {}
        return f"agent created: window {cfg.get('window')}, {len(e.get('blocks') or [])} core blocks"
    if kind == "user":
        return _short(e.get("text", ""))
    if kind == "llm":
        if e.get("error"):
            err = e["error"]
            return f"{e.get('purpose', '')}: {err.get('type')}: {_short(err.get('message', ''), 70)}"
        comp = e.get("completion") or {}
        calls = [c.get("name") for c in comp.get("tool_calls") or ()]
        usage = comp.get("usage")
        used = f" ({usage['prompt_tokens']}+{usage['completion_tokens']} tokens)" if usage else ""
        what = ", ".join(str(c) for c in calls) if calls else _short(comp.get("text") or "", 60)
        return f"{e.get('purpose', '')} → {what}{used}"
    if kind == "call":
        args = {k: v for k, v in (e.get("arguments") or {}).items() if k != "request_heartbeat"}
        return f"{e.get('name')}({_short(args, 60)}) {'ok' if e.get('ok') else 'FAILED'}"
    if kind == "pagein":
        return f"+{len(e.get('admitted') or ())} paged in, -{len(e.get('evicted') or ())} evicted from the working set"
    if kind == "alert":
        used, budget = e.get("used", 0), e.get("budget", 0) or 1
        return f"memory pressure alert at {used:,}/{budget:,} tokens ({100 * used / budget:.0f}%)"
    if kind == "flush":
        return (f"flush: {len(e.get('evicted') or ())} messages evicted ({e.get('freed', 0):,} tokens), "
                f"summary fold {e.get('folds')}")
    if kind == "consolidate":
        skipped = sum((e.get("skipped") or {}).values()) if isinstance(e.get("skipped"), dict) else 0
        return (f"consolidation of messages {int(e.get('start', 0)) + 1}-{e.get('end')}: "
                f"{e.get('applied', 0)} applied, {skipped} skipped of {e.get('proposed', 0)} proposed")
    if kind == "block":
        return f"core memory block {e.get('label')!r} set ({len(str(e.get('value', '')))} chars)"
    return _short({k: v for k, v in e.items() if k != "e"})


def _trace(log: Iterable[dict[str, Any]], events: int,
           history: HistoryBuilder) -> tuple[list[TraceRow], int, dict[str, int], str]:
    """The last ``events`` events (the per-call context records aside: the history draws
    them), the total, counts per kind, and the time of the last user message; every event
    goes to ``history`` too."""
    tail: collections.deque[TraceRow] = collections.deque(maxlen=max(0, events))
    counts: dict[str, int] = {}
    now = ""
    total = 0
    for total, e in enumerate(log, 1):
        if not isinstance(e, dict):
            continue
        history.add(e)
        kind = str(e.get("e"))
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "llm" and e.get("purpose") == "step":
            counts["llm:step"] = counts.get("llm:step", 0) + 1
        if kind == "context":
            continue
        if "time" in e:
            now = _iso(float(e["time"]))
        tail.append(TraceRow(total, now, kind, _event_text(e)))
    last = now if counts.get("user") else ""
    return list(tail), total, counts, last


def _newest(search: Any, limit: int) -> list[Any]:
    """Up to ``limit`` records of a filter-only search (newest first), page by page."""
    out: list[Any] = []
    page = 0
    while len(out) < limit:
        found = search(page, min(500, limit))
        out.extend(found.items)
        if not found.has_next:
            break
        page += 1
    return out[:limit]


def _page_label(page: int) -> str:
    kind = page_kind(page)
    if kind is PageKind.SYSTEM:
        return {1: "system instructions", 2: "memory statistics"}.get(page_serial(page), "system")
    return f"{kind.name.lower()} {page_serial(page)}"


def collect(memory: "Memory", *, events: int = 20, limit: int = 2000) -> AgentView:
    """Read what the memory holds, without changing it.

    ``events``: trace events to keep (the last ones); ``limit``: recall
    messages and archival passages to list (the newest ones).
    """
    ctx = memory.ctx
    pages: list[PageRow] = []
    for name, region in _REGIONS:
        for page in ctx.pages(region).tolist():
            pages.append(PageRow(name, page, ctx.info(page).tokens, _page_label(page)))
    blocks = [{"label": b.label, "value": b.value, "limit": b.limit, "description": b.description,
               "read_only": b.read_only} for b in memory.blocks()]
    evicted, summary = memory.evicted, memory.summary
    recall = memory.store.recall
    queue_ids = ctx.pages(Region.QUEUE).tolist()
    queue = [_message_row(m) for m in recall.get_many(queue_ids)]
    workset = []
    for page in ctx.pages(Region.WORKSET).tolist():
        kind = page_kind(page)
        try:
            if kind is PageKind.PASSAGE:
                p = memory.store.archival.get(page)
                workset.append({"tier": "archival", **_passage_row(p), "tokens": ctx.info(page).tokens})
            elif kind is PageKind.MESSAGE:
                m = recall.get(page)
                workset.append({"tier": "recall", **_message_row(m), "text": m.content,
                                "tags": [], "tokens": ctx.info(page).tokens})
        except KeyError:  # deleted from storage since it was paged in
            workset.append({"tier": kind.name.lower(), "id": f"{page:#x}", "serial": page_serial(page),
                            "time": "", "tags": [], "text": "(no longer in storage)",
                            "tokens": ctx.info(page).tokens})
    newest = _newest(lambda page, size: recall.search(None, page=page, page_size=size), limit)
    recall_rows = [_message_row(m) for m in reversed(newest)]
    archival_rows = [_passage_row(p) for p in
                     _newest(lambda page, size: memory.store.archival.search(None, page=page, page_size=size), limit)]
    builder = HistoryBuilder()
    trace, total, counts, last = _trace(memory.store.events, events, builder)
    store = memory.store.stats()
    return AgentView(
        path=str(memory.store.path), system=memory.system, config=memory.config.to_dict(),
        map=memory.context_map(), pages=pages, blocks=blocks, summary=summary, evicted=evicted,
        queue=queue, workset=workset, recall=recall_rows, recall_total=len(recall),
        archival=archival_rows, archival_total=len(memory.store.archival), store=store,
        trace=trace, trace_total=total, trace_counts=counts, last_step=last,
        user_total=recall.search(None, roles=["user"], page_size=1).total,
        history=builder.history(warn=memory.config.warn, flush=memory.config.flush))


# ---------------------------------------------------------------------- text


def _n(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def counts_line(v: AgentView) -> str:
    """The user messages (recall storage's count, imported history told apart from what the
    memory received) and the LLM calls (one per context prepared, as the history draws them;
    those the caller's own loop made told apart from vmem's driver's), in agreement with the
    storage counts and the history below them."""
    received = v.trace_counts.get("user", 0)
    users = max(v.user_total, received)
    out = _n(users, "user message")
    if users != received:
        out += f" ({users - received:,} brought in with imported history, {received:,} received)"
    driver = v.trace_counts.get("llm:step", 0)
    calls = max(v.trace_counts.get("context", 0), driver)
    out += f" · {_n(calls, 'LLM call')}"
    own = calls - driver
    if own and not driver:
        out += (" (by the caller's own loop: vmem prepared its context, saw no completion)" if calls == 1 else
                " (by the caller's own loop: vmem prepared their contexts, saw no completions)")
    elif own:
        out += f" ({driver:,} through vmem's driver, {own:,} by the caller's own loop)"
    return out


def render_text(v: AgentView, *, color: bool = False) -> str:
    """The view as terminal text: map, blocks, summary, counts, the trace's tail."""
    def head(text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if color else text

    c, m = v.config, v.map
    out = [head(f"agent {v.path}"),
           f"  window {c['window']:,} tokens, budget {m.config.budget:,} (output reserve {c['reserve_output']:,}, "
           f"tool schemas {m.config.reserve - c['reserve_output']:,}); warn {c['warn']:.0%}, flush {c['flush']:.0%}; "
           f"keep last {c['keep_last']}; prefetch {c['prefetch']}; working-set policy {c['policy']}",
           f"  {counts_line(v)}, {v.trace_counts.get('flush', 0)} flushes, {v.trace_counts.get('alert', 0)} alerts"
           + (f"; last message at {v.last_step}" if v.last_step else ""),
           f"  history: {describe(v.history)}",
           "", head("context map"), render_map(m, color=color), "", head("core memory")]
    for b in v.blocks:
        flags = " read-only" if b["read_only"] else ""
        desc = f" ({b['description']})" if b["description"] else ""
        out.append(f"  [{b['label']}]{desc} {len(b['value'])}/{b['limit']} chars{flags}")
        out.extend(f"    {line}" for line in (b["value"].splitlines() or ["(empty)"]))
    out += ["", head(f"summary ({v.evicted} messages evicted to recall storage)")]
    out.extend(f"  {line}" for line in (v.summary.splitlines() or ["(none yet)"]))
    out += ["", head(f"queue: {len(v.queue)} messages in the context (oldest first)")]
    for q in v.queue[-12:]:
        role, _, name = q["role"].partition(":")
        out.append(f"  {role:>9}  {(name + ' ← ') if name else ''}{_short(q['content'], 100)}")
    if len(v.queue) > 12:
        out.insert(len(out) - 12, f"  … {len(v.queue) - 12} older messages")
    out += ["", head(f"working set: {len(v.workset)} pages paged in")]
    out.extend(f"  [{w['tier']} {w['id']}] {_short(w['text'], 100)}" for w in v.workset)
    out += ["", head("storage"),
            f"  recall: {v.recall_total:,} messages · archival: {v.archival_total:,} passages "
            f"({v.store.get('archival_backend')}, embedder {v.store.get('embedder')}) · "
            f"{len(v.blocks)} core blocks"]
    out += ["", head(f"trace: last {len(v.trace)} of {v.trace_total} events")]
    out.extend(f"  {t.index:>5} {t.time[:19]:19} {t.kind:<6} {t.text}" for t in v.trace)
    return "\n".join(out)


# ---------------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    """HTML-escape any value as text (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def _chart(v: AgentView) -> str:
    """The context map as an inline SVG: a bar of regions (page by page), free space, reserve, watermarks."""
    s, cfg = v.map.stats, v.map.config
    total = max(cfg.window, s.used + cfg.reserve, 1)
    width, x0, bar_y, bar_h = 1000.0, 10.0, 46.0, 56.0
    scale = (width - 2 * x0) / total
    parts: list[str] = []
    x = x0
    region_tokens: list[tuple[str, int]] = []
    for name, region in _REGIONS:
        region_tokens.append((name, s.tokens[region]))
        rows = [p for p in v.pages if p.region == name]
        start = x
        for p in rows:
            w = p.tokens * scale
            parts.append(f'<rect class="page r-{name}" x="{x:.2f}" y="{bar_y}" width="{max(w, 0):.2f}" '
                         f'height="{bar_h}" fill="{REGION_COLORS[name][1]}"><title>{_e(REGION_COLORS[name][0])}: '
                         f'{_e(p.label)} ({p.page:#x}), {p.tokens:,} tokens</title></rect>')
            x += w
        if rows and x - start > 7.5 * len(REGION_COLORS[name][0]) + 10:
            parts.append(f'<text class="seg" x="{(start + x) / 2:.2f}" y="{bar_y + bar_h / 2 + 5}" '
                         f'text-anchor="middle">{_e(REGION_COLORS[name][0])}</text>')
    free = max(0, cfg.budget - s.used)
    for name, tokens in (("free", free), ("reserve", cfg.reserve)):
        w = tokens * scale
        parts.append(f'<rect class="region r-{name}" x="{x:.2f}" y="{bar_y}" width="{w:.2f}" height="{bar_h}" '
                     f'fill="{REGION_COLORS[name][1]}"><title>{name}: {tokens:,} tokens</title></rect>')
        label = "reserve (output + tool schemas)" if name == "reserve" else name
        if w < 7.5 * len(label) + 10:
            label = name
        if w > 7.5 * len(label) + 10:
            style = ' style="fill:#333"' if name == "free" else ""
            parts.append(f'<text class="seg" x="{x + w / 2:.2f}" y="{bar_y + bar_h / 2 + 5}" text-anchor="middle"'
                         f'{style}>{label}</text>')
        x += w
        region_tokens.append((name, tokens))
    for frac, label in ((cfg.warn, "warn"), (cfg.flush, "flush")):
        mx = x0 + frac * cfg.budget * scale
        parts.append(f'<line class="watermark wm-{label}" x1="{mx:.2f}" y1="{bar_y - 16}" x2="{mx:.2f}" '
                     f'y2="{bar_y + bar_h + 6}" />'
                     f'<text class="wm" x="{mx:.2f}" y="{bar_y - 20}" text-anchor="middle">{label} {frac:.0%} · '
                     f'{int(frac * cfg.budget):,}</text>')
    ux = x0 + s.used * scale
    parts.append(f'<path class="used" d="M{ux:.2f},{bar_y + bar_h + 4} l-6,10 h12 z"><title>used: {s.used:,} '
                 f'tokens</title></path><text class="wm" x="{ux:.2f}" y="{bar_y + bar_h + 28}" '
                 f'text-anchor="middle">used {s.used:,}</text>')
    legend = []
    lx = x0
    for name, tokens in region_tokens:
        label = f"{REGION_COLORS[name][0]} {tokens:,}"
        legend.append(f'<rect x="{lx:.1f}" y="132" width="12" height="12" fill="{REGION_COLORS[name][1]}" />'
                      f'<text class="legend" x="{lx + 16:.1f}" y="143">{_e(label)}</text>')
        lx += 28 + 7.2 * len(label)
    return (f'<svg id="context-chart" viewBox="0 0 {width:.0f} 156" role="img" '
            f'aria-label="context map: {s.used:,} of {cfg.budget:,} tokens used">'
            + "".join(parts) + "".join(legend) + "</svg>")


_CSS = """
:root{--fg:#1d1d1f;--muted:#666;--line:#ddd;--bg:#fafafa;--card:#fff;--accent:#2f6fd6}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:18px 28px;background:#1d2330;color:#fff}
header h1{margin:0;font-size:20px}header .sub{color:#b9c2d3;font-size:13px;word-break:break-all}
main{padding:18px 28px;max-width:1240px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:18px}.card span{color:var(--muted);font-size:12px}
.state{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.state-OK{background:#d7f2dc;color:#19692c}.state-WARN{background:#fdf0c8;color:#7a5a00}
.state-OVER{background:#fbd5d5;color:#9b1c1c}
figure{margin:0 0 16px;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px}
figcaption{color:var(--muted);font-size:12px}
svg text{font:12px system-ui,sans-serif}svg text.seg{fill:#fff;font-weight:600}svg text.wm{fill:#333}
svg line.watermark{stroke:#c0392b;stroke-width:2;stroke-dasharray:5 3}svg line.wm-warn{stroke:#d68910}
svg rect.page{stroke:#fff;stroke-width:.6}svg path.used{fill:#1d2330}
.tabs>input{position:absolute;opacity:0;pointer-events:none}
.tabs>label{display:inline-block;padding:7px 14px;margin:0 2px -1px 0;border:1px solid var(--line);border-bottom:none;
 border-radius:8px 8px 0 0;background:#eee;cursor:pointer;user-select:none}
.tabs>input:checked+label{background:var(--card);font-weight:600;color:var(--accent)}
.tabs>input:focus-visible+label{outline:2px solid var(--accent)}
.panel{display:none;background:var(--card);border:1px solid var(--line);border-radius:0 8px 8px 8px;padding:14px}
#t-core:checked~#p-core,#t-summary:checked~#p-summary,#t-queue:checked~#p-queue,#t-workset:checked~#p-workset,
#t-recall:checked~#p-recall,#t-archival:checked~#p-archival,#t-trace:checked~#p-trace,
#t-config:checked~#p-config{display:block}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:4px 8px;border-bottom:1px solid #eee}
th{font-size:12px;color:var(--muted);font-weight:600}
td.id,td.time,td.num{white-space:nowrap;font:12px ui-monospace,monospace;color:#555}
td.text{white-space:pre-wrap;word-break:break-word}
.role{font:12px ui-monospace,monospace;padding:1px 6px;border-radius:4px;background:#eef}
.role-user{background:#e3efff}.role-assistant{background:#e6f6e8}.role-system{background:#f7e8f8}
.tag{display:inline-block;font-size:11px;background:#eef2f7;border:1px solid #d5dce6;border-radius:9px;
 padding:0 7px;margin:1px}
details.block{border:1px solid var(--line);border-radius:6px;margin:0 0 8px;padding:6px 10px}
details.block summary{cursor:pointer;font-weight:600}
pre{white-space:pre-wrap;word-break:break-word;margin:6px 0;font:13px ui-monospace,monospace}
.muted{color:var(--muted)}
#history-chart text.axis,#history-chart text.level-label{fill:#555;font-size:11px}
#history-chart line.grid{stroke:#eee}#history-chart path.level{stroke:#888;stroke-width:1.2}
#history-chart path.wm-warn{stroke:#d68910;stroke-dasharray:5 3}#history-chart path.wm-flush{stroke:#c0392b;stroke-dasharray:5 3}
#history-chart path.area{stroke:none;opacity:.9}#history-chart line.mark-flush{stroke:#7d3c98;stroke-width:1.5}
#history-chart path.mark-alert{fill:#d68910}#history-chart circle.mark-fault{fill:#2f6fd6}
#history-chart path.mark-prefetch{fill:#b7950b}#history-chart rect.mark-shared{fill:#c0392b}#history-chart polyline.cache{fill:none;stroke:#117a65;stroke-width:2}
#history-chart circle.cache-point{fill:#117a65}#history-chart text.cache-axis{fill:#117a65}#history-chart rect.step:hover{fill:rgba(0,0,0,.06)}
.filter{margin:0 0 8px;padding:5px 8px;width:320px;border:1px solid #ccc;border-radius:6px}
.count{margin-left:8px;color:var(--muted);font-size:12px}
"""

_JS = """
(function () {
  "use strict";
  var root = document.documentElement;
  function show(input) {
    root.setAttribute("data-tab", input.id.slice(2));
  }
  function applyHash() {
    var tab = document.getElementById("t-" + (location.hash || "").replace(/^#/, ""));
    if (tab && tab.type === "radio") { tab.checked = true; show(tab); }
  }
  document.querySelectorAll(".tabs > input[type=radio]").forEach(function (input) {
    if (input.checked) { show(input); }
    input.addEventListener("change", function () {
      if (!input.checked) { return; }
      show(input);
      if (history.replaceState) { history.replaceState(null, "", "#" + input.id.slice(2)); }
    });
  });
  window.addEventListener("hashchange", applyHash);
  applyHash();
  document.querySelectorAll("input.filter").forEach(function (box) {
    var table = document.getElementById(box.getAttribute("data-table"));
    var count = document.getElementById(box.getAttribute("data-count"));
    if (!table || !count) { return; }
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    function update() {
      var q = box.value.trim().toLowerCase(), shown = 0;
      rows.forEach(function (row) {
        var hit = !q || row.textContent.toLowerCase().indexOf(q) !== -1;
        row.hidden = !hit;
        if (hit) { shown += 1; }
      });
      count.textContent = shown + " of " + rows.length + " shown";
    }
    box.addEventListener("input", update);
    update();
  });
  root.setAttribute("data-ready", "yes");
})();
"""


def _role(role: str) -> str:
    base = role.split(":")[0].split(" ")[0]
    return f'<span class="role role-{_e(base)}">{_e(role)}</span>'


def _tags(tags: Iterable[str]) -> str:
    return "".join(f'<span class="tag">{_e(t)}</span>' for t in tags)


def _table(table_id: str, head: Sequence[str], rows: Sequence[str], *, filter_label: str | None = None,
           empty: str = "none") -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    box = ""
    if filter_label:
        box = (f'<input class="filter" type="search" placeholder="{_e(filter_label)}" aria-label="{_e(filter_label)}" '
               f'data-table="{table_id}" data-count="{table_id}-count"><span class="count" id="{table_id}-count">'
               f'{len(rows)} rows</span>')
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'{box}<table id="{table_id}"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _message_tr(m: dict[str, Any], cls: str) -> str:
    return (f'<tr class="{cls}"><td class="id">{_e(m["serial"])}</td><td class="time">{_e(m["time"])}</td>'
            f'<td>{_role(m["role"])}</td><td class="text">{_e(m["content"])}</td></tr>')


def render_html(v: AgentView, *, title: str | None = None) -> str:
    """The view as one self-contained HTML page (see the module docstring)."""
    s, cfg, c = v.map.stats, v.map.config, v.config
    name = Path(v.path).name or v.path
    title = title or f"vmem agent · {name}"
    pct = 100 * s.used / cfg.budget if cfg.budget else 0.0
    cards = [
        (f"{s.used:,} / {cfg.budget:,}", f"tokens used ({pct:.0f}%)"),
        (f"{c['window']:,}", "window (tokens)"),
        (f"{len(v.queue):,}", "queue messages"),
        (f"{len(v.workset):,}", "working-set pages"),
        (f"{v.recall_total:,}", "recall messages"),
        (f"{v.archival_total:,}", "archival passages"),
        (f"{v.evicted:,}", "messages evicted"),
        (f"{v.trace_counts.get('flush', 0):,} / {v.trace_counts.get('alert', 0):,}", "flushes / alerts"),
        (f"{v.user_total:,}", "user messages"),
    ]
    cards_html = "".join(f'<div class="card"><b>{_e(a)}</b><span>{_e(b)}</span></div>' for a, b in cards)

    blocks = "".join(
        f'<details class="block" open><summary>{_e(b["label"])} <span class="muted">'
        f'{len(b["value"])}/{b["limit"]} chars{" · read-only" if b["read_only"] else ""}'
        f'{(" · " + _e(b["description"])) if b["description"] else ""}</span></summary>'
        f'<pre>{_e(b["value"]) or "<span class=muted>(empty)</span>"}</pre></details>' for b in v.blocks)
    blocks = blocks or '<p class="muted">no core memory blocks</p>'
    system = f'<details class="block"><summary>system instructions</summary><pre>{_e(v.system)}</pre></details>'
    summary = (f'<p class="muted">{v.evicted:,} messages evicted to recall storage are folded into this '
               f'recursive summary ({v.trace_counts.get("flush", 0)} flushes).</p><pre id="summary-text">'
               f'{_e(v.summary)}</pre>' if v.summary else '<p class="muted">no summary yet: nothing was evicted</p>')
    queue = _table("queue-table", ("#", "time", "role", "content"),
                   [_message_tr(m, "queue-msg") for m in v.queue], empty="the queue is empty")
    workset = _table("workset-table", ("tier", "#", "time", "tokens", "text"), [
        f'<tr class="ws-page"><td><span class="tag">{_e(w["tier"])}</span></td><td class="id">{_e(w["serial"])}</td>'
        f'<td class="time">{_e(w["time"])}</td><td class="num">{_e(w["tokens"])}</td>'
        f'<td class="text">{_e(w["text"])} {_tags(w.get("tags") or ())}</td></tr>' for w in v.workset],
        empty="nothing paged in")
    recall_note = (f'<p class="muted">showing the newest {len(v.recall):,} of {v.recall_total:,} messages</p>'
                   if len(v.recall) < v.recall_total else "")
    recall = recall_note + _table("recall-table", ("#", "time", "role", "content"),
                                  [_message_tr(m, "recall-msg") for m in v.recall], filter_label="filter messages",
                                  empty="recall storage is empty")
    archival_note = (f'<p class="muted">showing the newest {len(v.archival):,} of {v.archival_total:,} passages</p>'
                     if len(v.archival) < v.archival_total else "")
    archival = archival_note + _table("archival-table", ("#", "time", "tags", "passage"), [
        f'<tr class="passage"><td class="id">{_e(p["serial"])}</td><td class="time">{_e(p["time"])}</td>'
        f'<td>{_tags(p["tags"])}</td><td class="text">{_e(p["text"])}</td></tr>' for p in v.archival],
        filter_label="filter passages or tags", empty="archival storage is empty")
    trace = _table("trace-table", ("#", "time", "event", "what"), [
        f'<tr class="event ev-{_e(t.kind)}"><td class="id">{t.index}</td><td class="time">{_e(t.time)}</td>'
        f'<td><span class="tag">{_e(t.kind)}</span></td><td class="text">{_e(t.text)}</td></tr>' for t in v.trace],
        filter_label="filter events", empty="no trace events")
    counts = ", ".join(f"{n} {k}" for k, n in sorted(v.trace_counts.items()))
    trace = f'<p class="muted">the last {len(v.trace)} of {v.trace_total} events ({_e(counts)})</p>' + trace
    config = _table("config-table", ("setting", "value"), [
        f'<tr><td>{_e(k)}</td><td class="num">{_e(val)}</td></tr>' for k, val in
        [*c.items(), ("budget", cfg.budget), ("reserve (output + tool schemas)", cfg.reserve),
         ("working-set budget", cfg.ws_budget), *sorted(v.store.items())]])

    tabs = [("core", f"Core memory ({len(v.blocks)})", system + blocks), ("summary", "Summary", summary),
            ("queue", f"Queue ({len(v.queue)})", queue), ("workset", f"Working set ({len(v.workset)})", workset),
            ("recall", f"Recall ({v.recall_total:,})", recall),
            ("archival", f"Archival ({v.archival_total:,})", archival),
            ("trace", f"Trace ({v.trace_total:,})", trace), ("config", "Config", config)]
    tab_html = "".join(
        f'<input type="radio" name="tab" id="t-{key}"{" checked" if k == 0 else ""}>'
        f'<label for="t-{key}">{_e(label)}</label>' for k, (key, label, _) in enumerate(tabs))
    panels = "".join(f'<section class="panel" id="p-{key}" aria-label="{_e(label)}">{body}</section>'
                     for key, label, body in tabs)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="vmem inspect">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{_e(title)} <span class="state state-{v.map.state.name}">{v.map.state.name}</span></h1>
<div class="sub">{_e(v.path)}{(" · last message " + _e(v.last_step)) if v.last_step else ""}</div></header>
<main>
<div class="cards">{cards_html}</div>
<figure><figcaption>Context map: the main context (window {c['window']:,} tokens) by region, page by page;
the dashed lines are the warning and flush watermarks of the {cfg.budget:,}-token budget.</figcaption>
{_chart(v)}</figure>
<figure id="history"><figcaption>History: tokens per region of the context at each LLM call of the trace, against
the budget and its watermarks; flushes, memory-pressure alerts, page faults and prefetches marked, and the share of
the prompt the LLM server served from its prompt cache where it said. {_e(describe(v.history))}.</figcaption>
{render_history_svg(v.history)}</figure>
<div class="tabs">{tab_html}{panels}</div>
</main>
<script>{_JS}</script>
</body>
</html>
"""
