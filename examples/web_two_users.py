"""An asyncio web service: one vmem agent per user, several users served at once.

    export OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=none VMEM_MODEL=qwen2.5-coder-1.5b
    python examples/web_two_users.py agents/ --port 8000
    curl -s localhost:8000/chat/ana -d "Hi! I'm Ana, I just moved to Lisbon."
    curl -s localhost:8000/chat/ben -d "Hi, Ben here: I live in Porto."
    curl -s localhost:8000/memory/ana

Each user has an agent in ``ROOT/USER`` (created at the first message), opened once and kept
open. ``Agent.astep`` never blocks the event loop on the model, so one user's slow answer does not
hold up another's; one step at a time per agent (a per-user lock: a user's second message waits
for the first answer). Starlette and uvicorn come with vmem (the MCP server's HTTP transport).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from vmem.kernel import Agent, MemoryConfig
from vmem.kernel.drivers import OpenAIDriver

SYSTEM = "You are a helpful assistant who remembers what your user tells you."
USER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Agents:
    """One open agent per user under ``root``, each with its lock."""

    def __init__(self, root: Path, driver: OpenAIDriver, window: int) -> None:
        self.root, self.driver, self.window = root, driver, window
        self._agents: dict[str, Agent] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, user: str) -> asyncio.Lock:
        return self._locks.setdefault(user, asyncio.Lock())

    def agent(self, user: str) -> Agent:
        if user not in self._agents:
            path = self.root / user
            if Agent.exists(path):
                self._agents[user] = Agent.open(path, driver=self.driver)
            else:
                self._agents[user] = Agent.create(
                    path, system=SYSTEM, driver=self.driver, blocks={"human": "", "persona": "I am concise."},
                    config=MemoryConfig(window=self.window, reserve_output=min(1024, self.window // 8)))
        return self._agents[user]

    def close(self) -> None:
        for agent in self._agents.values():
            agent.close()
        self._agents.clear()


def build_app(root: str | os.PathLike[str], *, driver: OpenAIDriver | None = None, window: int = 4096) -> Starlette:
    """The web app: ``POST /chat/USER`` (the body is the message), ``GET /memory/USER``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    agents = Agents(root, driver or OpenAIDriver(os.environ.get("VMEM_MODEL", "gpt-4o-mini")), window)

    async def chat(request: Request) -> JSONResponse:
        user = request.path_params["user"]
        if not USER.match(user):
            return JSONResponse({"error": "a user name is 1-64 of a-z, 0-9, _ and -"}, status_code=400)
        text = (await request.body()).decode("utf-8", "replace").strip()
        if not text:
            return JSONResponse({"error": "send the message as the request body"}, status_code=400)
        async with agents.lock(user):
            agent = agents.agent(user)
            result = await agent.astep(text)
        return JSONResponse({"user": user, "replies": result.replies,
                             "calls": [c.name for c in result.calls if c.name != "send_message"]})

    async def memory(request: Request) -> JSONResponse:
        user = request.path_params["user"]
        if not USER.match(user) or not Agent.exists(root / user):
            return JSONResponse({"error": f"no agent for {user!r}"}, status_code=404)
        async with agents.lock(user):
            m = agents.agent(user).memory
            return JSONResponse({"blocks": {b.label: b.value for b in m.store.blocks.all()},
                                 "messages": m.stats.recall, "passages": m.stats.archival})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:  # the agents are closed when the server stops (everything was saved at each step)
            agents.close()

    return Starlette(routes=[Route("/chat/{user}", chat, methods=["POST"]), Route("/memory/{user}", memory)],
                     lifespan=lifespan)


if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="the folder of the users' agents")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    uvicorn.run(build_app(args.root), host="127.0.0.1", port=args.port)
