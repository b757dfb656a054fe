"""kernel: the scheduler of vmem: the agent step loop, memory functions, queue manager, drivers.

    from kernel import Agent, AgentConfig
    from kernel.drivers import OpenAIDriver

    agent = Agent.create("my-agent", system="You are ...", blocks={"human": "", "persona": "..."},
                         driver=OpenAIDriver(model="gpt-4o-mini"))
    print(agent.step("Hi! I'm Ana.").replies)
    agent.close()
"""

from kernel.agent import Agent, AgentConfig, AgentError, CallRecord, ContextWindowError, StepResult
from kernel.functions import FunctionError, MemoryFunction, memory_function
from kernel.trace import read_trace, replay

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "CallRecord",
    "ContextWindowError",
    "StepResult",
    "FunctionError",
    "MemoryFunction",
    "memory_function",
    "read_trace",
    "replay",
]
