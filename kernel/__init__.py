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

Modules, one concept each: ``memory`` (Memory), ``agent`` (Agent and the step loop),
``rules`` (when a turn ends), ``config``, ``context`` (the compiled context's layout),
``queue``, ``tokens``, ``pressure`` (watermarks and flushes), ``summary`` (the recursive
summary), ``paging`` (page faults, prefetch), ``core_memory`` (blocks), ``functions``
(@memory_function), ``host`` (what functions may ask), ``builtins``, ``persistence``,
``trace``, ``replay``, ``invariants``, ``errors``, ``drivers/``.
"""

from vmem.kernel.agent import Agent, StepResult
from vmem.kernel.config import MemoryConfig
from vmem.kernel.context import MEMORY_INSTRUCTIONS
from vmem.kernel.errors import BusyError, ContextWindowError, KernelError, MessageError, ReadOnlyError
from vmem.kernel.functions import CallRecord, FunctionError, MemoryFunction, memory_function
from vmem.kernel.host import Host
from vmem.kernel.memory import Context, Memory, Prepared
from vmem.kernel.replay import replay
from vmem.kernel.rules import StepRules
from vmem.kernel.trace import PrefixCache, prefix_cache, read_trace

__all__ = [
    "Agent",
    "BusyError",
    "CallRecord",
    "Context",
    "ContextWindowError",
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
    "StepResult",
    "StepRules",
    "memory_function",
    "prefix_cache",
    "read_trace",
    "replay",
]
