"""A worker process for the multi-process PostgreSQL tests: steps one agent, acknowledging each step.

    python tests/pg_worker.py URL NAME STEPS [--create]

Opens (or with --create, creates) the agent at URL and steps it STEPS times with the user
message ``NAME-<i>``, printing ``ack NAME-<i>`` and flushing after each step returned (the
step committed). A step refused because another worker holds the agent (StoreLockedError)
is retried; nothing else is caught.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_helpers import ChattyPolicy  # noqa: E402
from vmem.kernel import Agent, MemoryConfig  # noqa: E402
from vmem.kernel.drivers import ScriptedDriver  # noqa: E402
from vmem.storage import StoreLockedError  # noqa: E402


def main() -> int:
    url, name, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    driver = ScriptedDriver(ChattyPolicy())
    if "--create" in sys.argv:
        agent = Agent.create(url, system="s", blocks={"human": ""}, driver=driver,
                             config=MemoryConfig(window=4096, reserve_output=512))
        agent.close()
        print("created", flush=True)
        return 0
    agent = Agent.open(url, driver=driver)
    try:
        for i in range(steps):
            text = f"{name}-{i}"
            while True:
                try:
                    agent.step(text)
                    break
                except StoreLockedError:
                    time.sleep(0.01)
            agent.memory.check()
            print(f"ack {text}", flush=True)
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
