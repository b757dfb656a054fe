"""The README's own-loop example, run as written, against a local OpenAI-compatible server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from fake_openai_server import FakeOpenAIServer, Reply

from vmem.kernel import Memory

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(marker: str) -> str:
    """The first ```python block after the HTML comment that holds ``marker``."""
    text = README.read_text(encoding="utf-8")
    at = text.index(marker)
    return re.search(r"```python\n(.*?)```", text[at:], re.S).group(1)


def test_the_own_loop_example_runs_with_the_openai_client(tmp_path: Path) -> None:
    code = readme_block("own-loop example")
    with FakeOpenAIServer() as server:
        server.push(
            Reply.tool_calls(("core_memory_append", {"label": "human", "content": "Moved to Lisbon.",
                                                     "request_heartbeat": True})),
            Reply.tool_calls(("send_message", {"message": "Welcome to Lisbon, Ana!"})),
        )
        env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test", "VMEM_MODEL": "fake-model"}
        run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines() == ["Welcome to Lisbon, Ana!", "Moved to Lisbon."]
        first, second = server.chat_requests
        assert {t["function"]["name"] for t in first.tools} >= {"send_message", "core_memory_append"}
        talk = [[m for m in r.messages if m["role"] != "system"] for r in (first, second)]
        assert talk[0][-1] == {"role": "user", "content": "Hi! I'm Ana, I just moved to Lisbon."}
        assert talk[1][-1]["role"] == "tool"  # the call's result went back to the model
    with Memory.open(tmp_path / "ana-memory") as memory:  # what the loop left on disk
        memory.check()
        assert [m["role"] for m in memory.compile()[2:]] == ["user", "assistant", "tool", "assistant", "tool", "system"]
