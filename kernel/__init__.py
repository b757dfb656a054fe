"""vmem.kernel: the scheduler of vmem, over the memory layer (``vmem``) and its C core.

Two levels, use either::

    from vmem.kernel import Agent, Memory, MemoryConfig
    from vmem.kernel.drivers import OpenAIDriver

    # the whole agent: memory + driver + step loop
    agent = Agent.create("my-agent", system="You are ...", blocks={"human": "", "persona": "..."},
                         driver=OpenAIDriver(model="gpt-4o-mini"))
    print(agent.step("Hi! I'm Ana.").replies)
    agent.close()

    # or only the memory, under your own agent loop (see Memory)
    memory = Memory.open("my-agent")
    memory.append({"role": "user", "content": "Where do I live?"})
    messages, tools = memory.context(summarizer=...), memory.tools

Modules, one concept each: ``memory`` (Memory, in layers: ``image``, the parts wired over the
store and transactions; ``conversation``, messages in and the context out; ``tiers``, blocks,
archival storage and searches), ``agent`` (Agent and the step loop),
``rules`` (when a turn ends), ``config``, ``context`` (the compiled context's layout),
``queue``, ``messages`` (chat messages checked against the protocol), ``tokens``,
``budget`` (the core's configuration), ``statistics`` (the memory statistics message),
``pressure`` (watermarks and flushes), ``summary`` (the recursive summary), ``paging``
(page faults, prefetch), ``core_memory`` (blocks), ``shared_blocks`` (blocks several agents
attach: references, pending edits), ``functions`` (@memory_function),
``host`` (what functions may ask), ``builtins``, ``transaction`` (all or nothing),
``persistence`` (the saved image), ``journal`` (the core's operations between
snapshots), ``trace``, ``replay``, ``migrate`` (between a directory and PostgreSQL),
``memories`` (an LRU of open memories), ``invariants``, ``errors``, ``drivers/``; the consolidation daemon:
``consolidation`` (one run: read the new turns, ask a model, apply checked proposals in one
transaction), ``proposals`` (what the model may propose, read leniently), ``daemon`` (runs in a
background thread beside an Agent)::

    daemon = ConsolidationDaemon(agent, OpenAIDriver(model="qwen2.5-1.5b", base_url=...),
                                 DaemonConfig(every=5, idle=30.0))

The public API is what ``__all__`` lists here and in ``vmem.kernel.drivers``, with
``vmem.storage`` and ``vmem`` below (tests/test_docs.py checks that each name resolves and
is documented). The modules are importable, but what they hold beyond that is
implementation and may change.
"""

from vmem.kernel.agent import Agent, StepResult
from vmem.kernel.config import MemoryConfig
from vmem.kernel.consolidation import RunReport, consolidate
from vmem.kernel.daemon import ConsolidationDaemon, DaemonConfig
from vmem.kernel.context import MEMORY_INSTRUCTIONS
from vmem.kernel.errors import BusyError, ContextWindowError, KernelError, MessageError, ReadOnlyError
from vmem.kernel.functions import CallRecord, FunctionError, MemoryFunction, memory_function
from vmem.kernel.host import Host
from vmem.kernel.memory import Context, Memory, Prepared
from vmem.kernel.memories import OpenMemories
from vmem.kernel.migrate import migrate
from vmem.kernel.replay import replay
from vmem.kernel.rules import StepRules
from vmem.kernel.trace import PrefixCache, prefix_cache, read_trace

__all__ = [
    "Agent",
    "BusyError",
    "CallRecord",
    "ConsolidationDaemon",
    "Context",
    "ContextWindowError",
    "DaemonConfig",
    "FunctionError",
    "Host",
    "KernelError",
    "MEMORY_INSTRUCTIONS",
    "Memory",
    "MemoryConfig",
    "MemoryFunction",
    "MessageError",
    "PrefixCache",
    "Prepared",
    "ReadOnlyError",
    "RunReport",
    "StepResult",
    "StepRules",
    "consolidate",
    "memory_function",
    "prefix_cache",
    "read_trace",
    "OpenMemories",
    "migrate",
    "replay",
]
