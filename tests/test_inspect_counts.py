"""The inspector does not contradict itself (issue 19, item 10): "0 LLM calls" beside "history:
1 LLM calls" for a memory under the caller's own loop; "3 user messages" for a re-imported
agent whose recall storage holds 27."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from vmem.app.inspection import collect, render_text
from vmem.kernel import Memory

T0 = dt.datetime(2025, 3, 1, 12, tzinfo=dt.timezone.utc)


def header(path: Path) -> str:
    with Memory.open(path, read_only=True) as memory:
        text = render_text(collect(memory))
    return "\n".join(text.splitlines()[2:4])


def test_an_own_loop_memory_counts_the_calls_its_history_draws(tmp_path: Path) -> None:
    with Memory.create(tmp_path / "m", system="s", blocks={"human": ""}) as memory:
        memory.append({"role": "user", "content": "Hi, I'm Ana"})
        memory.context()  # what the caller sends its own LLM
        memory.append({"role": "assistant", "content": "Hello Ana"})
    lines = header(tmp_path / "m")
    assert "1 user message · 1 LLM call (by the caller's own loop: vmem prepared its context, " \
           "saw no completion)" in lines, lines
    assert "history: 1 LLM call, peak" in lines


def test_imported_history_counts_in_the_user_messages(tmp_path: Path) -> None:
    with Memory.create(tmp_path / "m", system="s") as memory:
        history = []
        for i in range(24):
            history.append(({"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"},
                             T0 + dt.timedelta(minutes=i)))
        memory.import_history(history, summary="earlier talk")
        for i in range(3):
            memory.append({"role": "user", "content": f"new {i}"}, timestamp=T0 + dt.timedelta(hours=1, minutes=i))
            memory.append({"role": "assistant", "content": f"answer {i}"})
    lines = header(tmp_path / "m")
    assert "15 user messages (12 brought in with imported history, 3 received) · 0 LLM calls" in lines, lines
